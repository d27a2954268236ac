"""``distill teacher-eval``: reports, the folder/class checks and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.output = exit_code, stdout, stderr + stdout


@pytest.fixture()
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli):
    """``distill teacher-eval ARGS`` in-process (conftest's ``run_cli``), with a cache directory of its own."""
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))

    def invoke(*args: str) -> Result:
        return Result(*run_cli(["teacher-eval", *args]))

    return invoke


def _error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


def test_teacher_eval_reports_accuracy(run, cifar_small_dir: Path, resnet56_weights: Path) -> None:
    res = run("--data", str(cifar_small_dir), "--teacher", "cifar_resnet56", "--teacher-weights", str(resnet56_weights),
              "--limit", "100", "--batch-size", "50", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    assert "top-1" in res.output and "mean per-class" in res.output
    report = json.loads(res.stdout)  # stdout holds only the JSON report; the table goes to stderr
    assert report["images"] == 100 and report["skipped"] == 0 and report["top1"] >= 0.8
    assert set(report["per_class"]) == {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                        "ship", "truck"}
    assert report["teacher"]["kind"] == "cifar_resnet" and report["cache"]["computed"] == 100
    again = run("--data", str(cifar_small_dir), "--teacher-weights", str(resnet56_weights), "--limit", "100",
                "--device", "cpu", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["cache"]["hits"] == 100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "no_such_net"], "unknown teacher model 'no_such_net'"),
        (["--teacher-weights", "/nonexistent/w.th"], "teacher weights file not found"),
        (["--teacher-kind", "clip"], "invalid teacher option kind"),
    ],
)
def test_teacher_eval_bad_teacher_exits_2(run, cifar_small_dir: Path, args: list[str], message: str) -> None:
    res = run("--data", str(cifar_small_dir), "--limit", "10", *args)
    assert res.exit_code == 2, res.output
    errors = _error_lines(res.output)
    assert len(errors) == 1 and message in errors[0], res.output
    assert "Traceback" not in res.output


def test_teacher_eval_bad_data_exits_2(run, tmp_path: Path, resnet20_weights: Path) -> None:
    res = run("--data", str(tmp_path / "missing"))
    assert res.exit_code == 2 and "dataset not found" in _error_lines(res.output)[0]
    from PIL import Image

    for cls in ("apple", "pear"):
        (tmp_path / "fruit" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "fruit" / cls / "a.png")
    res = run("--data", str(tmp_path / "fruit"), "--teacher", "cifar_resnet20", "--teacher-weights",
              str(resnet20_weights))
    assert res.exit_code == 2
    assert "class names do not match the teacher's: dataset has apple, pear (2 classes)" in _error_lines(res.output)[0]
