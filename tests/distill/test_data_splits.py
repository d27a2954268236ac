"""Data roots, verification and splits: stratified, seeded, disjoint; every bad input is a one-line DataError."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from distill.data import DataConfig, build_splits, extract_archive, resolve_dataset_root, verify_samples
from distill.data import scan as scan_mod
from distill.data.scan import list_image_folder
from distill.errors import DataError


def _png(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(root / name / f"{i}.png", seed=100 * c + i)
    return root


def _cfg(root: Path, tmp_path: Path, **kw: object) -> DataConfig:
    return DataConfig(root=root, cache_dir=tmp_path / "cache", **kw)  # type: ignore[arg-type]


def _paths(samples: list) -> set[Path]:
    return {s.path for s in samples}


def test_splits_are_stratified_seeded_and_disjoint(cifar_small_dir: Path, tmp_path: Path) -> None:
    s = build_splits(_cfg(cifar_small_dir, tmp_path, shots=2))
    assert s.class_names[:3] == ["airplane", "automobile", "bird"] and s.num_classes == 10
    for split, per_class in (("test", 3), ("val", 3), ("labeled", 2)):
        assert Counter(x.label for x in getattr(s, split)) == {c: per_class for c in range(10)}, split
    assert len(s.unlabeled) == 300 - 80 and all(x.label == -1 for x in s.unlabeled)
    groups = [_paths(getattr(s, n)) for n in ("labeled", "unlabeled", "val", "test")]
    assert sum(map(len, groups)) == len(set().union(*groups)) == 300
    for x in s.labeled + s.val + s.test:
        assert s.class_names[x.label] == x.path.parent.name and len(x.digest) == 64
    again = build_splits(_cfg(cifar_small_dir, tmp_path, shots=2))
    assert again.manifest() == s.manifest()
    other = build_splits(_cfg(cifar_small_dir, tmp_path, shots=2, seed=1))
    assert _paths(other.labeled) != _paths(s.labeled) and other.fingerprint() != s.fingerprint()


def test_labeled_fraction_counts_against_full_class(cifar_small_dir: Path, tmp_path: Path) -> None:
    s = build_splits(_cfg(cifar_small_dir, tmp_path, labeled_fraction=0.1, val_fraction=0.2, test_fraction=0.0))
    assert Counter(x.label for x in s.labeled) == {c: 3 for c in range(10)}
    assert len(s.val) == 60 and s.test == [] and len(s.unlabeled) == 300 - 90


def test_max_images_is_stratified(cifar_small_dir: Path, tmp_path: Path) -> None:
    s = build_splits(_cfg(cifar_small_dir, tmp_path, shots=1, max_images=100))
    total = s.labeled + s.unlabeled + s.val + s.test
    assert len(total) == 100
    assert Counter(x.path.parent.name for x in total) == {n: 10 for n in s.class_names}


def test_manifest_and_checkpoint_data(cifar_small_dir: Path, tmp_path: Path) -> None:
    s = build_splits(_cfg(cifar_small_dir, tmp_path, shots=1))
    m = json.loads(json.dumps(s.manifest()))
    assert m["counts"] == {"labeled": 10, "unlabeled": 230, "val": 30, "test": 30, "skipped": 0}
    assert len(m["fingerprint"]) == 64
    rel, label, digest = m["splits"]["labeled"][0]
    assert (Path(m["root"]) / rel).is_file() and not Path(rel).is_absolute() and len(digest) == 64
    ck = s.as_checkpoint_data()
    assert {"root", "val", "test"} <= set(ck)
    assert all((Path(ck["root"]) / r).is_file() and s.class_names[lab] == Path(r).parent.name for r, lab in ck["val"])
    assert len(ck["test"]) == 30


def test_corrupt_image_is_skipped_and_counted(cifar_small_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(cifar_small_dir, root)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg" * 10)
    (root / "dog" / "empty.png").write_bytes(b"")
    s = build_splits(_cfg(root, tmp_path, shots=1))
    assert len(s.skipped) == 2 and s.counts()["skipped"] == 2
    assert {sk.path.name for sk in s.skipped} == {"broken.jpg", "empty.png"}
    assert all(sk.reason for sk in s.skipped)
    assert not any(x.path.name in ("broken.jpg", "empty.png") for x in s.unlabeled + s.labeled + s.val + s.test)
    assert len(s.manifest()["skipped"]) == 2


def test_verification_is_cached(cifar_small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, samples = list_image_folder(cifar_small_dir)
    first, _ = verify_samples(samples[:50], cifar_small_dir, tmp_path)

    def boom(path: Path) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(scan_mod, "_check_one", boom)
    second, skipped = verify_samples(samples[:50], cifar_small_dir, tmp_path)
    assert second == first and not skipped


@pytest.mark.parametrize(
    ("counts", "kw", "message"),
    [
        ({"a": 5, "b": 0}, {}, "class 'b' has no images"),
        ({"a": 20, "b": 20}, {"labeled_fraction": 0.01}, "fewer than one labeled image for class 'a'"),
        ({"a": 5, "b": 5}, {"shots": 4}, r"too few for 1 test \+ 1 val \+ 4 labeled"),
    ],
)
def test_bad_data_is_a_one_line_error(tmp_path: Path, counts: dict[str, int], kw: dict, message: str) -> None:
    root = _folder(tmp_path / "d", counts)
    with pytest.raises(DataError, match=message) as e:
        build_splits(_cfg(root, tmp_path, **kw))
    assert "\n" not in str(e.value)


def test_fractions_summing_to_one_take_every_image_despite_rounding(tmp_path: Path) -> None:
    """README's teacher command (--labeled-fraction 0.8 with 0.1 val + 0.1 test) once failed on a 455-image class:
    46 + 46 + round(364.0) = 456 > 455. Fractions that fit are rounding, not too few images."""
    root = _folder(tmp_path / "d", {"a": 5, "b": 7})
    s = build_splits(_cfg(root, tmp_path, labeled_fraction=0.8, val_fraction=0.1, test_fraction=0.1))
    assert len(s.labeled) + len(s.val) + len(s.test) == 12 and not s.unlabeled
    with pytest.raises(ValueError):  # over 1 is still refused (by DataConfig, before any image is read)
        _cfg(root, tmp_path, labeled_fraction=0.9, val_fraction=0.1, test_fraction=0.1)


def test_missing_root_and_no_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset not found"):
        build_splits(_cfg(tmp_path / "nope", tmp_path))
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "x.png", 0)
    with pytest.raises(DataError, match="no class folders"):
        build_splits(_cfg(tmp_path / "flat", tmp_path))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="neither a directory nor"):
        resolve_dataset_root(tmp_path / "file.txt")


def test_invalid_fractions_rejected() -> None:
    with pytest.raises(ValidationError, match="leaves no training images"):
        DataConfig(root=Path("."), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValidationError):
        DataConfig(root=Path("."), labeled_fraction=0.0)
    with pytest.raises(ValidationError, match="extra"):
        DataConfig(root=Path("."), typo=1)  # type: ignore[call-arg]


def test_val_dir_and_unlabeled_dir(tmp_path: Path) -> None:
    train = _folder(tmp_path / "train", {"a": 10, "b": 10})
    val = _folder(tmp_path / "val", {"a": 3, "b": 2})
    extra = tmp_path / "extra"
    for i in range(4):
        _png(extra / "nested" / f"u{i}.png", 999 + i)
    s = build_splits(_cfg(train, tmp_path, shots=2, unlabeled_dir=extra, val_dir=val))
    assert len(s.val) == 5 and all(x.path.is_relative_to(val) for x in s.val)
    assert len(s.test) == 2 and len(s.labeled) == 4 and len(s.unlabeled) == 20 - 6 + 4
    assert Path(s.as_checkpoint_data()["val"][0][0]).is_absolute()  # outside root: stays absolute
    bad = _folder(tmp_path / "badval", {"a": 2, "c": 2})
    with pytest.raises(DataError, match="val_dir classes do not match.*missing b; extra c"):
        build_splits(_cfg(train, tmp_path, shots=2, val_dir=bad))


def _tar_from(src: Path, dest: Path, prefixes: tuple[str, ...] = ("train",), per_class: int = 5) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        for prefix in prefixes:
            for cls in sorted(p for p in src.iterdir() if p.is_dir()):
                for img in sorted(cls.iterdir())[:per_class]:
                    tf.add(img, arcname=f"{prefix}/{cls.name}/{img.name}")
        info = tarfile.TarInfo("README")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    return dest


def test_tar_archive_is_extracted_once(cifar_small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tar = _tar_from(cifar_small_dir, tmp_path / "cifar-small.tar.gz")
    cache = tmp_path / "cache"
    root = resolve_dataset_root(tar, cache_dir=cache)
    assert root.name == "train" and root.is_relative_to(cache)
    assert len(list(root.rglob("*.jpg"))) == 50
    s = build_splits(DataConfig(root=tar, cache_dir=cache, shots=1, val_fraction=0.2, test_fraction=0.2))
    assert s.root == root and len(s.labeled) == 10

    def no_reopen(*a: object, **k: object) -> None:
        raise AssertionError("archive extracted twice")

    monkeypatch.setattr(tarfile, "open", no_reopen)
    assert resolve_dataset_root(tar, cache_dir=cache) == root
    assert not [p for p in (cache / "extracted").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_archive_with_several_datasets(cifar_small_dir: Path, tmp_path: Path) -> None:
    tar = _tar_from(cifar_small_dir, tmp_path / "two.tar", ("train", "validation"), per_class=2)
    cache = tmp_path / "cache"
    assert resolve_dataset_root(tar, cache_dir=cache).name == "train"
    assert resolve_dataset_root(tar, "validation", cache).name == "validation"
    with pytest.raises(DataError, match="no folder 'test'.*train, validation"):
        resolve_dataset_root(tar, "test", cache)
    two = tmp_path / "ab"
    _folder(two / "x", {"c1": 1})
    _folder(two / "y", {"c1": 1})
    with pytest.raises(DataError, match="several datasets .*x, y.*--subdir"):
        resolve_dataset_root(two)


def test_archive_members_cannot_escape(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as tf:
        for name in ("ok/cls/a.png", "../escaped.png", "/abs.png"):
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
        link = tarfile.TarInfo("ok/cls/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    out = extract_archive(tar, tmp_path / "cache")
    assert (out / "ok" / "cls" / "a.png").is_file()
    assert not (out / "ok" / "cls" / "link.png").exists()
    assert not (tmp_path / "cache" / "escaped.png").exists() and not (tmp_path / "escaped.png").exists()
    with pytest.raises(DataError, match="cannot extract"):
        (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
        extract_archive(tmp_path / "junk.tar.gz", tmp_path / "cache")
