#!/usr/bin/env bash
# End-to-end training throughput, side by side in one run: the code before issue 18 (a tree given as BASE_TREE,
# e.g. `git archive 28c6527 | tar -x -C /tmp/base`) against this tree, fp32 / channels_last / bf16, on the smoke
# configuration (ResNet-8) and the same with a ResNet-20 student. Variants run interleaved, round by round, so a
# shared machine's load hits them alike; compare ratios, not absolute numbers.
#
#   BASE_TREE=/tmp/base ROUNDS=1 STEPS=30 bash scripts/experiments/bench_train_speed.sh /tmp/bench_out
#
# ResNet-20 also runs fp32+channels_last and bf16 without it (ALL_VARIANTS=1: both students).
# Prints one line per run (images/s from summary.json = training images / time in training steps, which
# includes data loading but not validation or checkpoints) and a table of medians at the end.
set -euo pipefail
OUT=${1:-/tmp/distill_bench_train}
ROUNDS=${ROUNDS:-1}
STEPS=${STEPS:-30}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python}
SHARED=$(cd "${DISTILL_SHARED_DIR:-$HERE/../shared}" && pwd)  # data and teacher, as in configs/smoke.yaml
mkdir -p "$OUT"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo -n "isa: "
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -x -E 'avx2|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_bf16' | tr '\n' ' '; echo
echo "torch: $($PY -c 'import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())')"
one() {  # name tree student extra-args...
  local name=$1 tree=$2 student=$3; shift 3
  local dir="$OUT/$name-$student-r$round"
  rm -rf "$dir"
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  (cd "$tree" && PYTHONPATH="$tree" $PY -m distill train --config "$HERE/configs/smoke.yaml" --student "$student" \
     --data "$SHARED/data/cifar10-train-jpeg.tar.gz" --teacher-weights "$SHARED/models/resnet56-4bfd9763.th" \
     --max-steps "$STEPS" --out "$dir" --no-progress --seed 0 --device cpu --set plots=false "$@" >"$dir.log" 2>&1) \
     || { echo "$name $student FAILED (see $dir.log)"; return 0; }
  $PY - "$dir/summary.json" "$name" "$student" "$load" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<22} {sys.argv[3]:<15} {s['images_per_s']:8.1f} img/s  {s['s_per_step']:.3f} s/step  "
      f"precision {s['precision']}  load1 {sys.argv[4]}", flush=True)
PYEOF
}
variants() {  # student: the runs of one student, in order
  local student=$1
  if [ -n "${BASE_TREE:-}" ]; then run before-fp32 "$BASE_TREE" "$student" $T; fi
  run after-fp32 "$HERE" "$student" $T
  run after-bf16 "$HERE" "$student" --amp bf16 $T  # channels_last: auto = on for CPU bf16
  if [ "${ALL_VARIANTS:-$([ "$student" = cifar_resnet20 ] && echo 1 || echo 0)}" = 1 ]; then
    run after-fp32-cl "$HERE" "$student" --set channels_last=true $T
    run after-bf16-nocl "$HERE" "$student" --amp bf16 --set channels_last=false $T
  fi
}
# MODE=sequential: one run at a time with torch's threads (the machine's cores); MODE=concurrent: a student's
# variants all at once, 1 thread each, so a shared machine's changing load hits every variant alike.
MODE=${MODE:-sequential}
T=""; [ "$MODE" = concurrent ] && T="--threads 1"
for round in $(seq 1 "$ROUNDS"); do
  for student in cifar_resnet8 cifar_resnet20; do
    if [ "$MODE" = concurrent ]; then
      run() { local name=$1 tree=$2 s=$3; shift 3; (one "$name" "$tree" "$s" "$@") & }
      variants "$student"; wait
    else
      run() { one "$@"; }
      variants "$student"
    fi
  done
done | tee "$OUT/results.txt"
echo "load after: $(cat /proc/loadavg)"
