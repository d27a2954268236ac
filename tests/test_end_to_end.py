"""Bounded real-data smoke test of the whole pipeline, as a user runs it: train -> export -> runtime -> bench.

Real CIFAR-10 JPEGs and the real ResNet-56 teacher; a tiny student and a handful of steps keep it near a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.realdata


def _cli(args: list[str]) -> str:
    from distill.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"distill {' '.join(args)} failed:\n{result.output}"
    return result.output


def test_train_export_runtime_bench(cifar_small_dir: Path, resnet56_weights: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _cli(["train", "--data", str(cifar_small_dir), "--teacher-kind", "cifar_resnet", "--teacher", "cifar_resnet56",
          "--teacher-weights", str(resnet56_weights), "--student", "cifar_resnet8", "--shots", "5",
          "--steps", "8", "--batch-size", "16", "--eval-every", "4", "--grad-conflict-every", "4", "--threads", "1",
          "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--out", str(run)])
    for name in ("config.yaml", "split.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt", "loss.png"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "dho" and summary["blend"]["prob"]["alpha"] is not None
    assert summary["teacher"]["val_acc"] > 0.7  # the real teacher on real images

    onnx = tmp_path / "model.onnx"
    _cli(["export", "onnx", "--checkpoint", str(run / "best.pt"), "--fold-heads", "-o", str(onnx)])

    from export.runtime import load_artifact

    art = load_artifact(onnx)
    jpegs = sorted(cifar_small_dir.rglob("*.jpg"))[:5]
    probs = art.classify(jpegs)
    assert probs.shape == (5, 10)
    assert art.meta.verification is not None and art.meta.class_names[0] == "airplane"
    from distill.blend import choose_blend  # the exported blend is the run's best recorded one

    assert art.meta.blend == choose_blend(summary["blend"]).blend

    out = tmp_path / "bench"
    _cli(["bench", "run", "-m", f"student={onnx}", "--backends", "ort-cpu", "--scenarios", "single-stream",
          "--data", str(cifar_small_dir), "--duration", "1", "--max-seconds", "60", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["schema_version"] and (out / "results.md").exists()
