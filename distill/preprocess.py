"""The one preprocessing spec and its one implementation (torch-free).

The spec is written into every checkpoint and every exported artifact; training-time evaluation, export
verification, the artifact runtime, serving and benchmarks all call :func:`preprocess_images`, so train/serve
skew (resize mode, crop, RGB/BGR, mean/std) cannot creep in.
"""

from __future__ import annotations

import io
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

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "PreprocessSpec":
        return cls.model_validate_json(text)


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode any common image into 8-bit RGB, honouring EXIF orientation.

    Grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and WebP inputs all come out as RGB.
    Raises :class:`ImageDecodeError` or :class:`ImageTooLargeError`, never a bare PIL exception.
    """
    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
        except OSError as e:
            raise ImageDecodeError(f"cannot open image: {e}") from e
        try:
            img = Image.open(fp)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ImageDecodeError(f"not a decodable image: {_plain(e, source)}") from e
        except Image.DecompressionBombError as e:  # pragma: no cover - PIL raises only above 2x its limit
            raise ImageTooLargeError(str(e)) from e
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image has {w}x{h} = {w * h} pixels, the limit is {max_pixels}")
    try:
        img.load()
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
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample)
    left = int(round((nw - spec.size) / 2.0))
    top = int(round((nh - spec.size) / 2.0))
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
) -> np.ndarray:
    """Decode and preprocess a batch: float (N,3,H,W) normalised, or uint8 (N,H,W,3) for in-graph normalisation."""
    arrs = [to_uint8_hwc(load_image(s, max_pixels=max_pixels), spec) for s in images]
    batch = np.stack(arrs) if arrs else np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return batch if output == "uint8" else normalize_uint8(batch, spec)


def preprocess_image(image: ImageSource, spec: PreprocessSpec) -> np.ndarray:
    """One image as a float (3, H, W) array (what an evaluation dataset returns per item)."""
    return preprocess_images([image], spec)[0]
