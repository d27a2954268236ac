"""The benchmark entry points run (tiny sizes on CPU) and report what the docs quote."""

from __future__ import annotations

import json
from pathlib import Path

from distill.scale import bench_cache, bench_train


def test_bench_teacher_cache_tiny(cifar_small_dir: Path, resnet20_weights: Path, tmp_path: Path) -> None:
    res = bench_cache.main(["--data", str(cifar_small_dir), "--teacher", "cifar_resnet20", "--teacher-weights",
                            str(resnet20_weights), "--student", "cifar_resnet8", "--images", "20", "--batch-size", "10",
                            "--threads", "1", "--out", str(tmp_path / "b"), "--json", str(tmp_path / "r.json")])
    assert res["images"] == 20 and res["cache_build"]["rows"] == 20
    assert res["epoch_with_teacher"]["images_per_s"] > 0 and res["epoch_cached"]["images_per_s"] > 0
    assert res["speedup"] == res["epoch_with_teacher"]["seconds"] / res["epoch_cached"]["seconds"]
    assert json.loads((tmp_path / "r.json").read_text())["speedup"] == res["speedup"]


def test_bare_training_loop_tiny(tmp_path: Path) -> None:
    res = bench_train.main(["--arch", "cifar_resnet8", "--image-size", "16", "--batch-size", "4", "--steps", "2",
                            "--warmup", "1", "--device", "cpu", "--json", str(tmp_path / "bare.json")])
    assert res["batch"] == 8 and res["amp"] == "off" and res["images_per_s"] > 0
    assert json.loads((tmp_path / "bare.json").read_text())["arch"] == "cifar_resnet8"
