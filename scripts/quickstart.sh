#!/usr/bin/env bash
# Fresh machine -> a real distillation on the shared CIFAR-10 JPEGs (configs/quickstart.yaml: 10,000 images, 10%
# labeled, the shared ResNet-56 teacher, a ResNet-8 student), a folded + verified ONNX export (fp32 + int8), the
# teacher exported the same way, and one benchmark table of student against teacher on the held-out test split
# (top-1, SingleStream p50, size, speed-up). About 10 minutes on 2 CPU cores after the install.
# What a longer run reaches: scripts/experiments/cifar10_headline.sh (README, Results).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/distill ] || bash scripts/install.sh
D=.venv/bin/distill
OUT=${OUT:-runs/quickstart}
SHARED=${DISTILL_SHARED_DIR:-../shared}
rm -rf "$OUT"
start=$(date +%s)
$D train --config configs/quickstart.yaml --out "$OUT/train" "$@"
$D eval --checkpoint "$OUT/train/best.pt" --split test
$D export onnx --checkpoint "$OUT/train/best.pt" --fold-heads --quantize int8 -o "$OUT/student.onnx"
$D export onnx --teacher cifar_resnet56 --teacher-kind cifar_resnet --teacher-weights "$SHARED/models/resnet56-4bfd9763.th" \
  --calib-dir "$SHARED/data/cifar10-train-jpeg.tar.gz" \
  --max-verify-images 200 -o "$OUT/teacher.onnx"
$D bench run -m "student=$OUT/student.onnx" -m "student-int8=$OUT/student.int8.onnx" -m "teacher=$OUT/teacher.onnx" \
  --reference teacher --backends ort-cpu --scenarios single-stream --batch-sizes 1 \
  --split "$OUT/train/best.pt:test" --duration 5 --max-seconds 180 --out "$OUT/bench"
echo "done in $(( $(date +%s) - start )) s: run directory $OUT/train, artifacts $OUT/*.onnx, benchmark $OUT/bench/results.md"
