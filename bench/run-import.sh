#!/usr/bin/env bash
# Build Kiln (release) and run the snapshot-data benchmark (import vs sha256sum and cp,
# incremental snapshot, ten versions).
#   bench/run-import.sh --rounds 3         # 4 GiB image, page cache cold then warm, 3 rounds
#   SIZE_GIB=0.25 bench/run-import.sh      # quick validation run
#   bench/run-import.sh --cache warm       # extra arguments go to bench/import_bench.py
# Output: a Markdown report on stdout and in bench/out/import-*.md (figures in *.json).
# Needs: cargo, qemu-img (qemu-utils), Python 3.9+ with boto3 (cryptography optional),
# coreutils, util-linux (fincore), procps (top); about 5 x SIZE_GIB + 1 GiB free in
# WORKDIR (default /tmp). Run it on an otherwise idle machine: the report shows how much
# CPU other processes used during each measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_GIB="${SIZE_GIB:-4}"
WORKDIR="${WORKDIR:-/tmp}"
PY="${PYTHON:-python3}"
OUT=bench/out
mkdir -p "$OUT"

cargo build --release
df -h "$WORKDIR" >&2

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
"$PY" bench/import_bench.py --kiln-bin "$PWD/target/release/kiln" --size-gib "$SIZE_GIB" \
    --workdir "$WORKDIR" --json "$OUT/import-$SIZE_GIB-$stamp.json" "$@" \
    | tee "$OUT/import-$SIZE_GIB-$stamp.md"
