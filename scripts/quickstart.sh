#!/usr/bin/env bash
# Fresh machine -> a real (short) distillation on the shared CIFAR-10 JPEGs with the shared ResNet-56 teacher,
# then a folded, verified ONNX export (fp32 + int8) and a benchmark of both against the two-head PyTorch student.
# About 5 minutes on a 2-core CPU after the install (the first run also extracts and checks the 50k JPEGs once).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/distill ] || bash scripts/install.sh
D=.venv/bin/distill
OUT=${OUT:-runs/quickstart}
rm -rf "$OUT"
$D train --config configs/smoke.yaml --out "$OUT/train"
$D eval --checkpoint "$OUT/train/best.pt" --split test
$D export onnx --checkpoint "$OUT/train/best.pt" --fold-heads --quantize int8 -o "$OUT/model.onnx"
$D bench run -m "fp32=$OUT/model.onnx" -m "int8=$OUT/model.int8.onnx" -c "two-head=$OUT/train/best.pt" \
  --backends torch-cpu,ort-cpu --torch-modes eager --scenarios single-stream,offline --batch-sizes 1,32 \
  --split "$OUT/train/best.pt:val" --duration 3 --max-seconds 180 --out "$OUT/bench"
echo "done: run directory $OUT/train, artifacts $OUT/model*.onnx, benchmark $OUT/bench/results.md"
