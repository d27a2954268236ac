"""What resampling only the crop's box saves (docs/results.md 18): per real photo, decoded as the server decodes it
(DCT-scaled), the time of :func:`distill.preprocess.resize_and_crop` against the whole image resized and then
cropped (the rule before), interleaved, best of ``repeats``; and how far their pixels differ.

    python scripts/experiments/resize_box_speed.py <photo dir> [size=32] [repeats=20]
"""
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from distill.preprocess import PreprocessSpec, decode_side, load_image, resize_and_crop  # noqa: E402

root = Path(sys.argv[1])
size = int(sys.argv[2]) if len(sys.argv) > 2 else 32
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 20
spec = PreprocessSpec(size=size, resize_size=size)


def whole_then_crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    scale = spec.resize_size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return img.resize((nw, nh), Image.Resampling.BILINEAR).crop((left, top, left + size, top + size))


def best(fn, img: Image.Image) -> float:
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(img)
        t.append(time.perf_counter() - t0)
    return min(t)


files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
new_s, old_s, diffs = [], [], []
for f in files:
    img = load_image(f, min_side=decode_side(spec))
    old_s.append(best(whole_then_crop, img))
    new_s.append(best(lambda im: resize_and_crop(im, spec), img))
    diffs.append(np.abs(np.asarray(resize_and_crop(img, spec), np.int16) - np.asarray(whole_then_crop(img), np.int16)))
d = np.stack(diffs)
print(f"{len(files)} photos from {root}, {size} px, bilinear, decoded as served (e.g. {img.size[0]}x{img.size[1]})")
print(f"resize+crop, median per photo: whole image then crop {np.median(old_s) * 1e3:.3f} ms, crop's box only "
      f"{np.median(new_s) * 1e3:.3f} ms ({np.median(old_s) / np.median(new_s):.2f}x)")
print(f"pixels: mean |diff| {d.mean():.4f} levels, {100 * (d > 0).mean():.2f}% differ, max {d.max()}")
