"""The benchmark entry points run (tiny sizes on CPU) and report what the docs quote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from distill.scale import bench_cache, bench_train


def test_bench_teacher_cache_tiny(cifar_small_dir: Path, resnet20_weights: Path, tmp_path: Path) -> None:
    """The two timed epochs do the same work: every image once each, and the store holds exactly the logits the live
    teacher computes for those images (so the speed-up compares like with like)."""
    import numpy as np
    import torch

    from distill.data import create_eval_transform, list_image_folder, resolve_dataset_root
    from distill.scale import open_teacher_store
    from distill.teachers import TeacherConfig, create_teacher

    res = bench_cache.main(["--data", str(cifar_small_dir), "--teacher", "cifar_resnet20", "--teacher-weights",
                            str(resnet20_weights), "--student", "cifar_resnet8", "--images", "20", "--batch-size", "8",
                            "--threads", "1", "--out", str(tmp_path / "b"), "--json", str(tmp_path / "r.json")])
    assert res["images"] == 20 and res["cache_build"]["rows"] == 20
    assert res["epoch_with_teacher"]["images"] == res["epoch_cached"]["images"] == 20
    assert np.isfinite(res["speedup"]) and res["speedup"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["epoch_cached"] == res["epoch_cached"]

    store = open_teacher_store(tmp_path / "b" / "store")
    names, _ = list_image_folder(resolve_dataset_root(cifar_small_dir))
    teacher = create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(resnet20_weights), templates="single"),
                             names)
    files = sorted(cifar_small_dir.rglob("*.jpg"))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    rows = [i for i, hit in enumerate(store.contains(digests)) if hit]
    assert len(rows) == 20
    tf = create_eval_transform(teacher.preprocess)
    with torch.no_grad():
        live = teacher.logits(torch.stack([tf(files[i]) for i in rows])).numpy()
    np.testing.assert_allclose(store.lookup([digests[i] for i in rows]), live, atol=1e-4)


def test_bare_training_loop_tiny(tmp_path: Path) -> None:
    res = bench_train.main(["--arch", "cifar_resnet8", "--image-size", "16", "--batch-size", "4", "--steps", "2",
                            "--warmup", "1", "--device", "cpu", "--json", str(tmp_path / "bare.json")])
    assert res["batch"] == 8 and res["amp"] == "off" and res["images_per_s"] > 0
    assert json.loads((tmp_path / "bare.json").read_text())["arch"] == "cifar_resnet8"
