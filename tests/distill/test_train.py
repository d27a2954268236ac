"""End-to-end training on real CIFAR JPEGs with the real ResNet-56 teacher (tiny student, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per session (shared with test_resume.py): the teacher runs on the 300 images only once."""
    path = tmp_path_factory.getbasetemp() / "distill_train_cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def base_args(cifar_small_dir: Path, resnet56_weights: Path, cache_dir: Path) -> list[str]:
    return ["train", "--data", str(cifar_small_dir), "--shots", "2", "--teacher", "cifar_resnet56",
            "--teacher-weights", str(resnet56_weights), "--student", "cifar_resnet8", "--batch-size", "8",
            "--cache-dir", str(cache_dir), "--no-progress"]


@pytest.fixture(scope="module")
def dho_run(base_args: list[str], tmp_path_factory: pytest.TempPathFactory, distill_main) -> Path:
    out = tmp_path_factory.mktemp("dho") / "run"
    assert distill_main([*base_args, "--method", "dho", "--steps", "6", "--eval-every", "3", "--grad-conflict-every",
                         "2", "--out", str(out)]) == 0
    return out


def test_dho_run_writes_every_run_file(dho_run: Path) -> None:
    for name in ("config.yaml", "split.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt",
                 "loss.png", "accuracy.png", "grad_conflict.png"):
        assert (dho_run / name).is_file() and (dho_run / name).stat().st_size > 0, name
    assert not list(dho_run.glob(".*.tmp")), "atomic writes leave no temp files"

    summary = json.loads((dho_run / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == 6
    for split in ("val", "test"):
        assert set(summary[split]) >= {"acc_ce", "acc_kd", "acc_blend_prob", "acc_blend_logit"}
    assert 0.5 < summary["teacher"]["val_acc"] <= 1.0  # the real ResNet-56 on real CIFAR JPEGs
    assert summary["teacher_cache"]["enabled"] and summary["skipped_images"] == 0
    assert summary["images_per_s"] > 0 and summary["hardware"]["torch"] == torch.__version__
    assert 0 < summary["setup_time_s"] < summary["wall_time_s"]  # set-up before step 1 is reported
    assert summary["data"]["labeled"] == 20 and summary["data"]["val"] == 30 and summary["data"]["test"] == 30

    events = [json.loads(line) for line in (dho_run / "metrics.jsonl").read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"setup", "train", "val", "grad_conflict", "final"} <= kinds
    cos = [e["cosine"] for e in events if e["event"] == "grad_conflict"]
    assert [e["step"] for e in events if e["event"] == "grad_conflict"] == [0, 2, 4]
    assert all(-1.0 <= c <= 1.0 for c in cos)
    assert {"acc_ce", "acc_kd", "acc_blend05"} <= set(next(e for e in events if e["event"] == "val"))

    split = json.loads((dho_run / "split.json").read_text())
    assert split["counts"]["labeled"] == 20 and len(split["splits"]["val"]) == 30


def test_dho_checkpoint_is_loadable_and_documented(dho_run: Path) -> None:
    from distill.checkpoint import load_checkpoint, preprocess_from_checkpoint, student_from_checkpoint

    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(dho_run / name)  # weights_only=True
        student, _ = student_from_checkpoint(ckpt)
        assert student.head_names == ("ce", "kd")
        assert ckpt["method"] == "dho" and len(ckpt["class_names"]) == 10
        assert preprocess_from_checkpoint(ckpt).size == 32
        blend = ckpt["blend"]
        for kind in ("prob", "logit"):
            assert set(blend[kind]) >= {"alpha", "beta", "val_acc", "test_acc"}
        assert set(blend["heads_val_acc"]) == {"ce", "kd"} and set(blend["heads_test_acc"]) == {"ce", "kd"}
        assert 0.0 <= blend["agreement_prob_logit"] <= 1.0
        assert ckpt["teacher"]["kind"] == "cifar_resnet" and ckpt["teacher"]["identity"]
        assert len(ckpt["data"]["val"]) == 30 and len(ckpt["data"]["test"]) == 30
        assert ckpt["config"]["method"] == "dho"
    last = load_checkpoint(dho_run / "last.pt")
    assert {"optimizer", "scheduler", "rng", "scaler"} <= set(last) and last["step"] == 6


def test_eval_command_reports_heads_and_blends(dho_run: Path, run_cli) -> None:
    code, out, _ = run_cli(["eval", "--checkpoint", str(dho_run / "best.pt"), "--split", "test", "--json"])
    assert code == 0
    report = json.loads(out)
    models = [r["model"] for r in report["results"]]
    assert models == ["h_ce", "h_kd", "prob blend", "logit blend"] and report["images"] == 30
    ckpt = torch.load(dho_run / "best.pt", weights_only=True)
    assert report["results"][2]["accuracy"] == pytest.approx(ckpt["blend"]["prob"]["test_acc"])
    code, _, err = run_cli(["eval", "--checkpoint", str(dho_run / "best.pt")])
    assert code == 0 and "logit blend" in err


@pytest.mark.parametrize("method,heads", [("ce", ("ce",)), ("kd", ("kd",)), ("ce+kd", ("shared",))])
def test_baselines_run(method: str, heads: tuple[str, ...], base_args: list[str], tmp_path: Path,
                       run_cli) -> None:
    from distill.checkpoint import load_checkpoint

    extra = ["--grad-conflict-every", "1"] if method == "ce+kd" else []
    code, _, err = run_cli([*base_args, "--method", method, "--steps", "2", "--out", str(tmp_path / "r"), *extra])
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "r" / "best.pt")
    assert ckpt["method"] == method and tuple(ckpt["student"]["heads"]) == heads and ckpt["blend"] is None
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["val"]) == {f"acc_{h}" for h in heads}
    assert f"(set-up before step 1: {summary['setup_time_s']:.1f} s)" in err  # in the summary a person reads
    events = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert ('"grad_conflict"' in events) == (method == "ce+kd")
    if method != "ce":
        assert summary["teacher_cache"]["hits"] > 0  # the teacher ran in an earlier test: served from the cache


# ------------------------------------------------------------------ bad input -> one "error:" line, exit 2


@pytest.mark.parametrize("args,needle", [
    (["--data", "/nonexistent/dir"], "not found"),
    (["--set", "lr"], "--set expects key=value"),
    (["--set", "no_such_field=1"], "no_such_field"),
    (["--method", "magic"], "method"),
    (["--shots", "0"], "shots"),
    (["--labeled-fraction", "0.001"], "fewer than one labeled image"),
    (["--config", "/nonexistent.yaml"], "config file not found"),
    (["--device", "cuda:7"], "cuda"),
    (["--student-init", "magic"], "student.init"),
    (["--student-init", "teacher", "--student", "resnet18"], "needs a cifar_resnet student, not resnet18"),
])
def test_bad_input_is_one_error_line(args: list[str], needle: str, base_args: list[str], tmp_path: Path,
                                     run_cli) -> None:
    if args[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    full = [*base_args, "--steps", "1", "--out", str(tmp_path / "r")]
    if args[0] == "--data":
        full[full.index("--data") + 1] = args[1]
    elif args[0] == "--labeled-fraction":  # --shots would override the fraction
        i = full.index("--shots")
        full = full[:i] + full[i + 2:] + args
    else:
        full += args
    code, _, err = run_cli(full)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_no_data_and_resume_errors(base_args: list[str], tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(["train", "--steps", "1"])
    assert code == 2 and err.startswith("error:") and "--data" in err
    code, _, err = run_cli(["train", "--resume", "--out", str(tmp_path / "nothing")])
    assert code == 2 and "cannot resume" in err
    code, _, err = run_cli(["eval", "--checkpoint", str(tmp_path / "missing.pt")])
    assert code == 2 and "checkpoint not found" in err


def test_progress_in_a_log_is_a_line_every_n_steps() -> None:
    """Not a terminal (nohup, CI): one plain line every N steps with loss, accuracy, s/step and time left."""
    import io

    from distill.train.progress import Progress

    log = io.StringIO()
    with Progress(True, total=5, start=0, every=2, stream=log, terminal=False) as bar:
        for done in range(1, 6):
            if done == 3:
                bar.note({"acc_ce": 0.25, "acc_blend05": 0.5}, "acc_blend05")
            bar.update(done, 2.0 / done, 100.0, 1e-3)
    lines = log.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    assert "val acc -" in lines[0] and "val acc 50.0%" in lines[1] and "loss 0.5000" in lines[1]
    assert lines[0].endswith("left") and " s/step | " in lines[0]
    assert Progress(True, 10, 0, 1).line(4, 1.0, elapsed=2.0, steps=4).endswith("0.500 s/step | 0:00:03 left")
    quiet = io.StringIO()
    with Progress(False, total=5, start=0, every=1, stream=quiet, terminal=False) as off:
        off.update(1, 1.0, 1.0, 1e-3)
    assert quiet.getvalue() == ""


def test_a_student_started_from_the_teacher(base_args: list[str], tmp_path: Path, run_cli) -> None:
    """The real ResNet-56 teacher starts a ResNet-8 student (block 0 of each stage); the run records it."""
    code, _, err = run_cli([*base_args, "--method", "kd", "--steps", "1", "--student-init", "teacher",
                            "--out", str(tmp_path / "r")])
    assert code == 0, err
    setup = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert setup["event"] == "setup" and setup["student_init"] == {"from": "teacher", "blocks": [0]}
    code, _, err = run_cli([*base_args, "--steps", "1", "--set", "student.init=teacher", "--set",
                            "student.weights=backbone.pt", "--out", str(tmp_path / "r2")])
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "choose one" in lines[0], err
