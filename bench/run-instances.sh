#!/usr/bin/env bash
# Build Kiln (release) and run the instances benchmark: RunInstances -> running -> boot marker
# (against a bare QEMU boot of the same kernel + ramdisk), kiln serve RSS per running
# instance, CreateImage after 10 MiB vs 1 GiB written, CreateVolume from 1 GiB / 64 GiB
# snapshots, ten concurrent RunInstances.
#   bench/run-instances.sh                                  # the full run (about 6 min)
#   bench/run-instances.sh --launches 2 --concurrent 3      # quick validation run
#   bench/run-instances.sh --sections launch,memory         # extra arguments go to
#                                                           # bench/instances_bench.py
# Output: a Markdown report on stdout and in bench/out/instances-*.md (figures in *.json).
# Needs: cargo, qemu-system-x86_64 (TCG is used; no KVM needed), Python 3.9+ with boto3, the
# Quick Start packages (`kiln quickstart` fetches or reuses them; its build is cached in
# ~/.cache/kiln/quickstart, which the reference boot uses), about 3 GiB free in WORKDIR
# (default /tmp; keep it short: unix socket paths under it must stay below 108 bytes).
# TCG guests are CPU-bound: run it on an otherwise idle machine; the report records the
# load average at the start, before each section and at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKDIR="${WORKDIR:-/tmp}"
PY="${PYTHON:-python3}"
OUT=bench/out
mkdir -p "$OUT"

nice cargo build --release
df -h "$WORKDIR" >&2

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
"$PY" bench/instances_bench.py --kiln-bin "$PWD/target/release/kiln" --workdir "$WORKDIR" \
    --json "$OUT/instances-$stamp.json" "$@" \
    | tee "$OUT/instances-$stamp.md"
