"""WebDataset-style shards: written from a real ImageFolder, streamed split across ranks and DataLoader workers."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from distill.cli import app
from distill.data import EvalTransform
from distill.data.shards import ShardDataset, expand_braces, iter_shard, resolve_shards, shards_for, write_shards
from distill.errors import DataError
from distill.preprocess import PreprocessSpec

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

runner = CliRunner()


def _folder_digests(root: Path) -> dict[str, str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p.parent.name for p in root.rglob("*.jpg")}


def test_make_shards_cli_writes_webdataset_layout(cifar_small_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    res = runner.invoke(app, ["make-shards", "--data", str(cifar_small_dir), "--out", str(out), "--shard-size", "128",
                              "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert res.exit_code == 0, res.output
    index = json.loads((out / "shards.json").read_text())
    assert index["class_names"] == CIFAR_CLASSES and index["num_images"] == 300
    assert [s["name"] for s in index["shards"]] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s["count"] for s in index["shards"]] == [128, 128, 44]
    with tarfile.open(out / "shard-000000.tar") as tf:
        names = tf.getnames()
    assert names[:3] == ["000000000.cls", "000000000.jpg", "000000000.json"]  # a sample's members are adjacent
    # image bytes are unchanged: the digests (teacher-store keys) are the folder's, labels are the class folders'
    want = _folder_digests(cifar_small_dir)
    got = {r.digest: r for s in resolve_shards(out) for r in iter_shard(s)}
    assert got.keys() == want.keys()
    assert all(CIFAR_CLASSES[r.label] == want[d] == r.meta["class"] for d, r in got.items())


def test_shards_split_disjointly_across_ranks_and_workers(shards_dir: Path) -> None:
    tf = EvalTransform(PreprocessSpec.for_size(32))
    all_digests = {r.digest for s in resolve_shards(shards_dir) for r in iter_shard(s)}
    seen: list[str] = []
    for rank in range(2):
        ds = ShardDataset(shards_dir, tf, rank=rank, world_size=2, seed=3)
        assert ds.class_names == CIFAR_CLASSES and ds.num_images == 300
        loader = DataLoader(ds, batch_size=16, num_workers=2)
        for x, y, digests in loader:
            assert x.shape[1:] == (3, 32, 32) and y.min() >= 0
            seen.extend(digests)
    assert len(seen) == len(set(seen)) == 300 and set(seen) == all_digests


def test_shard_order_is_seeded_per_epoch_and_the_same_on_every_rank() -> None:
    shards = [Path(f"s{i}.tar") for i in range(12)]
    parts = [shards_for(shards, r, 3, w, 2, seed=1, epoch=0) for r in range(3) for w in range(2)]
    assert sorted(p for ps in parts for p in ps) == sorted(shards) and all(len(p) == 2 for p in parts)
    assert shards_for(shards, 0, 3, 0, 2, seed=1, epoch=0) == parts[0]
    assert shards_for(shards, 0, 3, 0, 2, seed=1, epoch=1) != parts[0] or shards_for(shards, 1, 3, 0, 2, seed=1, epoch=1) != parts[2]


def test_shuffle_buffer_keeps_every_image(shards_dir: Path) -> None:
    tf = EvalTransform(PreprocessSpec.for_size(8))
    plain = [d for _, _, d in ShardDataset(shards_dir, tf, shuffle=False, rank=0, world_size=1)]
    mixed = [d for _, _, d in ShardDataset(shards_dir, tf, shuffle=False, shuffle_buffer=50, rank=0, world_size=1)]
    assert sorted(plain) == sorted(mixed) and plain != mixed


def test_unreadable_image_in_a_shard_is_skipped(cifar_small_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from distill.data import Sample

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = sorted(cifar_small_dir.rglob("*.jpg"))[:3]
    write_shards([Sample(p, 0) for p in good] + [Sample(bad, 1)], tmp_path / "sh", ["a", "b"], shuffle=False)
    ds = ShardDataset(tmp_path / "sh", EvalTransform(PreprocessSpec.for_size(16)), rank=0, world_size=1)
    items = list(ds)
    assert len(items) == 3 and all(y == 0 for _, y, _ in items)
    assert "skipping unreadable image bad.jpg" in caplog.text


def test_unlabeled_shards_have_no_cls(cifar_small_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["make-shards", "--data", str(cifar_small_dir / "cat"), "--unlabeled", "--out",
                              str(tmp_path / "u"), "--max-images", "10", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    recs = list(iter_shard(tmp_path / "u" / "shard-000000.tar"))
    assert len(recs) == 10 and all(r.label == -1 for r in recs)


def test_brace_glob_and_bad_shard_specs(shards_dir: Path, tmp_path: Path) -> None:
    assert expand_braces("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    assert len(resolve_shards(f"{shards_dir}/shard-{{000000..000004}}.tar")) == 5
    assert len(resolve_shards(f"{shards_dir}/shard-*.tar")) == 5
    with pytest.raises(DataError, match="1 of 6 shards"):
        resolve_shards(f"{shards_dir}/shard-{{000000..000005}}.tar")
    with pytest.raises(DataError, match="no shards found"):
        resolve_shards(tmp_path / "nothing-*.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar shards"):
        resolve_shards(tmp_path / "empty")
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match="cannot read shard"):
        list(iter_shard(broken))


def test_make_shards_refuses_to_mix_with_existing_shards(cifar_small_dir: Path, shards_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["make-shards", "--data", str(cifar_small_dir), "--out", str(shards_dir),
                              "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2 and "already holds shards" in res.output
    res = runner.invoke(app, ["make-shards", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not found" in res.output
