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


def _samples(paths: list[Path]) -> list[Sample]:
    from distill.io import sha256_file

    return [Sample(p, i % 3, sha256_file(p)) for i, p in enumerate(paths)]


def test_decoded_array_path_gives_the_same_batches_as_decoding_each_jpeg(real_jpegs: list[Path], tmp_path: Path) -> None:
    """The fast path is not a different augmentation: same seeds -> the same crops, flips and pixels."""
    from distill.data import ArrayImageDataset, ArrayTrainTransform, create_train_dataset

    spec = PreprocessSpec()
    samples = _samples(real_jpegs)
    fast = create_train_dataset(samples, spec, tmp_path / "cache")
    slow = create_train_dataset(samples, spec, None)
    assert isinstance(fast, ArrayImageDataset) and isinstance(slow, ImageDataset)
    for start in (0, 3):  # a fresh stream and a resumed one
        a, b = seeded_stream(fast, 8, seed=11, start_batch=start), seeded_stream(slow, 8, seed=11, start_batch=start)
        for _ in range(4):  # 32 items: two passes over 16 images
            (xa, ya, ia), (xb, yb, ib) = next(a), next(b)
            assert torch.equal(ia, ib) and torch.equal(ya, yb) and torch.equal(xa, xb)
    tf = ArrayTrainTransform(spec, scale=(0.2, 1.0), hflip=True)
    ref = create_train_transform(spec, scale=(0.2, 1.0), hflip=True)
    image = np.load(next((tmp_path / "cache" / "decoded").glob("*.npy")))[5]
    for seed in range(40):
        torch.manual_seed(seed)
        x = tf(image)
        torch.manual_seed(seed)
        assert torch.equal(x, ref(real_jpegs[5])), seed
    with pytest.raises(ValueError, match="bilinear"):
        ArrayTrainTransform(PreprocessSpec(interpolation="bicubic"))


def test_decoded_images_are_keyed_by_content_atomic_and_resumable(real_jpegs: list[Path], tmp_path: Path) -> None:
    from distill.data import decoded_images
    from distill.data.dataset import decoded_key
    from distill.preprocess import load_image

    samples = _samples(real_jpegs[:10])
    calls: list[int] = []
    arr = decoded_images(samples, tmp_path, chunk=4, progress=lambda done, n: calls.append(done))
    assert arr is not None and arr.shape == (10, 32, 32, 3) and arr.dtype == np.uint8 and not arr.flags.writeable
    assert calls == [4, 8, 10]
    assert np.array_equal(arr[7], np.asarray(load_image(real_jpegs[7]).convert("RGB")))
    root = tmp_path / "decoded"
    assert sorted(p.suffix for p in root.iterdir()) == [".lock", ".npy"]  # no partial or state file left
    moved = [Sample(tmp_path / "elsewhere.jpg", s.label, s.digest) for s in samples]
    assert decoded_key(moved) == decoded_key(samples)  # the key is the content, not the path
    assert decoded_key(samples[::-1]) != decoded_key(samples)

    # a build killed after its first chunk resumes there: rows already written are not decoded again
    other = _samples(real_jpegs[6:16])
    with pytest.raises(KeyboardInterrupt):
        decoded_images(other, tmp_path, chunk=4, progress=lambda done, n: (_ for _ in ()).throw(KeyboardInterrupt))
    key = decoded_key(other)
    assert (root / f"{key}.npy.partial").exists() and not (root / f"{key}.npy").exists()
    partial = np.load(root / f"{key}.npy.partial", mmap_mode="r+")
    partial[0] = 0  # mark a row of the finished chunk: a resumed build must keep it
    partial.flush()
    del partial
    resumed: list[int] = []
    arr2 = decoded_images(other, tmp_path, chunk=4, progress=lambda done, n: resumed.append(done))
    assert resumed == [8, 10] and arr2 is not None and not arr2[0].any()
    assert np.array_equal(arr2[9], np.asarray(load_image(real_jpegs[15]).convert("RGB")))


def test_concurrent_decodes_build_once_and_the_waiter_reuses(real_jpegs: list[Path], tmp_path: Path) -> None:
    """Two runs decoding the same images at once: the second waits on the lock (and says so), then reuses the
    first one's array without decoding anything. Ordered with events, never sleeps (flock locks are per open file,
    so two threads of one process exclude each other as two processes do)."""
    import logging
    import threading

    from distill.data import decoded_images

    samples = _samples(real_jpegs[:8])
    first_chunk, release, waiting = threading.Event(), threading.Event(), threading.Event()

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "another run is decoding these images" in record.getMessage():
                waiting.set()

    def hold(done: int, n: int) -> None:  # the first run, inside the lock after its first chunk
        first_chunk.set()
        assert release.wait(30)

    results: dict[str, object] = {}
    second_progress: list[int] = []
    a = threading.Thread(target=lambda: results.update(a=decoded_images(samples, tmp_path, chunk=4, progress=hold)))
    b = threading.Thread(target=lambda: results.update(
        b=decoded_images(samples, tmp_path, chunk=4, progress=lambda done, n: second_progress.append(done))))
    handler = Said()
    logger = logging.getLogger("distill.data.dataset")
    logger.addHandler(handler)
    try:
        a.start()
        assert first_chunk.wait(30)
        b.start()
        assert waiting.wait(30)  # the second run blocks on the lock the first one holds
        release.set()
        a.join(30)
        b.join(30)
    finally:
        release.set()
        logger.removeHandler(handler)
    assert second_progress == []  # decoded nothing itself
    assert np.array_equal(results["a"], results["b"])


def test_file_lock_yields_the_wait_and_calls_on_wait_once(tmp_path: Path) -> None:
    import threading

    from distill.io import file_lock

    lock = tmp_path / "sub" / "x.lock"
    held, waiting, release = threading.Event(), threading.Event(), threading.Event()
    got: list[float] = []

    def holder() -> None:
        with file_lock(lock) as waited:
            got.append(waited)
            held.set()
            assert release.wait(30)

    def waiter() -> None:
        with file_lock(lock, on_wait=waiting.set) as waited:
            got.append(waited)

    t1 = threading.Thread(target=holder)
    t1.start()
    assert held.wait(30)
    t2 = threading.Thread(target=waiter)
    t2.start()
    assert waiting.wait(30)
    release.set()
    t1.join(30)
    t2.join(30)
    assert got[0] == 0.0 and got[1] > 0.0 and len(got) == 2
    with file_lock(lock, on_wait=lambda: pytest.fail("the lock is free")) as waited:
        assert waited == 0.0


def test_decoded_images_refuses_mixed_or_large_images(real_jpegs: list[Path], tmp_path: Path) -> None:
    from distill.data import create_train_dataset, decoded_images

    big = tmp_path / "big.jpg"
    Image.fromarray(np.zeros((40, 48, 3), dtype=np.uint8)).save(big)
    mixed = _samples([*real_jpegs[:3], big])
    assert decoded_images(mixed, tmp_path / "c") is None
    assert decoded_images(mixed, tmp_path / "c") is None  # remembered (a .skip note), not retried
    assert isinstance(create_train_dataset(mixed, PreprocessSpec(), tmp_path / "c"), ImageDataset)
    assert decoded_images(_samples([big]), tmp_path / "c", max_side=32) is None
    assert not list((tmp_path / "c" / "decoded").glob("*.partial"))


def test_bf16_on_a_cpu_without_native_bf16_is_one_clear_error() -> None:
    from distill.errors import ConfigError
    from distill.train._runtime import pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("bf16", cpu, flags=frozenset({"avx2", "avx512f", "amx_bf16"})).name == "bf16"
    assert pick_precision("bf16", cpu, flags=frozenset({"avx512_bf16"})).dtype is torch.bfloat16
    assert pick_precision("auto", cpu).name == "fp32"  # auto never changes a CPU run's numerics
    with pytest.raises(ConfigError, match=r"native bf16.*avx2.*use --amp off"):
        pick_precision("bf16", cpu, flags=frozenset({"avx2", "fma"}))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        pick_precision("fp16", cpu)
