#!/usr/bin/env bash
# The headline result in one command (issue 18): DHO vs KD vs CE+KD, 10% and 1% labels, 2 seeds each (paired:
# same splits, same budget, same seeds), `distill report`, then the best student (by validation accuracy at
# the first label fraction) exported (--fold-heads for DHO) and benchmarked against the ResNet-56 teacher in one
# table (SingleStream latency, size, accuracy on the student's held-out test split).
#   bash scripts/experiments/cifar10_headline.sh                     # 48 min on 2 quiet cores of an AVX-512 BF16 CPU, cold cache (docs/results.md 15)
#   STEPS=150 SEEDS=0 FRACTIONS=0.1 EXTRA="--set data.max_images=5000" OUT=/tmp/headline bash scripts/experiments/cifar10_headline.sh   # reduced
# Resumable: finished runs are skipped, interrupted ones continue from last.pt.
# The teacher's split accuracies are on images it was trained on (optimistic); on unseen CIFAR-10 test JPEGs
# it scores about 83% (shared/models/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-configs/cifar10_headline.yaml}
STEPS=${STEPS:-1500}
FRACTIONS=${FRACTIONS:-"0.1 0.01"}
SEEDS=${SEEDS:-"0 1"}
METHODS=${METHODS:-"dho kd ce+kd"}
PARALLEL=${PARALLEL:-2}
OUT=${OUT:-runs/headline}
SHARED=${DISTILL_SHARED_DIR:-../shared}
EXTRA=${EXTRA:-}   # more train options for every run, e.g. "--set data.max_images=5000" (a reduced run)
# bf16 autocast where the CPU has native bf16 (AMX, AVX-512 BF16, Arm BF16), fp32 elsewhere: the config's `amp: bf16`
# is refused on an AVX2-only CPU, and the headline must run there too (docs/results.md 16: how long it takes)
AMP=${AMP:-$("$PY" -c "from distill.device import cpu_bf16_support; print('bf16' if cpu_bf16_support() else 'off')")}
mkdir -p "$OUT"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | isa: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
  | grep -x -E 'avx2|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_bf16' | tr '\n' ' ') | amp: $AMP | load: $(cat /proc/loadavg)"
start=$(date +%s)

# 1. training runs, PARALLEL at a time (the teacher's logits are computed by the first and cached for the rest)
jobs=()
for frac in $FRACTIONS; do
  for seed in $SEEDS; do
    for method in $METHODS; do
      name="l${frac}_${method/+/-}_s${seed}"
      [ -f "$OUT/$name/summary.json" ] && grep -q '"completed": true' "$OUT/$name/summary.json" && continue
      resume=""; [ -f "$OUT/$name/last.pt" ] && resume="--resume"
      jobs+=("$PY -m distill train --config $CONFIG --steps $STEPS --labeled-fraction $frac --method $method --seed $seed --amp $AMP --no-progress $EXTRA --out $OUT/$name $resume")
    done
  done
done
if [ ${#jobs[@]} -gt 0 ]; then  # warm the teacher cache with the first run alone (on every core), then the rest in parallel
  first="${jobs[0]} --threads $(nproc)"; bash -c "$first" >/dev/null 2>"$(echo "$first" | sed -E 's/.*--out ([^ ]+).*/\1/').log" || echo "FAILED: $first"
  printf '%s\n' "${jobs[@]:1}" | xargs -r -P "$PARALLEL" -I{} bash -c '{} > /dev/null 2>"$(echo "{}" | sed -E "s/.*--out ([^ ]+).*/\1/").log" || echo "FAILED: {}"'
fi
echo "training: $(( $(date +%s) - start )) s"
"$PY" -m distill report "$OUT" --out "$OUT/table.md"

# 2. the best student at the first fraction, by its validation accuracy (the test split is never selected on)
frac=${FRACTIONS%% *}
BEST=$("$PY" - "$OUT" "$frac" <<'PYEOF'
import json, pathlib, sys
runs = [p for p in pathlib.Path(sys.argv[1]).glob(f"l{sys.argv[2]}_*/summary.json")]
score = lambda p: max(v for v in json.load(open(p))["val"].values() if v is not None)
print(max(runs, key=score).parent / "best.pt")
PYEOF
)
echo "best student: $BEST"
DATA=$(ls -d "${DISTILL_CACHE_DIR:-$HOME/.cache/distill}"/extracted/cifar10-train-jpeg-*/train | head -1)
mkdir -p "$OUT/models"
fold=""; grep -q '"method": "dho"' "$(dirname "$BEST")/summary.json" && fold="--fold-heads"  # one head: nothing to fold
"$PY" -m export onnx -c "$BEST" -o "$OUT/models/student.onnx" $fold --calib-dir "$DATA" --max-verify-images 500
"$PY" -m export onnx --teacher cifar_resnet56 --teacher-kind cifar_resnet \
  --teacher-weights "$SHARED/models/resnet56-4bfd9763.th" -o "$OUT/models/resnet56.onnx" --calib-dir "$DATA" \
  --max-verify-images 200

# 3. student vs teacher in one table: SingleStream p50, size, accuracy on the student's test split
"$PY" -m edge_bench run -m "student-resnet20=$OUT/models/student.onnx" -m "teacher-resnet56=$OUT/models/resnet56.onnx" \
  --reference teacher-resnet56 --backends ort-cpu --scenarios single-stream --batch-sizes 1 --split "$BEST:test" \
  --duration 10 --max-seconds 300 \
  --out "$OUT/bench"
echo "total: $(( $(date +%s) - start )) s; load: $(cat /proc/loadavg)"
