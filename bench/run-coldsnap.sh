#!/usr/bin/env bash
# Build Kiln (release) and run the coldsnap benchmark: `coldsnap upload --wait` and
# `coldsnap download` against a fresh Kiln per round, next to cat, sha256sum and cp of the
# same file.
#   bench/run-coldsnap.sh                      # 1024 MiB of random data, 3 rounds
#   SIZE_MIB=64 bench/run-coldsnap.sh --rounds 1   # quick validation run
#   bench/run-coldsnap.sh --mix 70,30          # extra arguments go to bench/coldsnap_bench.py
# Output: a Markdown report on stdout and in bench/out/coldsnap-*.md (figures in *.json).
# Needs: cargo, coldsnap 0.12 (scripts/install-coldsnap), Python 3.9+, coreutils; about
# 4 x SIZE_MIB + 512 MiB free in WORKDIR (default /tmp). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB="${SIZE_MIB:-1024}"
WORKDIR="${WORKDIR:-/tmp}"
PY="${PYTHON:-python3}"

cargo build --release
df -h "$WORKDIR" >&2

exec "$PY" bench/coldsnap_bench.py --kiln-bin "$PWD/target/release/kiln" --size-mib "$SIZE_MIB" \
    --workdir "$WORKDIR" --out-dir bench/out "$@"
