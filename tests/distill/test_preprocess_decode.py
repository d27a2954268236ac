"""Decoding at the size the model needs: DCT-scaled JPEG decode (PIL ``draft``), made at test time from real
shared clothing photos (a 12 MP phone-sized upscale, progressive, EXIF-rotated, CMYK and grayscale variants);
other formats decoded in full; the pixel limit on the header; files closed after decoding."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.preprocess import (ImageDecodeError, ImageTooLargeError, PreprocessSpec, decode_side, load_image,
                                preprocess_images, train_decode_side)

SPEC = PreprocessSpec()  # 32 px, the quickstart size


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(clothing_small_dir: Path) -> Image.Image:
    """A real clothing photo (a few hundred pixels a side), decoded once."""
    path = sorted(clothing_small_dir.rglob("*.jpg"))[0]
    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def phone_photo(photo: Image.Image) -> Image.Image:
    """The real photo upscaled to a 12-megapixel phone size (4032x3024, landscape)."""
    return photo.resize((4032, 3024), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def phone_jpeg(phone_photo: Image.Image) -> bytes:
    return _jpeg(phone_photo)


def _full(data: bytes, spec: PreprocessSpec = SPEC) -> np.ndarray:
    """The reference: full decode (no DCT scaling), then the same resize and crop."""
    from distill.preprocess import to_uint8_hwc

    return to_uint8_hwc(load_image(data), spec)


def _close(a: np.ndarray, b: np.ndarray, mean_levels: float = 4.0) -> bool:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < mean_levels


def test_decode_side_follows_the_spec():
    assert decode_side(PreprocessSpec(size=224, resize_size=256)) == 256
    assert decode_side(PreprocessSpec(size=224, resize_size=256, resize_mode="squash")) == 224
    # the smallest random crop (half the area, aspect 4:3) still has 32 px on its shorter side
    assert train_decode_side(32, (0.5, 1.0), (3 / 4, 4 / 3)) == 53
    assert train_decode_side(32, (1.0, 1.0), (1.0, 1.0)) == 32


def test_a_12mp_jpeg_is_decoded_at_the_smallest_scale_still_large_enough(phone_jpeg):
    assert load_image(phone_jpeg).size == (4032, 3024)  # no min_side: full decode
    assert load_image(phone_jpeg, min_side=32).size == (504, 378)  # 1/8, the largest DCT scale (378 >= 4 x 32)
    assert load_image(phone_jpeg, min_side=100).size == (1008, 756)  # 1/4: 1/8 would leave 378 < 4 x 100
    assert load_image(phone_jpeg, min_side=400).size == (4032, 3024)  # less than 2 x 4 x 400: in full
    batch = preprocess_images([phone_jpeg], SPEC, output="uint8")
    assert batch.shape == (1, 32, 32, 3) and _close(batch[0], _full(phone_jpeg))


def test_an_ordinary_photo_is_decoded_at_4x_and_stays_close_to_the_full_decode(clothing_small_dir):
    """A few-hundred-pixel photo for a 32 px model: decoded at 1/2 (at least 4x the 32 px it needs), not 1/8, because
    at 1/8 libjpeg keeps only each block's average and the pixels drift from a full decode's (this assertion fails
    there; 4.7% of a student's predictions changed, docs/results.md 16); at 4x they stay within 1 level."""
    paths = sorted(clothing_small_dir.rglob("*.jpg"))[:20]
    data = [p.read_bytes() for p in paths]
    first = load_image(data[0])
    assert load_image(data[0], min_side=32).size == tuple(-(-s // 2) for s in first.size)  # 1/2 (libjpeg rounds up)
    fast = preprocess_images(data, SPEC, output="uint8").astype(np.int16)
    full = np.stack([_full(d) for d in data]).astype(np.int16)
    assert float(np.abs(fast - full).mean()) < 1.0


def test_a_small_photo_keeps_its_decode(photo):
    data = _jpeg(photo)
    w, h = photo.size
    assert load_image(data, min_side=min(w, h)).size == (w, h)


def test_progressive_jpeg(phone_photo, phone_jpeg):
    data = _jpeg(phone_photo, progressive=True)
    assert Image.open(io.BytesIO(data)).info.get("progressive") or Image.open(io.BytesIO(data)).info.get("progression")
    assert load_image(data, min_side=32).size == (504, 378)
    assert _close(preprocess_images([data], SPEC, output="uint8")[0], _full(data))


def test_exif_orientation_is_applied_after_the_scaled_decode(phone_photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _jpeg(phone_photo, exif=exif)
    img = load_image(data, min_side=32)
    assert img.size == (378, 504)  # portrait, as displayed
    assert _close(preprocess_images([data], SPEC, output="uint8")[0], _full(data))
    upright = phone_photo.transpose(Image.Transpose.ROTATE_270)
    from distill.preprocess import to_uint8_hwc

    assert _close(to_uint8_hwc(img, SPEC), to_uint8_hwc(upright, SPEC), 6.0)


def test_cmyk_and_grayscale_jpegs(phone_photo):
    for mode in ("CMYK", "L"):
        data = _jpeg(phone_photo.convert(mode))
        assert Image.open(io.BytesIO(data)).mode == mode
        img = load_image(data, min_side=32)
        assert img.mode == "RGB" and img.size == (504, 378), mode
        assert _close(preprocess_images([data], SPEC, output="uint8")[0], _full(data)), mode


def test_png_is_decoded_in_full_and_the_pixel_limit_still_applies(photo):
    big = photo.resize((1600, 1200))
    buf = io.BytesIO()
    big.save(buf, "PNG")
    assert load_image(buf.getvalue(), min_side=32).size == (1600, 1200)
    with pytest.raises(ImageTooLargeError):
        load_image(buf.getvalue(), max_pixels=1600 * 1200 - 1, min_side=32)


def _claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0/SOF2) so the file claims ``width`` x ``height`` pixels."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC2):
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_a_header_claiming_a_huge_canvas_is_refused_before_decoding(photo, png_claiming):
    # 65,535 is JPEG's largest side; a PNG header can claim 100,000 x 100,000
    for data in (_claim_size(_jpeg(photo), 65_535, 65_535), png_claiming(100_000, 100_000)):
        with pytest.raises(ImageTooLargeError):
            load_image(data, min_side=32)
    with pytest.raises(ImageTooLargeError):
        load_image(_claim_size(_jpeg(photo), 8000, 6000), max_pixels=40_000_000, min_side=32)


def test_a_truncated_12mp_jpeg_is_a_decode_error(phone_jpeg):
    with pytest.raises(ImageDecodeError):
        load_image(phone_jpeg[: len(phone_jpeg) // 2], min_side=32)


def test_decoding_a_path_closes_the_file(tmp_path, photo, monkeypatch):
    import builtins

    import distill.preprocess as pp

    opened = []

    def recording_open(*a, **kw):
        f = builtins.open(*a, **kw)
        opened.append(f)
        return f

    monkeypatch.setattr(pp, "open", recording_open, raising=False)  # the module's own ``open``
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg(photo))
    img = load_image(path, min_side=32)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError):
        load_image(tmp_path / "bad.jpg")
    assert len(opened) == 2 and all(f.closed for f in opened)
    assert min(img.size) >= 32


def test_training_decode_keeps_the_random_crop_at_full_resolution(phone_jpeg):
    torch = pytest.importorskip("torch")
    from distill.data.transforms import TrainTransform

    t = TrainTransform(SPEC)
    assert t.decode_side == 53
    img = load_image(phone_jpeg, min_side=t.decode_side)
    assert img.size == (504, 378)  # 1/8: the smallest crop (half of 504x378 at 4:3) is far above 32 px
    torch.manual_seed(0)
    x = t(phone_jpeg)
    assert tuple(x.shape) == (3, 32, 32)
