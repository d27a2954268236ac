"""Teachers you trained: `--method ce` needs no teacher, and its checkpoint is a teacher (`--teacher-kind distill`,
found by `auto`) that runs exactly as `distill eval` evaluates it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from distill.errors import ConfigError, ModelError
from distill.teachers import TeacherConfig, create_teacher, resolve_kind

pytestmark = pytest.mark.realdata

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def data_args(cifar_small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    cache = tmp_path_factory.mktemp("distill_teacher_cache")
    return ["--data", str(cifar_small_dir), "--shots", "4", "--student", "cifar_resnet8", "--batch-size", "8",
            "--cache-dir", str(cache), "--no-progress"]


@pytest.fixture(scope="module")
def ce_run(data_args: list[str], tmp_path_factory: pytest.TempPathFactory, distill_main) -> Path:
    """A supervised run with no teacher at all (the new user's 'train a teacher' step)."""
    out = tmp_path_factory.mktemp("ce") / "run"
    assert distill_main(["train", *data_args, "--method", "ce", "--steps", "6", "--out", str(out)]) == 0
    return out


def test_ce_needs_no_teacher(ce_run: Path) -> None:
    summary = json.loads((ce_run / "summary.json").read_text())
    assert summary["method"] == "ce" and summary["completed"]
    assert summary["teacher"]["val_acc"] is None and summary["teacher"]["test_acc"] is None
    # its epoch is a pass over the 40 labeled images it trains on (batch 8), not over the pool it never draws
    # from (once an epoch of one step there: a validation and a checkpoint after every step)
    assert summary["steps_per_epoch"] == 5
    from distill.checkpoint import load_checkpoint

    assert load_checkpoint(ce_run / "best.pt")["teacher"] is None


def test_distilling_methods_still_need_a_teacher(data_args: list[str], tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(["train", *data_args, "--method", "dho", "--steps", "1", "--out", str(tmp_path / "r")])
    assert code == 2 and "method dho needs a teacher" in err


def test_distill_checkpoint_teacher_matches_distill_eval_exactly(
    ce_run: Path, data_args: list[str], tmp_path: Path, run_cli
) -> None:
    best = ce_run / "best.pt"
    assert resolve_kind(TeacherConfig(weights=str(best))) == "distill"  # auto recognises it
    code, out, _ = run_cli(["eval", "--checkpoint", str(best), "--split", "test", "--json"])
    assert code == 0
    report = json.loads(out)
    eval_acc = next(r["accuracy"] for r in report["results"] if r["model"] == "h_ce")
    pc = report["per_class"]  # per-class accuracy and the confusion matrix of the deployed head
    assert pc["model"] == "h_ce" and [c["class"] for c in pc["classes"]] == CIFAR
    assert sum(c["correct"] for c in pc["classes"]) / sum(c["images"] for c in pc["classes"]) == pytest.approx(eval_acc)
    assert sum(map(sum, pc["confusion"])) == report["images"]
    png = tmp_path / "confusion.png"
    code, _, err = run_cli(["eval", "--checkpoint", str(best), "--split", "test", "--confusion-png", str(png)])
    assert code == 0 and png.stat().st_size > 0 and "per class (h_ce)" in err

    run = tmp_path / "dho"
    code, _, err = run_cli(["train", *data_args, "--method", "dho", "--steps", "2", "--teacher-kind", "distill",
                            "--teacher-weights", str(best), "--out", str(run)])
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["teacher"]["kind"] == "distill" and summary["teacher"]["name"] == "cifar_resnet8"
    assert summary["teacher"]["output"] == "head ce"
    assert summary["teacher"]["test_acc"] == eval_acc  # exactly: same network, classes and preprocessing


def test_distill_teacher_brings_names_and_preprocessing(ce_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    best = str(ce_run / "best.pt")
    teacher = create_teacher(TeacherConfig(weights=best), CIFAR[::-1])  # dataset order differs: reordered
    native = create_teacher(TeacherConfig(weights=best), CIFAR)
    assert teacher.kind == "distill" and teacher.class_names == CIFAR[::-1]
    assert native.preprocess.size == 32 and not caplog.records
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(teacher.logits(x), native.logits(x).flip(1))
    with caplog.at_level(logging.WARNING):
        bigger = create_teacher(TeacherConfig(weights=best, preprocess={"size": 48}), CIFAR)
    assert bigger.preprocess.size == 48 and bigger.preprocess.resize_size == 48
    assert bigger.identity != native.identity  # a different input: cached logits are not reused
    assert any("runs at 48 px but its weights were trained/evaluated at 32 px" in r.message for r in caplog.records)
    with pytest.raises(ConfigError, match="unknown teacher.preprocess field"):
        create_teacher(TeacherConfig(weights=best, preprocess={"szie": 48}), CIFAR)
    with pytest.raises(ConfigError, match="invalid teacher.preprocess.interpolation"):
        create_teacher(TeacherConfig(weights=best, preprocess={"interpolation": "fancy"}), CIFAR)


def test_preprocess_override_from_the_command_line(data_args: list[str]) -> None:
    from distill.commands.train import build_train_config

    cfg = build_train_config(None, ["teacher.preprocess.size=112", "teacher.preprocess.interpolation=bicubic"],
                             {"data": "x", "teacher": "resnet18"})
    assert cfg.teacher.preprocess == {"size": 112, "interpolation": "bicubic"}


def test_timm_teacher_weight_errors_name_the_keys(ce_run: Path, tmp_path: Path) -> None:
    import timm

    with pytest.raises(ModelError, match="is a `distill train` checkpoint.*--teacher-kind distill"):
        create_teacher(TeacherConfig(kind="timm", name="resnet18", weights=str(ce_run / "best.pt")), CIFAR)
    net = timm.create_model("test_resnet", num_classes=10)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()}  # a hand-made export, prefixed
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as e:
        create_teacher(TeacherConfig(kind="timm", name="test_resnet", weights=str(path)), CIFAR)
    msg = str(e.value)
    assert "missing: conv1" in msg and "unexpected: backbone.conv1" in msg and "(+" in msg
    assert "--teacher NAME" in msg
