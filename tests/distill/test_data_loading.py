"""Transforms, dataset and loaders: eval tensors equal the shared preprocessing exactly; streams are seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data import (
    ImageDataset, InfiniteSampler, Sample, create_eval_transform, create_train_transform, eval_loader, seeded_stream,
)
from distill.preprocess import PreprocessSpec, preprocess_image


def test_eval_transform_equals_preprocess_image_on_real_jpegs(real_jpegs: list[Path], tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    arr = np.random.default_rng(0).integers(0, 256, (75, 120, 3), dtype=np.uint8)
    Image.fromarray(arr).save(big, quality=90)
    specs = [PreprocessSpec(), PreprocessSpec(size=24, resize_size=28, interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                                              std=(0.25, 0.25, 0.25))]
    for spec in specs:
        tf = create_eval_transform(spec)
        for path in [*real_jpegs, big]:
            out = tf(path)
            assert out.dtype == torch.float32 and out.shape == (3, spec.size, spec.size)
            assert torch.equal(out, torch.from_numpy(preprocess_image(path, spec)))


def test_train_transform_is_random_resized_crop_flip(real_jpegs: list[Path]) -> None:
    spec = PreprocessSpec()
    tf = create_train_transform(spec)
    torch.manual_seed(0)
    a = [tf(real_jpegs[0]) for _ in range(4)]
    torch.manual_seed(0)
    b = [tf(real_jpegs[0]) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(a[0], x) for x in a[1:])
    assert a[0].shape == (3, 32, 32) and a[0].dtype == torch.float32
    lo = (0 - np.array(spec.mean)) / np.array(spec.std)
    assert float(a[0].min()) >= lo.min() - 1e-5
    no_aug = create_train_transform(spec, scale=(1.0, 1.0), hflip=False)
    assert torch.allclose(no_aug(real_jpegs[0]), create_eval_transform(spec)(real_jpegs[0]), atol=1e-6)


def test_dataset_items_carry_their_index(real_jpegs: list[Path]) -> None:
    samples = [Sample(p, i % 3) for i, p in enumerate(real_jpegs[:6])]
    ds = ImageDataset(samples, create_eval_transform(PreprocessSpec()))
    x, y, i = ds[4]
    assert x.shape == (3, 32, 32) and y == 1 and i == 4
    xb, yb, ib = next(iter(eval_loader(ds, 4)))
    assert xb.shape == (4, 3, 32, 32) and ib.tolist() == [0, 1, 2, 3] and yb.tolist() == [0, 1, 2, 0]
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_infinite_sampler_is_seeded_and_resumable() -> None:
    it = iter(InfiniteSampler(5, seed=3))
    first = [next(it) for _ in range(12)]
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:10]) == list(range(5))
    assert first[:5] != first[5:10] or first[:5] != list(range(5))
    resumed = iter(InfiniteSampler(5, seed=3, start=7))
    assert [next(resumed) for _ in range(5)] == first[7:12]
    with pytest.raises(ValueError):
        InfiniteSampler(0)


def test_seeded_stream_runs_past_one_pass_and_resumes_exactly(real_jpegs: list[Path]) -> None:
    ds = ImageDataset([Sample(p, -1) for p in real_jpegs[:5]], create_train_transform(PreprocessSpec()))
    it = seeded_stream(ds, 4, seed=7)
    batches = [next(it) for _ in range(4)]  # 16 items from a 5-item dataset
    assert all(b[0].shape == (4, 3, 32, 32) and (b[1] == -1).all() for b in batches)
    seen = torch.cat([b[2] for b in batches]).tolist()
    assert sorted(seen[:5]) == list(range(5))
    again = next(seeded_stream(ds, 4, seed=7, start_batch=2))  # a resumed stream: same images, same crops
    assert again[2].tolist() == seen[8:12] and torch.equal(again[0], batches[2][0])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    next(seeded_stream(ds, 4, seed=7))
    assert torch.equal(torch.get_rng_state(), before)  # drawing batches leaves the global RNG alone


def test_extract_subset_and_its_command(cifar_tar, tmp_path) -> None:
    from distill.data.archive import extract_subset
    from distill.data.subset import main
    from distill.errors import DataError

    dest = extract_subset(cifar_tar, tmp_path / "sub", per_class=2)
    assert sorted(len(list(d.iterdir())) for d in dest.iterdir()) == [2] * 10
    with pytest.raises(DataError, match="no images under"):
        extract_subset(cifar_tar, tmp_path / "none", per_class=1, prefix="validation")
    assert main(["only-one-arg"]) == 2


def test_require_images_raises_the_callers_error_type(tmp_path) -> None:
    from distill.data.archive import require_images
    from distill.errors import DataError
    from export.errors import ExportError

    with pytest.raises(DataError, match="image folder not found"):
        require_images(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(ExportError, match="no images .* found under"):
        require_images(tmp_path / "empty", ExportError)
    Image.new("RGB", (4, 4)).save(tmp_path / "empty" / "cls" / "a.png")
    assert require_images(tmp_path / "empty") == [tmp_path / "empty" / "cls" / "a.png"]


def test_unlabeled_folder_errors_name_the_folder(tmp_path) -> None:
    from distill.data.scan import list_unlabeled_folder
    from distill.errors import DataError

    with pytest.raises(DataError, match="unlabeled image folder not found"):
        list_unlabeled_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images .* found under unlabeled image folder"):
        list_unlabeled_folder(tmp_path / "empty")


def test_extract_subset_skips_members_that_escape_the_destination(tmp_path) -> None:
    import io
    import tarfile

    from distill.data.archive import extract_subset

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG")
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("train/cat/0.jpg", "train/../escaped.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
    dest = extract_subset(archive, tmp_path / "out" / "sub", per_class=5)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == ["cat/0.jpg"]
    assert not (tmp_path / "out" / "escaped.jpg").exists()
