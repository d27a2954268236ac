"""`distill bench decode`: fast (DCT-scaled) vs full decode on labeled real photos, native and 12 MP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def test_decode_bench_reports_accuracy_agreement_and_speed(tiny_artifact, cifar_small_dir, tmp_path, bench_cli):
    data = tmp_path / "data"
    for cls in ("cat", "dog"):
        (data / cls).mkdir(parents=True)
        for f in sorted((cifar_small_dir / cls).glob("*.jpg"))[:3]:
            shutil.copy(f, data / cls / f.name)
    res = bench_cli.invoke("decode", "--model", str(tiny_artifact), "--data", str(data), "--max-12mp", "2",
                           "--train-images", "1", "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "out/results.json").read_text())
    native, phone = rep["sets"]["native"], rep["sets"]["12mp"]
    assert native["images"] == 6 and phone["images"] == 2
    # 32x32 photos are never DCT-scaled: the fast path is the full decode, so every prediction agrees
    assert native["agreement"] == 1.0 and native["top1_fast"] == native["top1_full"]
    assert 0.0 <= phone["agreement"] <= 1.0 and phone["preprocess_full_ms_p50"] > 0
    assert rep["train_loader"]["status"] == "ok" and rep["train_loader"]["decode_side"] == 53


def test_decode_bench_refuses_unknown_classes(tiny_artifact, clothing_small_dir, tmp_path, bench_cli):
    res = bench_cli.invoke("decode", "--model", str(tiny_artifact), "--data", str(clothing_small_dir),
                           "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "not classes of the model" in res.output
