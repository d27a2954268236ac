#!/usr/bin/env bash
# A distillation epoch that runs the teacher on every batch vs one that reads the memory-mapped teacher store
# (distill cache-teacher), same student work in both (DHO loss, forward + backward + AdamW step). Two teachers:
# the shared CIFAR ResNet-56 (a cheap teacher: the student's own cost dominates) and an open_clip ViT-B/32-sized
# image tower with RANDOM weights (latency only: the CLIP-teacher case the store is for).
#
#   scripts/bench_teacher_cache.sh                 # 128 CIFAR-10 JPEGs, ~5 min on 2 shared cores
#   IMAGES=512 THREADS=8 scripts/bench_teacher_cache.sh
#
# Output: $OUT/<teacher>.json (epoch times, images/s, speedup, cache-build throughput, load average).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
SHARED="${DISTILL_SHARED_DIR:-$REPO/../shared}"
OUT="${OUT:-runs/bench-teacher-cache}"
IMAGES="${IMAGES:-128}"
BATCH="${BATCH:-64}"
THREADS="${THREADS:-1}"      # 1 on a shared 2-core box: oversubscribed OpenMP threads are several times slower
STUDENT="${STUDENT:-cifar_resnet20}"
export OMP_NUM_THREADS="$THREADS"
DATA="$OUT/data/cifar_subset"
mkdir -p "$OUT"
if [ ! -d "$DATA/truck" ]; then
  "$PY" -m distill.data.subset "$SHARED/data/cifar10-train-jpeg.tar.gz" "$DATA" "$(( (IMAGES + 9) / 10 ))"
fi
run() {  # name, extra args
  local name="$1"; shift
  "$PY" -m distill.scale.bench_cache --data "$DATA" --student "$STUDENT" --images "$IMAGES" --batch-size "$BATCH" \
    --threads "$THREADS" --out "$OUT/work-$name" --json "$OUT/$name.json" "$@" > "$OUT/$name.log"
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{sys.argv[2]:>16}: teacher epoch {r['epoch_with_teacher']['images_per_s']:7.1f} img/s, cached epoch {r['epoch_cached']['images_per_s']:7.1f} img/s, speedup {r['speedup']:.1f}x; store built at {r['cache_build']['images_per_s']:.1f} img/s (load avg {r['hardware']['load_average_1m']:.1f})\")" "$OUT/$name.json" "$name"
}
run resnet56 --teacher cifar_resnet56 --teacher-weights "$SHARED/models/resnet56-4bfd9763.th"
run vit-b-32-random --teacher ViT-B-32
