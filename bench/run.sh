#!/usr/bin/env bash
# Build Kiln (release) and run the DescribeImages benchmark in both modes.
#   bench/run.sh                 # 10,000 images vs moto, then 100,000 images Kiln-only
#   IMAGES=500 SCALE=0 bench/run.sh   # quick validation run, no scale run
# Output: Markdown reports on stdout and in bench/out/*.md (raw figures in bench/out/*.json).
# Needs: cargo, Python 3.11 with boto3/botocore and 'moto[server]' 5.x
#   (pip install boto3 'moto[server]').
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES="${IMAGES:-10000}"
SCALE="${SCALE:-100000}"
PY="${PYTHON:-python3}"
OUT=bench/out
mkdir -p "$OUT"

cargo build --release
KILN_BIN="$PWD/target/release/kiln"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
echo "== Kiln vs moto, $IMAGES images ==" >&2
"$PY" bench/describe_images.py --kiln-bin "$KILN_BIN" --images "$IMAGES" \
    --json "$OUT/compare-$IMAGES-$stamp.json" | tee "$OUT/compare-$IMAGES-$stamp.md"

if [ "$SCALE" -gt 0 ]; then
    echo "== Kiln only, $SCALE images ==" >&2
    "$PY" bench/describe_images.py --kiln-bin "$KILN_BIN" --scale "$SCALE" \
        --json "$OUT/scale-$SCALE-$stamp.json" | tee "$OUT/scale-$SCALE-$stamp.md"
fi
