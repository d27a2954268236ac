"""Each defect a new user hit (issue 17, "Smaller defects"), fed the input that broke it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import CheckpointError, ConfigError


def test_version_flag_prints_the_version() -> None:
    from distill import __version__

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == __version__ and "Missing command" not in res.output


def _summary_run(root: Path, name: str, method: str, with_test: bool) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("seed: 0\n")
    split = ({"acc_ce": 0.4, "acc_kd": 0.5, "acc_blend_prob": 0.55, "acc_blend_logit": 0.52} if method == "dho"
             else {"acc_ce": 0.3})
    (d / "summary.json").write_text(json.dumps({
        "method": method, "steps": 10, "data": {"labeled": 20}, "student": {"arch": "cifar_resnet8"},
        "val": split, "test": split if with_test else {},
        "teacher": {"val_acc": 0.9, "test_acc": None}, "grad_conflict_mean": None}))
    (d / "metrics.jsonl").write_text("")
    return d


def test_report_on_runs_without_a_test_split(tmp_path: Path) -> None:
    _summary_run(tmp_path, "dho", "dho", with_test=False)  # data.test_fraction=0 used to raise KeyError 'acc_ce'
    _summary_run(tmp_path, "ce", "ce", with_test=False)
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "| 20 | dho (val: 1 run(s) without a test split) | 0 | 55.00 |" in res.output
    assert "| 20 | ce (val: 1 run(s) without a test split) | 0 | 30.00 |" in res.output
    assert "| - | teacher | - | - | (val 90.00) |" in res.output and "nan" not in res.output


def test_teacher_accuracy_prints_a_dash_not_nan() -> None:
    from distill.commands.train import _pct

    assert _pct(float("nan")) == "-" and _pct(None) == "-" and _pct(0.5) == "50.00"


def test_yaml_syntax_error_keeps_the_line(tmp_path: Path) -> None:
    from distill.config import load_config
    from distill.train import TrainConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  root: x\nlr: [1e-3\nsteps: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML \(line \d+, column \d+\)"):
        load_config(TrainConfig, bad)


def test_yaml_validation_reports_every_bad_field_with_its_line(tmp_path: Path) -> None:
    from distill.config import load_config
    from distill.train import TrainConfig

    cfg = tmp_path / "run.yaml"
    cfg.write_text("data:\n  root: x\n  shots: many\nlr: -1\nsteps: 3\nepochs: zero\nmethod: ce\n")
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, cfg, {"seed": "abc"})
    msg = str(e.value)
    assert msg.startswith("invalid config values (4):")
    assert "data.shots (run.yaml line 3):" in msg and "lr (run.yaml line 4):" in msg
    assert "epochs (run.yaml line 6):" in msg and "seed (from --set/option):" in msg


@pytest.mark.parametrize("content, why", [
    (b"", "is empty (0 bytes)"),
    (b"hello world", "is not a PyTorch checkpoint (it starts with b'hell'"),
    (b"PK\x03\x04" + b"\0" * 64, "is truncated or damaged"),
    (b"\x80\x04}q\x00.", "is a plain pickle, not a torch.save archive"),
])
def test_corrupt_checkpoint_messages_say_what_is_wrong(tmp_path: Path, content: bytes, why: str) -> None:
    from distill.checkpoint import load_checkpoint

    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert why in str(e.value) and "expected best.pt or last.pt written by `distill train`" in str(e.value)
    assert "(101)" not in str(e.value) and "pop from empty list" not in str(e.value)


def test_checkpoint_with_python_objects_is_named_as_such(tmp_path: Path) -> None:
    from distill.checkpoint import load_checkpoint

    path = tmp_path / "model.pt"
    torch.save({"fn": print}, path)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors"):
        load_checkpoint(path)
    good = tmp_path / "trunc.pt"
    torch.save({"a": torch.zeros(100)}, good)
    good.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="is truncated or damaged"):
        load_checkpoint(good)


def test_decode_errors_name_the_input_not_a_bytesio_repr(tmp_path: Path) -> None:
    from distill.preprocess import ImageDecodeError, load_image

    with pytest.raises(ImageDecodeError) as e:
        load_image(b"not an image at all")
    assert "BytesIO" not in str(e.value) and "(19 bytes)" in str(e.value)
    f = tmp_path / "x.jpg"
    f.write_bytes(b"junk")
    with pytest.raises(ImageDecodeError) as e:
        load_image(f)
    assert str(f) in str(e.value) and "_io." not in str(e.value)


def test_help_texts() -> None:
    runner = CliRunner()
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "(default: 10)" in train and "(default: dho)" in train and "(default: cifar_resnet20)" in train
    serve = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "serve [OPTIONS]" in serve and "COMMAND" not in serve
    assert "(default: 16)" in serve and "(default: adaptive)" in serve and "[16]" not in serve
    bench = runner.invoke(app, ["bench", "compare", "--help"], env={"COLUMNS": "200"}).output
    assert "%%" not in bench
    http = runner.invoke(app, ["bench", "http", "--help"], env={"COLUMNS": "200"}).output
    assert "/v1/classify" in http


def test_bench_run_takes_a_tar_like_train_and_eval(tmp_path: Path, cifar_small_dir: Path, tiny_artifact: Path) -> None:
    tar = tmp_path / "data.tar"
    with tarfile.open(tar, "w") as tf:
        for cls in sorted(p for p in cifar_small_dir.iterdir() if p.is_dir()):
            for img in sorted(cls.iterdir())[:2]:
                tf.add(img, arcname=f"{cls.name}/{img.name}")
    res = CliRunner().invoke(app, ["bench", "run", "-m", str(tiny_artifact), "--backends", "ort-cpu",
                                   "--scenarios", "single-stream", "--count", "3", "--warmup", "1",
                                   "--data", str(tar), "--max-images", "4", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "not found" not in res.output
    report = json.loads((tmp_path / "b" / "results.json").read_text())
    assert json.dumps(report).count("accuracy") > 0


def test_verification_header_names_the_folder_the_images_are_in(tmp_path: Path, real_jpegs: list[Path]) -> None:
    import shutil

    from export.verify import select_images

    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "validation" / "cat").mkdir(parents=True)
    shutil.copy(real_jpegs[0], tmp_path / "validation" / "cat" / "a.jpg")
    ckpt = {"data": {"root": str(tmp_path / "train"), "val": [["../validation/cat/a.jpg", 0]]}}
    files, labels, source = select_images(ckpt, ["cat"])
    assert labels == [0] and source == f"checkpoint validation split ({tmp_path / 'validation' / 'cat'})"
    assert "train" not in source
