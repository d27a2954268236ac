"""`distill train --method vl-distill` through the shared loop, CLI and run directory; the checkpoint exports."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from distill.checkpoint import load_checkpoint
from distill.cli import app


def _args(data: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--teacher-kind", "cifar_resnet", "--teacher", "cifar_resnet8",
            "--teacher-weights", str(weights), "--student", "cifar_resnet8", "--method", "vl-distill",
            "--steps", "4", "--batch-size", "8", "--eval-every", "2", "--no-progress", "--out", str(out),
            "--cache-dir", str(out.parent / "cache"), "--set", "data.labeled_fraction=0.4",
            "--set", "data.val_fraction=0.2", "--set", "data.test_fraction=0.2", "--set", "vl.kshot=2",
            "--set", "vl.kshot_trials=2", "--set", "plots=false", *extra]


def test_train_vl_distill_end_to_end(cifar_small_dir: Path, tiny_resnet_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = CliRunner().invoke(app, _args(cifar_small_dir, tiny_resnet_weights, out, "--unseen-classes", "cat,dog,ship",
                                      "--json"))
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "vl-distill" and summary["selected_by"] == "val acc_seen"
    assert {"seen_acc", "unseen_zeroshot", "unseen_2shot", "all_acc"} <= set(summary["test"])
    assert summary["vl"]["split"]["unseen"] == ["cat", "dog", "ship"]
    assert summary["vl"]["split"]["counts"]["unlabeled"] > 0  # seen-class folders of the unlabeled pool
    assert {"seen_acc", "unseen_zeroshot"} <= set(summary["vl"]["teacher"])
    ckpt = load_checkpoint(out / "best.pt")
    emb = ckpt["embedding"]
    assert ckpt["method"] == "vl-distill" and ckpt["student"]["heads"] == ["embed"]
    assert emb["class_embeddings"].shape == (10, 64) and emb["tau"] == 0.07 and emb["unseen"] == ["cat", "dog", "ship"]
    events = [json.loads(ln)["event"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert "vl_loss" in events and "val" in events
    assert (out / "config.yaml").read_text().count("vl:") == 1

    from export import export_onnx
    from export.runtime import load_artifact

    art_path = tmp_path / "vl.onnx"
    export_onnx(out / "best.pt", art_path, verbose=False, max_verify_images=20)
    art = load_artifact(art_path)
    assert art.meta.kind == "embedding" and art.class_names == ckpt["class_names"]
    assert torch.allclose(torch.from_numpy(art.labels.embeddings), emb["class_embeddings"], atol=1e-6)


def test_train_vl_distill_bad_unseen_classes(cifar_small_dir: Path, tiny_resnet_weights: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, _args(cifar_small_dir, tiny_resnet_weights, tmp_path / "bad",
                                      "--unseen-classes", "cat,unicorn"))
    assert r.exit_code == 2 and "unknown unseen class(es) unicorn" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


def test_eval_command_classifies_through_class_embeddings(vl_checkpoint: Path) -> None:
    r = CliRunner().invoke(app, ["eval", "--checkpoint", str(vl_checkpoint), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout[r.stdout.index("{"):])
    assert rep["method"] == "vl-distill" and rep["results"][0]["model"] == "h_embed"
    assert 0.0 <= rep["results"][0]["accuracy"] <= 1.0
