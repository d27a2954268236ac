"""The one preprocessing spec and its one implementation (torch-free).

The spec is written into every checkpoint and every exported artifact; training-time evaluation, export
verification, the artifact runtime, serving and benchmarks all call :func:`preprocess_images`, so train/serve
skew (resize mode, crop, RGB/BGR, mean/std) cannot creep in.

Decoding at the size the model needs: a JPEG much larger than the spec's resize size is decoded with libjpeg's
DCT scaling (1/2, 1/4 or 1/8, PIL's ``Image.draft``) to the smallest scale whose shorter side is still at least
:data:`DCT_MARGIN` times :func:`decode_side` of the spec, then resized and cropped as usual. A 12-megapixel phone photo then costs a
fraction of a full decode (see docs/results.md, issue 13). PIL's ``draft`` was picked by measurement: as fast as
simplejpeg's scaled decode here, no new dependency, and it keeps PIL's handling of EXIF orientation, CMYK,
grayscale and progressive files. Every other format (PNG, WebP, ...) is decoded in full; the pixel limit is
checked on the header before any decode, whatever the format.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, model_validator

ImageSource = Union[str, Path, bytes, Image.Image]

#: Default cap on decoded pixels (a 40-megapixel photo passes, a decompression bomb does not).
DEFAULT_MAX_PIXELS = 40_000_000

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode."""


class ImageTooLargeError(ValueError):
    """The image has more pixels than allowed (decompression-bomb guard)."""


class PreprocessSpec(BaseModel):
    """How raw RGB images become a model input. Configs as data: this travels inside every artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(32, gt=0, description="Square side of the model input after crop.")
    resize_size: int = Field(32, gt=0, description="Shorter side after resize, before the center crop.")
    resize_mode: Literal["shortest", "squash"] = "shortest"
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"

    @model_validator(mode="after")
    def _check(self) -> "PreprocessSpec":
        if self.resize_size < self.size:
            raise ValueError(f"resize_size ({self.resize_size}) must be >= size ({self.size})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self

    @classmethod
    def for_size(cls, size: int, crop_pct: float = 1.0, **kw: object) -> "PreprocessSpec":
        """Spec for a square input; ``crop_pct`` < 1 resizes larger first (e.g. 224/0.875 = 256)."""
        return cls(size=size, resize_size=int(round(size / crop_pct)), **kw)  # type: ignore[arg-type]



# How much larger than the size the caller needs a DCT-scaled decode stays. libjpeg's scaled IDCT is close to a box
# average of each 8x8 block (at 1/8 it keeps only the DC term), a poor low-pass; decoding to 4x the target leaves the
# antialiased resize that follows to do the real filtering. At 1x a 400x534 photo decoded at 1/8 changed 4.7% of a
# 32 px student's predictions against a full decode (-0.88 points top-1 on the clothing validation split), at 2x
# 3.5%, at 4x 0.9% (0.00 points); a 12 MP photo still decodes at 1/8, so its cost is unchanged (docs/results.md 16).
DCT_MARGIN = 4


def decode_side(spec: PreprocessSpec) -> int:
    """The shorter side a decoded image needs so that :func:`resize_and_crop` never upsamples what DCT scaling
    dropped: the resize size (``shortest``), or the crop size (``squash``, both sides resized to it)."""
    return spec.resize_size if spec.resize_mode == "shortest" else spec.size


def train_decode_side(size: int, scale: tuple[float, float], ratio: tuple[float, float]) -> int:
    """The shorter side that leaves a random resized crop (area fraction >= ``scale[0]``, aspect ratio within
    ``ratio``) of a ``size`` output its full resolution: the smallest crop's shorter side is at least
    ``sqrt(area * scale_min / max_ratio)`` and the area at least the shorter side squared."""
    widest = max(ratio[1], 1.0 / ratio[0], 1.0)
    return int(math.ceil(size * math.sqrt(widest / scale[0])))


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, *,
               min_side: int | None = None) -> Image.Image:
    """Decode any common image into 8-bit RGB, honouring EXIF orientation.

    ``min_side``: the shorter side the caller needs (:func:`decode_side`); a JPEG at least twice ``DCT_MARGIN *
    min_side`` is decoded with DCT scaling to the smallest scale that still has that. None: always decode in full.
    Grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and WebP inputs all come out as RGB.
    The pixel limit is checked on the header, before decoding. Raises :class:`ImageDecodeError` or
    :class:`ImageTooLargeError`, never a bare PIL exception.
    """
    if isinstance(source, Image.Image):
        return _finish(source, max_pixels, source, owned=False)
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as e:
        raise ImageDecodeError(f"cannot open image: {e}") from e
    with fp:  # the file is closed once the pixels are in memory
        try:
            img = Image.open(fp)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ImageDecodeError(f"not a decodable image: {_plain(e, source)}") from e
        except Image.DecompressionBombError as e:  # a header claiming over 2x PIL's own limit
            raise ImageTooLargeError(str(e)) from e
        _check_pixels(img, max_pixels)
        if min_side is not None:
            _draft(img, min_side)
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageDecodeError(f"corrupt image data: {_plain(e, source)}") from e
    return _finish(img, max_pixels, source)


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image has {w}x{h} = {w * h} pixels, the limit is {max_pixels}")


def _draft(img: Image.Image, min_side: int) -> None:
    """Ask libjpeg for the largest DCT scale-down (1/2, 1/4, 1/8) whose shorter side stays >= ``DCT_MARGIN *
    min_side``."""
    if img.format not in ("JPEG", "MPO"):  # MPO: the multi-picture JPEGs many phones write
        return
    w, h = img.size
    short = min(w, h)
    min_side *= DCT_MARGIN
    if short < 2 * min_side:
        return
    # PIL picks the largest scale s in (8, 4, 2) with w // req_w >= s and h // req_h >= s
    img.draft(None, (math.ceil(w * min_side / short), math.ceil(h * min_side / short)))


def _finish(img: Image.Image, max_pixels: int, source: object = None, *, owned: bool = True) -> Image.Image:
    """Pixels loaded, EXIF orientation applied, RGB. ``owned``: the image is ours (we opened it), so it is turned in
    place; a caller's image is never modified (and ``exif_transpose`` copies it even when it is upright)."""
    _check_pixels(img, max_pixels)
    try:
        img.load()
        if owned:
            ImageOps.exif_transpose(img, in_place=True)
        else:
            img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"corrupt image data: {_plain(e, source)}") from e


_FILE_REPR = re.compile(r"<_io\.\w+ (?:object at 0x[0-9a-fA-F]+|name=[^>]*)>")


def _plain(error: Exception, source: object) -> str:
    """PIL's message with its ``<_io.BytesIO object at 0x...>`` replaced by what the user gave us."""
    if isinstance(source, (bytes, bytearray)):
        what = f"({len(source)} bytes)"
    elif isinstance(source, (str, Path)):
        what = str(source)
    else:
        what = "the image"
    return _FILE_REPR.sub(what, str(error))


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr8 = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_and_crop(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Geometric part of the spec (what a caller does itself for a uint8-input artifact)."""
    resample = _INTERPOLATION[spec.interpolation]
    if spec.resize_mode == "squash":
        return img.resize((spec.size, spec.size), resample)
    w, h = img.size
    scale = spec.resize_size / min(w, h)
    nw, nh = max(spec.size, round(w * scale)), max(spec.size, round(h * scale))
    left = int(round((nw - spec.size) / 2.0))
    top = int(round((nh - spec.size) / 2.0))
    if (nw, nh) != (w, h):
        if nw <= w and nh <= h and spec.interpolation != "nearest":
            # Shrinking: resample only the source box the crop comes from, straight to the crop size. The filter
            # still reads pixels outside the box, so this is resize-then-crop up to rounding (a few levels in a few
            # pixels: tests/distill/test_preprocess_resize.py), without computing the pixels the crop drops (43% of
            # a 400x711 photo's resize at 32 px). Nearest resizes then crops: a box can move its pick by a pixel.
            sx, sy = w / nw, h / nh
            return img.resize((spec.size, spec.size), resample,
                              box=(left * sx, top * sy, (left + spec.size) * sx, (top + spec.size) * sy))
        img = img.resize((nw, nh), resample)
    if (nw, nh) == (spec.size, spec.size):
        return img
    return img.crop((left, top, left + spec.size, top + spec.size))


def to_uint8_hwc(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resized, cropped RGB image as an (H, W, 3) uint8 array."""
    return np.asarray(resize_and_crop(img, spec).convert("RGB"), dtype=np.uint8)


def normalize_uint8(batch: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalised, the model's float input."""
    x = batch.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_images(
    images: Sequence[ImageSource],
    spec: PreprocessSpec,
    *,
    output: Literal["float", "uint8"] = "float",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dct_scaling: bool = True,
) -> np.ndarray:
    """Decode and preprocess a batch: float (N,3,H,W) normalised, or uint8 (N,H,W,3) for in-graph normalisation.

    ``dct_scaling=False`` decodes every image in full (the reference ``distill bench decode`` compares against)."""
    side = decode_side(spec) if dct_scaling else None
    arrs = [to_uint8_hwc(load_image(s, max_pixels=max_pixels, min_side=side), spec) for s in images]
    batch = np.stack(arrs) if arrs else np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return batch if output == "uint8" else normalize_uint8(batch, spec)


def preprocess_image(image: ImageSource, spec: PreprocessSpec) -> np.ndarray:
    """One image as a float (3, H, W) array (what an evaluation dataset returns per item)."""
    return preprocess_images([image], spec)[0]
