#!/usr/bin/env bash
# Set-up time of `distill train` before step 1, with a cold teacher cache: one run alone, then two runs started
# together on the same data and cache directory (they share the teacher's outputs through the cache's file lock:
# one computes, the other waits and reuses). Same data, teacher, student and budget in both cases.
#
#   scripts/bench_side_by_side.sh                       # 500 CIFAR-10 JPEGs per class (5,000), ResNet-56 teacher
#   PER_CLASS=200 scripts/bench_side_by_side.sh
#
# Output: $OUT/{alone,a,b}/summary.json and one line per run (set-up s, of it waiting, teacher rows computed/reused),
# plus the load average before and after.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
SHARED="${DISTILL_SHARED_DIR:-$REPO/../shared}"
OUT="${OUT:-runs/bench-side-by-side}"
PER_CLASS="${PER_CLASS:-500}"
DATA="${DATA:-$OUT/data/cifar_subset}"
rm -rf "$OUT/alone" "$OUT/a" "$OUT/b" "$OUT/cache-alone" "$OUT/cache-pair"   # cold teacher cache every time
mkdir -p "$OUT"
if [ ! -d "$DATA/truck" ]; then
  "$PY" -m distill.data.subset "$SHARED/data/cifar10-train-jpeg.tar.gz" "$DATA" "$PER_CLASS"
fi
train() {  # out dir, cache dir
  "$PY" -m distill train --data "$DATA" --teacher cifar_resnet56 --teacher-weights "$SHARED/models/resnet56-4bfd9763.th" \
    --student cifar_resnet8 --shots 10 --steps 5 --batch-size 32 --no-progress --set plots=false \
    --cache-dir "$2" --out "$1" > "$1.log" 2>&1
}
report() {  # name, run dir
  "$PY" -c "import json,sys; s=json.load(open(sys.argv[1]+'/summary.json')); t=s['teacher_cache']; print(f\"{sys.argv[2]:>6}: set-up {s['setup_time_s']:6.1f} s (waiting {t.get('waited_s', 0):5.1f} s), teacher rows computed {t['computed']}, reused {t['hits']}; wall {s['wall_time_s']:.1f} s\")" "$2" "$1"
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
train "$OUT/alone" "$OUT/cache-alone"
report alone "$OUT/alone"
echo "load average between: $(cut -d' ' -f1-3 /proc/loadavg)"
train "$OUT/a" "$OUT/cache-pair" & pa=$!
train "$OUT/b" "$OUT/cache-pair" & pb=$!
wait "$pa" "$pb"
report a "$OUT/a"
report b "$OUT/b"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
