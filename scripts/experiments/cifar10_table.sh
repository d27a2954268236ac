#!/usr/bin/env bash
# The real CIFAR-10 result of issue 3 (docs/results.md): every method at the same budget, several seeds,
# 1% and 10% labels, teacher = the shared ResNet-56 (logits cached once), on a CPU.
#   bash scripts/experiments/cifar10_table.sh            # all runs, 2 at a time (1 torch thread each)
#   FRACTIONS="0.01" SEEDS="0 1" bash scripts/experiments/cifar10_table.sh
#   DATA=/path/to/shifted OUT=runs/cifar10_invert bash scripts/experiments/cifar10_table.sh   # another image root
# Then: distill report runs/cifar10 --plot docs/figures/grad_conflict.png
set -euo pipefail
cd "$(dirname "$0")/../.."
DISTILL=${DISTILL:-.venv/bin/distill}
STUDENT=${STUDENT:-cifar_resnet8}
STEPS=${STEPS:-400}
FRACTIONS=${FRACTIONS:-"0.01 0.1"}
SEEDS=${SEEDS:-"0 1"}
METHODS=${METHODS:-"dho ce+kd kd ce"}
PARALLEL=${PARALLEL:-2}
OUT=${OUT:-runs/cifar10}
DATA=${DATA:-}   # empty: the config's data.root (the shared CIFAR-10 archive)
data_arg=""; [ -n "$DATA" ] && data_arg="--data $DATA"
mkdir -p "$OUT"
jobs=()
for frac in $FRACTIONS; do
  for seed in $SEEDS; do
    for method in $METHODS; do
      name="${STUDENT}_${STEPS}s_l${frac}_${method/+/-}_s${seed}"
      [ -f "$OUT/$name/summary.json" ] && grep -q '"completed": true' "$OUT/$name/summary.json" && continue
      resume=""; [ -f "$OUT/$name/last.pt" ] && resume="--resume"
      jobs+=("$DISTILL train --config configs/cifar10_dho.yaml $data_arg --student $STUDENT --steps $STEPS --labeled-fraction $frac --method $method --seed $seed --threads 1 --eval-every 200 --grad-conflict-every 25 --no-progress --out $OUT/$name $resume")
    done
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P "$PARALLEL" -I{} bash -c '{} > /dev/null 2>"$(echo "{}" | sed -E "s/.*--out ([^ ]+).*/\1/").log" || echo "FAILED: {}"'
"$DISTILL" report "$OUT" --plot "$OUT/grad_conflict.png" --out "$OUT/table.md"
