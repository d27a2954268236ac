"""The CLI: typer app (mounted as ``distill export``) and ``python -m export``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from export.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_python_m_export_help():
    out = subprocess.run([sys.executable, "-m", "export", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and "onnx" in out.stdout and "tensorrt" in out.stdout
    out = subprocess.run([sys.executable, "-m", "export", "onnx", "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0 and "--fold-heads" in out.stdout and "--quantize" in out.stdout


def test_cli_fold_heads_export(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "cli.onnx"
    res = runner.invoke(app, ["onnx", "-c", str(tiny_checkpoint), "--fold-heads", "--blend", "prob", "-o", str(out),
                              "--max-verify-images", "20", "--input", "uint8", "--quantize", "fp16", "--json"])
    assert res.exit_code == 0, res.output
    assert out.exists()
    assert "blend: prob" in res.output and "PASSED" in res.output
    payload = json.loads(res.stdout[res.stdout.index("{"):])
    assert payload["blend"] == "prob" and payload["report"]["passed"] and payload["paths"]["fp32"] == str(out)
    # uint8 input + fp16: the converter's Cast(uint8 -> float) is repaired, the variant loads and agrees
    assert payload["report"]["variants"]["fp16"]["top1_agreement_fp32"] >= 0.95
    assert (tmp_path / "cli.fp16.onnx").exists()


def test_cli_errors_are_one_line(tiny_checkpoint: Path, make_checkpoint, tmp_path: Path):
    cases = [
        (["onnx", "-c", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "m.onnx")], "checkpoint not found"),
        (["onnx", "-c", str(tiny_checkpoint), "--opset", "12", "-o", str(tmp_path / "m.onnx")], "unsupported opset 12"),
        (["onnx", "-c", str(make_checkpoint("cli_ce", method="ce", blend=None)), "--fold-heads", "-o",
          str(tmp_path / "m.onnx")], "two heads"),
        (["onnx", "-o", str(tmp_path / "m.onnx")], "exactly one of --checkpoint"),
    ]
    for args, msg in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        err = res.stderr if res.stderr_bytes is not None else res.output
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], err
    assert not (tmp_path / "m.onnx").exists()


def test_distill_export_is_mounted():
    from distill.cli import app as distill_app

    res = runner.invoke(distill_app, ["export", "--help"])
    assert res.exit_code == 0 and "onnx" in res.output


def test_teacher_export_takes_an_archive_as_train_does(tmp_path: Path, resnet20_weights: Path, cifar_small_dir: Path,
                                                       monkeypatch):
    """--verify-dir/--calib-dir accept a .tar.gz of an image folder (the quickstart passes the shared CIFAR tar)."""
    import tarfile

    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(cifar_small_dir, arcname="train")
    res = runner.invoke(app, ["onnx", "--teacher", "cifar_resnet20", "--teacher-kind", "cifar_resnet",
                              "--teacher-weights", str(resnet20_weights), "--verify-dir", str(tar),
                              "--max-verify-images", "20", "-o", str(tmp_path / "t.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout[res.stdout.index("{"):])
    assert payload["report"]["passed"] and payload["report"]["images"] == 20
    bad = tmp_path / "notes.txt"
    bad.write_text("not images")
    res = runner.invoke(app, ["onnx", "--teacher", "cifar_resnet20", "--teacher-kind", "cifar_resnet",
                              "--teacher-weights", str(resnet20_weights), "--verify-dir", str(bad),
                              "-o", str(tmp_path / "u.onnx")])
    assert res.exit_code == 2 and "neither a directory nor a .tar" in res.output
