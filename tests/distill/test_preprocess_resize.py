"""The geometric half of the spec: a shrink resamples only the box the center crop keeps, and agrees with resizing the
whole image and then cropping (the rule it replaced) to within float rounding; EXIF orientation never modifies an
image the caller passed in."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from distill.preprocess import PreprocessSpec, load_image, resize_and_crop

_MODES = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
          "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}


def _resize_then_crop(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The reference, written out: the whole image resized (shorter side to resize_size), then the center crop."""
    w, h = img.size
    scale = spec.resize_size / min(w, h)
    nw, nh = max(spec.size, round(w * scale)), max(spec.size, round(h * scale))
    left, top = int(round((nw - spec.size) / 2.0)), int(round((nh - spec.size) / 2.0))
    full = img.resize((nw, nh), _MODES[spec.interpolation])
    return np.asarray(full.crop((left, top, left + spec.size, top + spec.size)), dtype=np.int16)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("size,resize_size", [(32, 32), (64, 73), (224, 256)])
def test_a_shrink_matches_resizing_the_whole_image_then_cropping(interpolation, size, resize_size):
    rng = np.random.default_rng(size + len(interpolation))
    spec = PreprocessSpec(size=size, resize_size=resize_size, interpolation=interpolation)
    diffs = []
    for _ in range(12):
        w, h = (int(v) for v in rng.integers(resize_size + 1, 4 * resize_size, size=2))
        # smooth content (a real photo's spectrum), plus noise: rounding differences show on both
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) + rng.integers(-20, 21, (h, w, 3)), 0, 255)
                              .astype(np.uint8))
        got = np.asarray(resize_and_crop(img, spec), dtype=np.int16)
        ref = _resize_then_crop(img, spec)
        assert got.shape == ref.shape == (size, size, 3)
        diffs.append(np.abs(got - ref))
        assert diffs[-1].max() <= 8, (w, h)  # rounding between the two 8-bit passes (lanczos lobes amplify it)
    assert np.mean(diffs) < 0.1 and np.mean(np.concatenate(diffs) > 0) < 0.1


def test_an_upscale_or_an_exact_fit_keeps_the_resize_then_crop_rule():
    rng = np.random.default_rng(0)
    spec = PreprocessSpec(size=32, resize_size=36)
    for w, h in ((20, 30), (36, 50), (30, 80), (36, 36)):  # upscaled (one side or both), or already the size
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert np.array_equal(np.asarray(resize_and_crop(img, spec), dtype=np.int16), _resize_then_crop(img, spec))
    nearest = PreprocessSpec(size=32, resize_size=36, interpolation="nearest")
    img = Image.fromarray(rng.integers(0, 256, (219, 97, 3), dtype=np.uint8))  # a shrink, but nearest: the rule
    assert np.array_equal(np.asarray(resize_and_crop(img, nearest), dtype=np.int16), _resize_then_crop(img, nearest))


def test_a_callers_image_is_never_modified_by_its_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    Image.new("RGB", (60, 40), (200, 10, 10)).save(buf, "JPEG", exif=exif)
    theirs = Image.open(io.BytesIO(buf.getvalue()))
    theirs.load()
    assert load_image(theirs).size == (40, 60)  # turned, as displayed
    assert theirs.size == (60, 40) and theirs.getexif().get(0x0112) == 6  # their object untouched
    assert load_image(buf.getvalue()).size == (40, 60)  # bytes: decoded and turned in place
