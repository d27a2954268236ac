#!/usr/bin/env bash
# The open-vocabulary table of docs/results.md (issue 7): L_cls alone vs L_cls + L_mse + L_im-cst + L_vlprox,
# 2 seeds each, ResNet-56 as a classifier-as-VLM teacher, 5 seen / 5 unseen CIFAR-10 classes.
# Usage: scripts/experiments/vl_cifar10.sh [RUNS_DIR]   (from the project root; ~10 min a run on a 2-core CPU)
# PARALLEL=2 runs two trainings at a time (each on one torch thread, threads: 1 in the config).
# TRAIN selects the command (default: distill train; e.g. TRAIN=".venv/bin/distill train").
set -euo pipefail
RUNS=${1:-runs/vl}
PARALLEL=${PARALLEL:-1}
TRAIN=${TRAIN:-distill train}
CFG=configs/cifar10_vl.yaml
CLS_ONLY=(--set vl.w_mse=0 --set vl.w_imcst=0 --set vl.w_vlprox=0)

jobs=()
for seed in 0 1; do
  jobs+=("$TRAIN --config $CFG --seed $seed ${CLS_ONLY[*]} --no-progress --out $RUNS/cls_s$seed")
  jobs+=("$TRAIN --config $CFG --seed $seed --no-progress --out $RUNS/full_s$seed")
done
for cmd in "${jobs[@]}"; do
  out=${cmd##*--out }
  if [[ -f $out/summary.json ]]; then echo "skip $out (done)"; continue; fi
  rm -rf "$out"; mkdir -p "$(dirname "$out")"
  echo "+ $cmd"
  bash -c "$cmd > $out.log 2>&1" &
  while (( $(jobs -rp | wc -l) >= PARALLEL )); do sleep 5; done
done
wait
${PYTHON:-python} -m distill.vl.report "$RUNS"/cls_s0 "$RUNS"/cls_s1 "$RUNS"/full_s0 "$RUNS"/full_s1
