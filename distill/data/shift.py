"""Write a domain-shifted copy of an ImageFolder dataset, for the weak-teacher control of issue 3.

The shared ResNet-56 was trained on every CIFAR-10 image with its true label, so on these images its soft labels
already hold what the 1% hard labels add. A fixed pixel transform keeps the images just as learnable for a
student trained on them (and keeps every true label), but takes the teacher outside its training domain: that
is the situation DHO was designed for (a CLIP teacher, zero-shot, on a specialised domain).

    python -m distill.data.shift ../shared/data/cifar10-train-jpeg.tar.gz OUT --subdir train --shift invert

Images are written losslessly (PNG) under ``OUT/<class>/``, into a temporary folder renamed into place at the end,
so an interrupted run never leaves a half-written dataset behind. An existing OUT is kept as it is.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from PIL import Image, ImageFilter, ImageOps

from ..errors import DataError
from .archive import require_images, resolve_dataset_root

Shift = Callable[[Image.Image], Image.Image]

#: Pixel transforms, each a fixed function of the image (no randomness). How far one takes the teacher out of its
#: domain: ``distill teacher-eval --data OUT --teacher cifar_resnet56 --teacher-weights ...`` (invert: docs/results.md §1).
SHIFTS: dict[str, Shift] = {
    "invert": ImageOps.invert,
    "solarize": lambda im: ImageOps.solarize(im, threshold=128),
    "gray": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
}


def shift_dataset(src: Path, dst: Path, shift: Shift) -> int:
    """Copy every image under ``src`` (class folders) to ``dst`` with ``shift`` applied; returns the image count."""
    images = require_images(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    try:
        for path in images:
            rel = path.relative_to(src).with_suffix(".png")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as im:
                shift(im.convert("RGB")).save(tmp / rel)
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(images)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m distill.data.shift", description=__doc__.splitlines()[0])
    ap.add_argument("src", help="ImageFolder directory or .tar/.tar.gz of one")
    ap.add_argument("dst", type=Path, help="output folder (class folders of PNGs)")
    ap.add_argument("--subdir", default=None, help="folder inside src, e.g. train")
    ap.add_argument("--shift", choices=sorted(SHIFTS), required=True)
    args = ap.parse_args(argv)
    if args.dst.exists():
        print(f"{args.dst} exists; kept as it is")
        return
    try:
        n = shift_dataset(resolve_dataset_root(args.src, args.subdir), args.dst, SHIFTS[args.shift])
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {n} images ({args.shift}) to {args.dst}")


if __name__ == "__main__":
    main()
