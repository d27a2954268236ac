#!/usr/bin/env bash
# GPU numbers of issue 8, each from a real command of the toolchain:
#   1. teacher caching throughput: `distill cache-teacher` with an open_clip ViT-L/14 image tower, RANDOM weights
#      (latency only), bf16 autocast;
#   2. training throughput (images/s) of `distill train` with a ViT-B/16 and a ResNet-18 student, bf16, teacher
#      logits memory-mapped from the store of step 1 (the teacher never runs during training);
#   3. the bare forward/backward/AdamW loop of the same model and batch (python -m distill.scale.bench_train) and the
#      ratio train / bare (target >= 0.70).
#
#   scripts/bench_gpu.sh                 # on a CUDA machine (NVIDIA H100/H200: a few minutes)
#   TINY=1 scripts/bench_gpu.sh          # CPU stand-ins (tiny CLIP, vit_tiny, 32 px, 4 steps): checks the commands
#   NPROC=8 scripts/bench_gpu.sh         # all GPUs of the node: torchrun for cache-teacher and train (global batch)
#
# Output: $OUT/results.json and a table on stdout. Training throughput is the steady state: the mean images/s of
# the metrics.jsonl windows after the first (warm-up, cudnn autotuning, worker start-up excluded).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
SHARED="${DISTILL_SHARED_DIR:-$REPO/../shared}"
OUT="${OUT:-runs/bench-gpu}"
NPROC="${NPROC:-1}"
mkdir -p "$OUT"
export DISTILL_CACHE_DIR="$OUT/cache"

if [ "${TINY:-0}" = 1 ]; then
  DEVICE=cpu; AMP=off; PER_CLASS=4; STEPS=4; LOG_EVERY=1; WORKERS=0; TEACHER_BATCH=8
  TEACHER="$OUT/tiny-clip.json"
  cat > "$TEACHER" <<'JSON'
{"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
JSON
  STUDENTS=("vit_tiny_patch16_224:224:2" "resnet18:32:4")          # arch:image size:images per half-batch
  export OMP_NUM_THREADS=1
else
  DEVICE=cuda; AMP=bf16; PER_CLASS=300; STEPS=60; LOG_EVERY=10; WORKERS="${WORKERS:-12}"; TEACHER_BATCH=512
  TEACHER=ViT-L-14
  STUDENTS=("vit_base_patch16_224:224:${VIT_BATCH:-128}" "resnet18:224:${RESNET_BATCH:-256}")
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
fi
launch() {  # a distill sub-command on NPROC processes
  if [ "$NPROC" -gt 1 ]; then "$PY" -m torch.distributed.run --standalone --nproc-per-node="$NPROC" -m distill "$@"
  else "$PY" -m distill "$@"; fi
}

# 0. images: PER_CLASS real CIFAR-10 JPEGs per class ------------------------------------------------------------
DATA="$OUT/data/cifar_${PER_CLASS}"
if [ ! -d "$DATA/truck" ]; then
  "$PY" -m distill.data.subset "$SHARED/data/cifar10-train-jpeg.tar.gz" "$DATA" "$PER_CLASS"
fi

# 1. teacher caching throughput ---------------------------------------------------------------------------------
rm -rf "$OUT/store"
launch cache-teacher --data "$DATA" --teacher "$TEACHER" --templates single --device "$DEVICE" \
  --amp "$([ "$AMP" = bf16 ] && echo bf16 || echo off)" --batch-size "$TEACHER_BATCH" --num-workers "$WORKERS" \
  --out "$OUT/store" --no-progress --json > "$OUT/cache_teacher.json"

# 2 + 3. training throughput vs the bare loop -----------------------------------------------------------------
for entry in "${STUDENTS[@]}"; do
  IFS=: read -r arch size half <<< "$entry"
  run="$OUT/train-$arch"
  rm -rf "$run"
  launch train --data "$DATA" --teacher-store "$OUT/store" --student "$arch" \
    --image-size "$size" --batch-size "$half" --steps "$STEPS" --amp "$AMP" --device "$DEVICE" \
    --num-workers "$WORKERS" --labeled-fraction 0.2 --set log_every="$LOG_EVERY" --set plots=false \
    --set eval_batch_size=256 --out "$run" --no-progress > "$run.log" 2>&1
  "$PY" -m distill.scale.bench_train --arch "$arch" --image-size "$size" --batch-size "$((half / NPROC))" \
    --amp "$AMP" --device "$DEVICE" --steps "$STEPS" --warmup "$(( STEPS / 4 + 1 ))" --json "$OUT/bare-$arch.json" > /dev/null
done

"$PY" - "$OUT" "$NPROC" "${STUDENTS[@]}" <<'PYEOF'
import json, sys
from pathlib import Path
out, nproc, students = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
res = {"cache_teacher": None, "train": []}
reports = [json.loads(x) for x in (out / "cache_teacher.json").read_text().replace("}\n{", "}\x00{").split("\x00")]
res["cache_teacher"] = {"images": sum(r["images_computed"] for r in reports),
                        "teacher_images_per_s": sum(r["images_per_s"] or 0 for r in reports)}
for entry in students:
    arch, size, half = entry.split(":")
    recs = [json.loads(l) for l in (out / f"train-{arch}" / "metrics.jsonl").read_text().splitlines()]
    windows = [r["images_per_s"] for r in recs if r["event"] == "train"][1:]
    summary = json.loads((out / f"train-{arch}" / "summary.json").read_text())
    bare = json.loads((out / f"bare-{arch}.json").read_text())
    steady = sum(windows) / len(windows)
    bare_ips = bare["images_per_s"] * nproc  # per-GPU bare loop x processes (same per-GPU batch)
    res["train"].append({"arch": arch, "image_size": int(size), "global_batch": 2 * int(half), "processes": nproc,
                         "train_images_per_s": steady, "bare_images_per_s": bare_ips, "ratio": steady / bare_ips,
                         "precision": summary["precision"], "device": summary["hardware"].get("gpu", "cpu")})
(out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
ct = res["cache_teacher"]
print(f"teacher caching: {ct['teacher_images_per_s']:.1f} img/s ({ct['images']} images)")
for r in res["train"]:
    print(f"{r['arch']:>22} {r['image_size']}px batch {r['global_batch']} {r['precision']}: train "
          f"{r['train_images_per_s']:.1f} img/s, bare loop {r['bare_images_per_s']:.1f} img/s, ratio {r['ratio']:.2f}")
PYEOF
