#!/usr/bin/env bash
# Short probes of the headline recipe (issue 18, docs/results.md 15): KD, 10% labels, seed 0, the headline
# config's ResNet-20 with every probed knob set explicitly (so the probe does not move when the config does):
# the augmentation (crop_scale), the learning rate and the KD temperature. Two runs at a time, 1 thread each,
# as in the headline; the first runs alone on every core and warms the caches.
#
#   STEPS=600 bash scripts/experiments/headline_recipe_probe.sh /tmp/probe     # ~16 min on 2 cores (bf16 CPU)
#
# Prints each run's test and validation top-1. One seed: differences under about a point are noise
# (the headline's seed spread is 0.3-0.8 points).
set -euo pipefail
OUT=${1:-/tmp/headline_probe}
STEPS=${STEPS:-600}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
# bf16 where the CPU has it natively, fp32 elsewhere (as cifar10_headline.sh; the config's bf16 is refused on AVX2)
AMP=${AMP:-$("$PY" -c "from distill.device import cpu_bf16_support; print('bf16' if cpu_bf16_support() else 'off')")}
mkdir -p "$OUT"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | isa: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
  | grep -x -E 'avx2|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_bf16' | tr '\n' ' ')"
run() {  # name threads crop_lo lr temperature
  local name=$1 threads=$2 crop=$3 lr=$4 t=$5
  [ -f "$OUT/$name/summary.json" ] && return 0
  $PY -m distill train --config configs/cifar10_headline.yaml --steps "$STEPS" --labeled-fraction 0.1 --method kd \
    --seed 0 --amp "$AMP" --no-progress --threads "$threads" --lr "$lr" --set "crop_scale=[$crop,1.0]" --set "temperature=$t" \
    --out "$OUT/$name" > "$OUT/$name.log" 2>&1 || { echo "FAILED: $name (see $OUT/$name.log)"; return 1; }
}
run crop0.5_lr0.002_t2 "$(nproc)" 0.5 0.002 2                                        # the recipe before the probe
run crop1.0_lr0.002_t2 1 1.0 0.002 2 & run crop0.5_lr0.005_t2 1 0.5 0.005 2 & wait
run crop1.0_lr0.005_t2 1 1.0 0.005 2 & run crop0.8_lr0.005_t2 1 0.8 0.005 2 & wait
run crop1.0_lr0.01_t2 1 1.0 0.01 2 & run crop1.0_lr0.02_t2 1 1.0 0.02 2 & wait
run crop1.0_lr0.01_t4 1 1.0 0.01 4 & run crop1.0_lr0.01_t1 1 1.0 0.01 1 & wait
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
print(f"{'run':<22} {'test top-1':>10} {'val top-1':>10}")
for p in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    s = json.load(open(p))
    print(f"{p.parent.name:<22} {100 * s['test']['acc_kd']:>10.2f} {100 * s['val']['acc_kd']:>10.2f}")
PYEOF
