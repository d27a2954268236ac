#!/usr/bin/env bash
# Does CPU bf16 autocast train as well as fp32? The smoke data (1,000 CIFAR-10 JPEGs, 4 shots) with the ResNet-56
# teacher and a ResNet-8 DHO student, STEPS steps, seeds 0 and 1 in each precision (4 runs, THREADS threads each,
# run in parallel). Prints val/test accuracy of the selected blend per run.
#
#   STEPS=100 bash scripts/experiments/bf16_vs_fp32.sh /tmp/bf16_vs_fp32
set -euo pipefail
OUT=${1:-/tmp/distill_bf16_vs_fp32}
STEPS=${STEPS:-100}
THREADS=${THREADS:-1}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python}
mkdir -p "$OUT"
cd "$HERE"
pids=()
for amp in off bf16; do
  for seed in 0 1; do
    rm -rf "$OUT/$amp-s$seed"
    PYTHONPATH="$HERE" $PY -m distill train --config configs/smoke.yaml --steps "$STEPS" --eval-every $((STEPS / 2)) \
      --grad-conflict-every 0 --amp "$amp" --seed "$seed" --threads "$THREADS" --device cpu --no-progress \
      --set plots=false --out "$OUT/$amp-s$seed" >"$OUT/$amp-s$seed.log" 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p"; done
$PY - "$OUT" <<'PYEOF'
import json, sys, pathlib
for run in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    s = json.load(open(run))
    print(f"{run.parent.name:<10} precision {s['precision']:<5} val blend_prob {100*s['val']['acc_blend_prob']:.1f}  "
          f"test blend_prob {100*s['test']['acc_blend_prob']:.1f}  test ce {100*s['test']['acc_ce']:.1f}  "
          f"test kd {100*s['test']['acc_kd']:.1f}  {s['images_per_s']:.0f} img/s")
PYEOF
