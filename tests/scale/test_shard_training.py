"""`distill train` with its unlabeled pool streamed from WebDataset-style shards (``data.unlabeled_shards``) and
teacher logits looked up by content digest in a `distill cache-teacher` store: the pool is never materialised,
an epoch is sized from shards.json, readers split disjointly, and a resumed run draws exactly the same batches."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from distill.checkpoint import load_checkpoint
from distill.cli import app
from distill.data import EvalTransform
from distill.data.shards import ShardStream
from distill.errors import ConfigError, DataError
from distill.preprocess import PreprocessSpec

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def store(cifar_small_dir: Path, resnet20_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Teacher logits (CIFAR ResNet-20) for all 300 images: the folder's splits and every shard image."""
    from distill.scale.cache_teacher import cache_teacher, folder_image_set
    from distill.teachers import TeacherConfig, create_teacher

    teacher = create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(resnet20_weights)), CIFAR_CLASSES)
    out = tmp_path_factory.mktemp("store") / "r20"
    cache_teacher(teacher, folder_image_set(cifar_small_dir, part_size=300), out, batch_size=150, device="cpu",
                  progress=False)
    return out


def _config(data: Path, shards: Path, store: Path, out: Path, **over: Any) -> Any:
    from distill.train import TrainConfig

    base: dict[str, Any] = {
        "data": {"root": str(data), "shots": 2, "val_fraction": 0.1, "test_fraction": 0.1,
                 "cache_dir": str(out.parent / "cache"), "unlabeled_shards": str(shards), "shuffle_buffer": 16,
                 "num_workers": 2},
        "teacher_store": str(store),
        "student": {"arch": "cifar_resnet8", "size": 32},
        "method": "dho", "steps": 5, "batch_labeled": 8, "batch_unlabeled": 8, "checkpoint_every": 2,
        "eval_every": 5, "log_every": 1, "plots": False, "progress": False, "device": "cpu", "threads": 1,
        "out_dir": str(out),
    }
    base["data"].update(over.pop("data_over", {}))
    base.update(over)
    return TrainConfig.model_validate(base)


def _losses(run: Path) -> list[float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["event"] == "train"]


@pytest.fixture(scope="module")
def streamed(cifar_small_dir: Path, shards_dir: Path, store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 uninterrupted steps with the pool streamed from the shards (2 DataLoader workers); records what it looked up."""
    import distill.teachers as teachers_pkg
    from distill.scale.teacher_store import StoreTeacher
    from distill.train import train

    looked_up: list[str] = []
    original = StoreTeacher.logits_for_digests

    def spy(self: Any, digests: Any, names: Any = None) -> Any:
        looked_up.extend(digests)
        return original(self, digests, names)

    mp = pytest.MonkeyPatch()
    mp.setattr(StoreTeacher, "logits_for_digests", spy)
    mp.setattr(teachers_pkg, "create_teacher", lambda *a, **k: pytest.fail("the teacher was built"))
    try:
        cfg = _config(cifar_small_dir, shards_dir, store, tmp_path_factory.mktemp("shardrun") / "full")
        summary = train(cfg)
    finally:
        mp.undo()
    run = Path(cfg.out_dir)
    (run / "looked_up.json").write_text(json.dumps(looked_up))
    assert summary["steps"] == 5 and summary["completed"]
    return run


def test_train_streams_the_unlabeled_pool_from_shards(streamed: Path, shards_dir: Path) -> None:
    from distill.data.shards import iter_shard, resolve_shards

    summary = json.loads((streamed / "summary.json").read_text())
    assert summary["steps_per_epoch"] == 38  # ceil(300 images in shards.json / 8 per step)
    assert summary["data"]["unlabeled"] == 0 and summary["data"]["unlabeled_streamed"] == 300
    assert summary["data"]["unlabeled_shards"] == str(shards_dir)
    assert summary["teacher_cache"]["computed"] == 0
    looked_up = json.loads((streamed / "looked_up.json").read_text())
    shard_digests = {r.digest for s in resolve_shards(shards_dir) for r in iter_shard(s)}
    assert len(looked_up) == 5 * 8 and set(looked_up) <= shard_digests  # every unlabeled image came from a shard
    split = json.loads((streamed / "split.json").read_text())
    assert split["splits"]["unlabeled"] == [] and split["source"]["unlabeled_shards"] == str(shards_dir)


def test_resume_from_a_streamed_pool_draws_the_same_batches(streamed: Path, cifar_small_dir: Path, shards_dir: Path,
                                                            store: Path, tmp_path: Path) -> None:
    """Stopped after 3 steps (odd: the resumed loader's workers take over rotated roles) and resumed to 5."""
    from distill.train import train

    cfg = _config(cifar_small_dir, shards_dir, store, tmp_path / "resumed", max_steps=3)
    train(cfg)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 3
    train(cfg.model_copy(update={"max_steps": 0}), resume=True)
    a, b = load_checkpoint(streamed / "last.pt")["model"], load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6
    assert _losses(tmp_path / "resumed") == pytest.approx(_losses(streamed), rel=1e-6)


def _batches(ds: ShardStream, n: int, workers: int) -> list[tuple[torch.Tensor, list[str]]]:
    loader = DataLoader(ds, batch_size=ds.batch_size, num_workers=workers)
    return [(x, list(d)) for x, d, _ in itertools.islice(loader, n)]


def test_shard_stream_resumes_mid_epoch_and_across_epochs(shards_dir: Path) -> None:
    """A stream started at step k yields the uninterrupted stream's batches k, k+1, ... (pixels included)."""
    from distill.data import TrainTransform

    tf = TrainTransform(PreprocessSpec.for_size(8))
    kw = dict(batch_size=8, seed=5, shuffle_buffer=16, num_workers=2, rank=0, world_size=1)
    full = _batches(ShardStream(shards_dir, tf, **kw), 50, 2)  # 25 batches a reader: beyond its first epoch
    for start in (0, 13, 41):
        tail = _batches(ShardStream(shards_dir, tf, start_step=start, **kw), 50 - start, 2)
        assert [d for _, d in tail] == [d for _, d in full[start:]]
        assert all(torch.equal(x, y) for (x, _), (y, _) in zip(tail, full[start:]))
    # without a buffer whole shards are skipped by their counts: same result
    kw["shuffle_buffer"] = 0
    full = _batches(ShardStream(shards_dir, tf, **kw), 40, 2)
    assert [d for _, d in _batches(ShardStream(shards_dir, tf, start_step=31, **kw), 9, 2)] == [d for _, d in full[31:]]


def test_shard_stream_ranks_read_disjoint_shards(shards_dir: Path) -> None:
    tf = EvalTransform(PreprocessSpec.for_size(8))
    seen = [[d for _, d, _ in itertools.islice(ShardStream(shards_dir, tf, batch_size=4, rank=r, world_size=2), 100)]
            for r in range(2)]  # each rank holds at least 2 of the 5 shards (>= 108 images) in epoch 0
    assert not set(seen[0]) & set(seen[1]) and all(len(set(s)) == 100 for s in seen)


def test_shard_stream_errors(shards_dir: Path, tmp_path: Path) -> None:
    tf = EvalTransform(PreprocessSpec.for_size(8))
    with pytest.raises(DataError, match="5 shards cannot feed 2 ranks x 3 workers"):
        ShardStream(shards_dir, tf, batch_size=4, num_workers=3, rank=0, world_size=2)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(shards_dir / "shard-000000.tar", lone)
    with pytest.raises(DataError, match="no image count in shards.json"):
        ShardStream(lone, tf, batch_size=4)


def test_shards_need_a_teacher_store(cifar_small_dir: Path, shards_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "--data", str(cifar_small_dir), "--unlabeled-shards", str(shards_dir),
                                   "--teacher", "cifar_resnet20", "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2
    assert "data.unlabeled_shards needs teacher_store" in res.output and len(res.output.strip().splitlines()) == 1
    from distill.config import load_config
    from distill.train import TrainConfig

    with pytest.raises(ConfigError, match="unlabeled_dir or as unlabeled_shards, not both"):
        load_config(TrainConfig, None, {"data.root": "x", "data.unlabeled_dir": "y", "data.unlabeled_shards": "z",
                                        "teacher_store": "s"})


def test_a_shard_image_missing_from_the_store_is_a_clear_error(cifar_small_dir: Path, shards_dir: Path,
                                                               resnet20_weights: Path, tmp_path: Path) -> None:
    """A store that holds the labeled/val/test images but not the pool: the first streamed batch names the image."""
    from distill.data import DataConfig, build_splits
    from distill.scale.cache_teacher import cache_teacher, samples_image_set
    from distill.teachers import TeacherConfig, create_teacher
    from distill.train import train

    cfg = _config(cifar_small_dir, shards_dir, tmp_path / "small", tmp_path / "run", data_over={"num_workers": 0})
    splits = build_splits(DataConfig.model_validate(cfg.data.model_dump()), progress=False)
    teacher = create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(resnet20_weights)), CIFAR_CLASSES)
    cache_teacher(teacher, samples_image_set(splits.labeled + splits.val + splits.test, CIFAR_CLASSES),
                  tmp_path / "small", device="cpu", progress=False)
    with pytest.raises(DataError, match=r"image shard-\d{6}\.tar:\d+ \(sha256 [0-9a-f]{16}\.\.\.\) is not in the teacher"):
        train(cfg)


def test_cache_teacher_names_parts_of_same_named_shards_in_several_folders(shards_dir: Path, tmp_path: Path) -> None:
    from distill.scale.cache_teacher import shard_image_set

    for sub in ("train", "val"):
        (tmp_path / sub).mkdir()
        shutil.copy(shards_dir / "shard-000000.tar", tmp_path / sub)
    parts = shard_image_set(f"{tmp_path}/*/shard-*.tar", class_names=CIFAR_CLASSES).parts
    assert [p.name for p in parts] == ["train-shard-000000", "val-shard-000000"]  # resumable parts must not collide
    assert [p.name for p in shard_image_set(shards_dir).parts][:2] == ["shard-000000", "shard-000001"]  # unchanged


def test_a_run_saved_before_the_shard_fields_existed_still_resumes() -> None:
    from distill.train import TrainConfig
    from distill.train.loop import _check_resumable

    cfg = TrainConfig.model_validate({"data": {"root": "x"}, "teacher": {}})
    saved = cfg.model_dump(mode="json")
    del saved["data"]["unlabeled_shards"], saved["data"]["shuffle_buffer"]  # an older config.yaml
    _check_resumable(saved, cfg)
    streamed = TrainConfig.model_validate({"data": {"root": "x", "unlabeled_shards": "s"}, "teacher_store": "t"})
    with pytest.raises(ConfigError, match="config 'data' differs"):
        _check_resumable(saved, streamed)
