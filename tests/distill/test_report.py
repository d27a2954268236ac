"""`distill report`: the results table from run directories, and its errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from distill.cli import app


def _run(root: Path, name: str, method: str, seed: int, acc: float, labeled: int = 50) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"seed: {seed}\n")
    split = {"acc_ce": acc, "acc_kd": acc, "acc_blend_prob": acc, "acc_blend_logit": acc} if method == "dho" \
        else {"acc_shared": acc}
    (d / "summary.json").write_text(json.dumps({
        "method": method, "steps": 10, "data": {"labeled": labeled}, "student": {"arch": "cifar_resnet8"},
        "val": split, "test": split, "teacher": {"val_acc": 0.9, "test_acc": 0.8}, "grad_conflict_mean": 0.5}))
    (d / "metrics.jsonl").write_text(json.dumps({"event": "grad_conflict", "step": 5, "cosine": 0.5}) + "\n")
    return d


def test_table_means_over_seeds_and_plot(tmp_path: Path) -> None:
    _run(tmp_path, "a", "dho", 0, 0.40)
    _run(tmp_path, "b", "dho", 1, 0.42)
    _run(tmp_path, "c", "ce+kd", 0, 0.30)
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--plot", str(tmp_path / "gc.png"),
                                   "--out", str(tmp_path / "t.md")])
    assert res.exit_code == 0, res.output
    assert "| 50 | dho | 0,1 | 41.00 ± 1.41 |" in res.output and "| - | teacher | - | 80.00 |" in res.output
    assert (tmp_path / "gc.png").stat().st_size > 0 and (tmp_path / "t.md").read_text().startswith("| labeled")
    assert "| 50 | ce+kd | 0 | +10.00 | +10.00 | 1 of 1 |" in res.output  # paired by seed: only seed 0 is shared


def test_plot_has_one_panel_per_label_budget(tmp_path: Path) -> None:
    from PIL import Image

    from distill.report import find_runs, plot_grad_conflict

    _run(tmp_path, "a", "dho", 0, 0.40, labeled=50)
    _run(tmp_path, "b", "ce+kd", 0, 0.30, labeled=500)
    one = plot_grad_conflict(find_runs([tmp_path / "a"]), tmp_path / "one.png")
    two = plot_grad_conflict(find_runs([tmp_path]), tmp_path / "two.png")
    with Image.open(one) as a, Image.open(two) as b:
        assert b.width == 2 * a.width and b.height == a.height


def test_no_runs_and_corrupt_summary_are_one_line_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "no finished run directories" in res.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    res = CliRunner().invoke(app, ["report", str(bad)])
    assert res.exit_code == 2 and "is not valid JSON" in res.output
