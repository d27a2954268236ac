"""TensorBoard and MLflow read back every scalar of a short run (with their own libraries' readers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def tracked_run(cifar_small_dir: Path, resnet20_weights: Path, tmp_path_factory: pytest.TempPathFactory,
                distill_main) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("tracked")
    uri = (root / "mlruns").as_uri()
    out = root / "run"
    assert distill_main(["train", "--data", str(cifar_small_dir), "--shots", "2", "--teacher", "cifar_resnet20",
                         "--teacher-weights", str(resnet20_weights), "--student", "cifar_resnet8", "--batch-size", "8",
                         "--cache-dir", str(root / "cache"), "--no-progress", "--steps", "4", "--eval-every", "2",
                         "--grad-conflict-every", "2", "--set", "log_every=1", "--mlflow-uri", uri,
                         "--out", str(out)]) == 0
    return out, uri


def _expected(run: Path) -> dict[str, dict[int, float]]:
    from distill.train.tracking import row_scalars

    want: dict[str, dict[int, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for tag, v in row_scalars(row).items():
            want.setdefault(tag, {})[int(row.get("step", 0))] = v
    return want


def test_tensorboard_holds_every_logged_scalar(tracked_run: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tracked_run
    want = _expected(run)
    for tag in ("train/loss", "train/ce", "train/kd", "train/lr", "train/images_per_s", "val/acc_ce", "val/acc_kd",
                "val/acc_blend05", "grad_conflict/cosine"):
        assert tag in want, tag
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    have = set(ea.Tags()["scalars"])
    assert set(want) <= have, sorted(set(want) - have)
    for tag, by_step in want.items():
        got = {e.step: e.value for e in ea.Scalars(tag)}
        assert got.keys() == by_step.keys(), tag
        assert all(abs(got[s] - v) <= 1e-6 * max(1.0, abs(v)) for s, v in by_step.items()), tag  # float32 on disk
    summary = json.loads((run / "summary.json").read_text())
    hp = {t: ea.Scalars(t)[-1].value for t in have if t.startswith("hparam/")}
    assert abs(hp["hparam/final/test_acc_blend_prob"] - summary["test"]["acc_blend_prob"]) < 1e-6
    assert "hparam/final/teacher_val_acc" in hp


def test_mlflow_run_has_params_metrics_and_artifacts(tracked_run: tuple[Path, str]) -> None:
    from mlflow.tracking import MlflowClient

    run, uri = tracked_run
    rec = json.loads((run / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    mrun = client.get_run(rec["run_id"])
    assert mrun.info.status == "FINISHED"
    assert mrun.data.params["student.arch"] == "cifar_resnet8" and mrun.data.params["method"] == "dho"
    for tag, by_step in _expected(run).items():
        hist = {m.step: m.value for m in client.get_metric_history(rec["run_id"], tag)}
        assert hist == pytest.approx(by_step), tag
    summary = json.loads((run / "summary.json").read_text())
    assert mrun.data.metrics["final/test_acc_blend_prob"] == pytest.approx(summary["test"]["acc_blend_prob"])
    names = {a.path for a in client.list_artifacts(rec["run_id"])}
    assert {"best.pt", "summary.json", "config.yaml", "metrics.jsonl"} <= names

    from distill.train.tracking import log_to_run

    onnx = run / "student.onnx"
    onnx.write_bytes(b"onnx bytes")  # what `distill export --mlflow` hands over after verification
    assert log_to_run(run, [onnx]) == rec["run_id"]
    assert [a.path for a in client.list_artifacts(rec["run_id"], "export")] == ["export/student.onnx"]


def test_bad_mlflow_uri_is_one_line(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from distill.errors import ConfigError
    from distill.train.tracking import create_tracker

    with pytest.raises(ConfigError, match="cannot open MLflow tracking URI"):
        create_tracker(SimpleNamespace(tensorboard=False, mlflow_uri="nosuchscheme://x"), tmp_path)


def test_distill_export_logs_the_verified_onnx_to_the_same_run(tracked_run: tuple[Path, str], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from distill.cli import app

    run, uri = tracked_run
    onnx = tmp_path / "exported.onnx"
    res = CliRunner().invoke(app, ["export", "onnx", "--checkpoint", str(run / "best.pt"), "-o", str(onnx),
                                   "--fold-heads", "--opset", "17", "--mlflow"])
    assert res.exit_code == 0, res.output
    rec = json.loads((run / "mlflow.json").read_text())
    assert "export/exported.onnx" in {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(rec["run_id"], "export")}
    import shutil

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "best.pt", lone / "best.pt")
    res = CliRunner().invoke(app, ["export", "onnx", "--checkpoint", str(lone / "best.pt"), "-o",
                                   str(lone / "m.onnx"), "--fold-heads", "--opset", "17", "--mlflow"])
    assert res.exit_code == 2 and "has no mlflow.json" in res.output
