"""Distributed data parallel training: 2 CPU processes over gloo (real ``torchrun``) match 1 process on the same
global batch, and a run resumes on a different number of processes.

The student is ``convnext_atto`` (LayerNorm, no BatchNorm): PyTorch's SyncBatchNorm runs on GPUs only, so on CPU a
BatchNorm student would normalise each rank's half batch with that half's statistics and differ slightly from the
single-process run. On CUDA ``distill train`` converts BatchNorm to SyncBatchNorm, where BN students match too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from distill.checkpoint import load_checkpoint
from distill.config import dump_config

REPO = Path(__file__).resolve().parents[2]


def _config(data: Path, weights: Path, cache: Path, out: Path, **over: Any) -> Any:
    from distill.train import TrainConfig

    base: dict[str, Any] = {
        "data": {"root": str(data), "shots": 2, "val_fraction": 0.1, "test_fraction": 0.1, "cache_dir": str(cache)},
        "teacher": {"name": "cifar_resnet20", "weights": str(weights)},
        "student": {"arch": "convnext_atto", "size": 32},
        "method": "dho", "steps": 4, "batch_labeled": 8, "batch_unlabeled": 8, "checkpoint_every": 2,
        "eval_every": 2, "log_every": 1, "plots": False, "progress": False, "device": "cpu", "threads": 1,
        "out_dir": str(out),
    }
    base.update(over)
    return TrainConfig.model_validate(base)


def _torchrun(cfg: Any, tmp: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    path = tmp / f"{Path(cfg.out_dir).name}.yaml"
    dump_config(cfg, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "distill", "train", "--config", str(path), "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=480, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _train_losses(run: Path) -> list[float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["event"] == "train"]


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    worst = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)
    assert worst < 2e-5, f"largest weight difference {worst}"


@pytest.fixture(scope="module")
def single(cifar_small_dir: Path, resnet20_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1-process reference run (it also fills the teacher cache that the other runs read)."""
    from distill.train import train

    tmp = tmp_path_factory.mktemp("ddp")
    cfg = _config(cifar_small_dir, resnet20_weights, tmp / "cache", tmp / "single")
    summary = train(cfg)
    assert summary["steps"] == 4 and summary["hardware"]["processes"] == 1
    return Path(cfg.out_dir)


def test_two_processes_match_one_process_on_the_same_global_batch(single: Path, cifar_small_dir: Path,
                                                                  resnet20_weights: Path, tmp_path: Path) -> None:
    cfg = _config(cifar_small_dir, resnet20_weights, single.parent / "cache", tmp_path / "two")
    _torchrun(cfg, tmp_path, 2)
    run = Path(cfg.out_dir)
    _assert_same_weights(single / "last.pt", run / "last.pt")
    assert _train_losses(run) == pytest.approx(_train_losses(single), rel=1e-5, abs=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["hardware"]["processes"] == 2 and summary["steps"] == 4
    assert summary["val"] == pytest.approx(json.loads((single / "summary.json").read_text())["val"], abs=1e-9)
    # rank 0 alone writes the run directory
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in single.iterdir())


def test_resume_on_a_different_number_of_processes(single: Path, cifar_small_dir: Path, resnet20_weights: Path,
                                                   tmp_path: Path) -> None:
    from distill.train import train

    cfg = _config(cifar_small_dir, resnet20_weights, single.parent / "cache", tmp_path / "mixed", max_steps=2)
    _torchrun(cfg, tmp_path, 2)  # steps 0-1 on two processes ...
    assert load_checkpoint(tmp_path / "mixed" / "last.pt")["step"] == 2
    train(cfg.model_copy(update={"max_steps": 0}), resume=True)  # ... steps 2-3 on one
    _assert_same_weights(single / "last.pt", tmp_path / "mixed" / "last.pt")
    assert _train_losses(tmp_path / "mixed") == pytest.approx(_train_losses(single), rel=1e-5, abs=1e-6)


def test_global_batch_must_split_evenly(cifar_small_dir: Path, resnet20_weights: Path, tmp_path: Path) -> None:
    from distill.errors import ConfigError
    from distill.scale.distributed import DistContext, RankSliceSampler

    with pytest.raises(ConfigError, match="batch_unlabeled = 7 is a global batch size"):
        DistContext(rank=0, world_size=2).check_divisible(batch_labeled=8, batch_unlabeled=7)
    slices = [list(__import__("itertools").islice(iter(RankSliceSampler(range(12), 4, r, 2)), 6)) for r in range(2)]
    assert slices == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]


def test_teacher_store_feeds_training_without_a_teacher(single: Path, cifar_small_dir: Path, resnet20_weights: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`distill cache-teacher` output -> `distill train --teacher-store`: same run, the teacher is never built."""
    from distill.scale.cache_teacher import cache_teacher, folder_image_set
    from distill.teachers import TeacherConfig, create_teacher
    from distill.train import train

    names = sorted(d.name for d in cifar_small_dir.iterdir() if d.is_dir())
    teacher = create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(resnet20_weights)), names)
    cache_teacher(teacher, folder_image_set(cifar_small_dir, part_size=100), tmp_path / "store", batch_size=100,
                  device="cpu", progress=False)
    import distill.teachers as teachers_pkg

    monkeypatch.setattr(teachers_pkg, "create_teacher", lambda *a, **k: pytest.fail("the teacher was built"))
    cfg = _config(cifar_small_dir, resnet20_weights, single.parent / "cache", tmp_path / "stored",
                  teacher_store=str(tmp_path / "store"))
    summary = train(cfg)
    assert summary["teacher_cache"]["computed"] == 0 and summary["teacher"]["store"] == str(tmp_path / "store")
    _assert_same_weights(single / "last.pt", tmp_path / "stored" / "last.pt")
