#!/usr/bin/env bash
# The CPU table for docs/results.md: teachers (shared ResNet-56; open_clip ViT-B/32-sized image tower with RANDOM
# weights, latency only) against the DHO student (two-head PyTorch eager/compile, folded ONNX fp32/fp16/int8),
# SingleStream + Offline, accuracy on a labeled CIFAR-10 split. Every bench run is bounded (--max-seconds).
#
#   scripts/bench_cpu.sh                                   # placeholder student (see below), ~10 min on 2 cores
#   STUDENT_CKPT=runs/dho/best.pt scripts/bench_cpu.sh     # the real trained student; accuracy on its own val split
#
# Without STUDENT_CKPT a placeholder "student" is built with distill.models.create_student: a cifar_resnet20 DHO
# student whose backbone AND both heads are the shared ResNet-20 weights (a supervised model, NOT a distilled
# one): it validates the pipeline and gives real fp32/fp16/int8 accuracy deltas, nothing more.
# Accuracy labels: BENCH_DATA (ImageFolder) if set, else the student checkpoint's recorded val split if it has
# one, else 100 images/class extracted from the CIFAR-10 *training* tar, on which the shared teachers were
# trained (optimistic for them; say so next to the numbers).
# Output: $OUT/table/results.{json,csv,md,png} (merged), plus overhead_*.json. Numbers taken while other
# engineers run tests on the same 2 cores are noisy: the load average is recorded in every report.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
SHARED="${DISTILL_SHARED_DIR:-$REPO/../shared}"
OUT="${OUT:-runs/bench-cpu}"
DURATION="${DURATION:-5}"
MAX_SECONDS="${MAX_SECONDS:-480}"
mkdir -p "$OUT/models" "$OUT/data"
bench() { "$PY" -m edge_bench "$@"; }
export_() { "$PY" -m export "$@"; }

# 1. labeled images (CIFAR-10 JPEGs, 100 per class) ---------------------------------------------------------
DATA="${BENCH_DATA:-$OUT/data/cifar_train_subset}"
if [ -z "${BENCH_DATA:-}" ] && [ ! -d "$DATA/truck" ]; then
  "$PY" -m distill.data.subset "$SHARED/data/cifar10-train-jpeg.tar.gz" "$DATA" 100
fi

# 2. the student checkpoint (real, or the placeholder) ------------------------------------------------------
CKPT="${STUDENT_CKPT:-$OUT/models/placeholder_student.pt}"
if [ -z "${STUDENT_CKPT:-}" ] && [ ! -f "$CKPT" ]; then
  "$PY" - "$SHARED/models/resnet20-12fca82f.th" "$DATA" "$CKPT" <<'PYEOF'
import sys, torch
from pathlib import Path
from distill.checkpoint import save_checkpoint
from distill.models import create_student
from distill.preprocess import PreprocessSpec
weights, data, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
student = create_student("cifar_resnet20", num_classes=10, method="dho", weights=weights)
state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
with torch.no_grad():
    for head in student.heads.values():  # placeholder: the supervised ResNet-20 classifier in both heads
        head.weight.copy_(state["module.linear.weight"]); head.bias.copy_(state["module.linear.bias"])
val = [[str(p.relative_to(data)), names.index(p.parent.name)] for p in sorted(data.rglob("*.jpg"))]
save_checkpoint(out, {"student": student.spec.model_dump(), "model": student.state_dict(), "class_names": names,
    "preprocess": PreprocessSpec().model_dump(), "method": "dho",
    "blend": {"prob": {"alpha": 0.5, "beta": 1.0, "val_acc": None}, "logit": {"alpha": 0.5, "beta": 1.0, "val_acc": None}},
    "teacher": {"kind": "placeholder", "name": "resnet20 weights in both heads", "identity": weights},
    "data": {"root": str(data.resolve()), "val": val, "test": []}, "config": {}, "epoch": 0, "step": 0})
print(f"placeholder student (NOT distilled: ResNet-20 weights in both heads) -> {out}")
PYEOF
fi
# Accuracy: explicit BENCH_DATA > the checkpoint's validation split > the extracted training subset.
if [ -n "${BENCH_DATA:-}" ]; then ACC=(--data "$DATA");
elif [ -n "${STUDENT_CKPT:-}" ] && "$PY" -c "
import sys; from edge_bench.accuracy import checkpoint_split; checkpoint_split(sys.argv[1] + ':val')" "$CKPT" 2>/dev/null; then
  ACC=(--split "$CKPT:val");
else ACC=(--data "$DATA"); fi
echo "accuracy labels: ${ACC[*]}"

# 3. artifacts ------------------------------------------------------------------------------------------------
S="$OUT/models/student.onnx"
[ -f "$S" ] || export_ onnx -c "$CKPT" -o "$S" --fold-heads --calib-dir "$DATA" -q fp16,int8 --max-verify-images 1000
R56="$OUT/models/resnet56.onnx"
if [ ! -f "$R56" ]; then
  export_ onnx --teacher cifar_resnet56 --teacher-kind cifar_resnet --teacher-weights "$SHARED/models/resnet56-4bfd9763.th" \
      -o "$R56" --calib-dir "$DATA" --max-verify-images 200
fi
VIT="$OUT/models/vitb32_random.onnx"
if [ ! -f "$VIT" ]; then
  # random weights: latency only
  export_ onnx --teacher ViT-B-32 --teacher-kind open_clip --class-names "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck" \
      -o "$VIT" --calib-dir "$DATA" --templates single --max-verify-images 64
fi

# 4. benchmarks (each bounded) ---------------------------------------------------------------------------------
bench run -m "student-onnx-fp32=$S" -m "student-onnx-fp16=${S%.onnx}.fp16.onnx" -m "student-onnx-int8=${S%.onnx}.int8.onnx" \
    -m "teacher-resnet56=$R56" -c "student-2head=$CKPT" --backends torch-cpu,ort-cpu --torch-modes eager,compile \
    --scenarios single-stream,offline --batch-sizes 1,8,32,128 "${ACC[@]}" --duration "$DURATION" \
    --max-seconds "$MAX_SECONDS" --out "$OUT/cifar"
# ViT-B/32-sized tower, random weights: latency only (no --data: its accuracy would be meaningless)
bench run -m "teacher-vitb32-random=$VIT" --backends ort-cpu --scenarios single-stream,offline --batch-sizes 1,8,32 \
    --images "$DATA" --max-images 32 --warmup 3 --duration $((DURATION * 2)) --max-seconds 240 --out "$OUT/vit"
bench merge "$OUT/cifar/results.json" "$OUT/vit/results.json" --out "$OUT/table"

# 5. harness overhead and repeatability ---------------------------------------------------------------------
bench overhead -m "$S" --images "$DATA/cat" --iterations 2000 --rounds 5 --repeats 3 --duration 3 --out "$OUT/overhead_student_fp32.json"
bench overhead -m "$R56" --images "$DATA/cat" --iterations 300 --rounds 5 --repeats 3 --duration 3 --out "$OUT/overhead_resnet56.json"
echo "table: $OUT/table/results.md"
