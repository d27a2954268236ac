"""The edge students people pick: each trains 2 DHO steps, folds, exports and passes the fp32 parity gate.

Randomly initialised at 32 px (tiny, fast); the feature is timm's pre-logits (``head_hidden_size``), which is wider
than ``num_features`` for the MobileNet/LCNet/GhostNet family (the shape crash this guards against).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.checkpoint import save_checkpoint
from distill.errors import CheckpointError, ModelError
from distill.losses import method_loss
from distill.models import create_student, resolve_pretrained
from distill.preprocess import PreprocessSpec

EDGE_STUDENTS = ["resnet18", "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv4_conv_small", "lcnet_050",
                 "ghostnet_100", "efficientnet_b0", "convnext_atto", "fastvit_t8", "vit_tiny_patch16_224"]
CLASSES = ["a", "b", "c"]
SIZE = 32


def _image_folder(root: Path, per_class: int, seed: int) -> Path:
    """A labeled ImageFolder of CLASSES x ``per_class`` small random RGB PNGs (40x48)."""
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir()
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def verify_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labeled ImageFolder of 6 small RGB images (export verifies parity on real decoded files)."""
    return _image_folder(tmp_path_factory.mktemp("verify"), 2, seed=0)


@pytest.mark.parametrize("arch", EDGE_STUDENTS)
def test_edge_student_trains_folds_exports_with_parity(arch: str, verify_dir: Path, tmp_path: Path) -> None:
    from export import export_onnx

    kwargs = {"img_size": SIZE} if arch.startswith("vit") else {}
    torch.manual_seed(0)
    student = create_student(arch, len(CLASSES), "dho", **kwargs)
    timm_model = student.backbone.model
    assert student.feature_dim == getattr(timm_model, "head_hidden_size", timm_model.num_features)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student.train()
    for step in range(2):
        x = torch.randn(8, 3, SIZE, SIZE)
        heads = student(x)
        out_l = {k: v[:4] for k, v in heads.items()}
        out_u = {k: v[4:] for k, v in heads.items()}
        terms = method_loss("dho", out_l, torch.tensor([0, 1, 2, 0]), torch.randn(4, 3), out_u, torch.randn(4, 3))
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        assert torch.isfinite(terms.total), (arch, step)
    ckpt = tmp_path / "student.pt"
    save_checkpoint(ckpt, {
        "student": student.spec.model_dump(mode="json"), "model": student.state_dict(), "class_names": CLASSES,
        "preprocess": PreprocessSpec(size=SIZE, resize_size=SIZE).model_dump(), "method": "dho",
        "blend": {"logit": {"alpha": 0.5, "beta": 1.0, "val_acc": 0.5}, "prob": {"alpha": 0.5, "beta": 1.0,
                                                                                 "val_acc": 0.4}},
        "teacher": None, "data": {}, "config": {}, "epoch": 0, "step": 2,
    })
    # opset 17 = the TorchScript exporter: the same fold + parity gate at a seventh of the dynamo exporter's CPU time
    result = export_onnx(ckpt, tmp_path / "student.onnx", fold_heads=True, verify_dir=verify_dir, opset=17,
                         verbose=False)
    assert result.report["passed"], (arch, result.report["problems"])
    assert result.metadata.model_name == arch and result.report["images"] == 6


def test_timm_student_default_preprocessing_comes_from_timm() -> None:
    from distill.train.config import StudentConfig

    spec = StudentConfig(arch="fastvit_t8").preprocess_spec()  # timm: 256 px, crop 0.9, bicubic
    assert (spec.size, spec.resize_size, spec.interpolation) == (256, 284, "bicubic")
    small = StudentConfig(arch="mobilenetv3_small_100", size=112).preprocess_spec()  # size given: timm's crop/interp
    assert (small.size, small.resize_size, small.interpolation) == (112, 128, "bicubic")
    assert StudentConfig(arch="cifar_resnet20").preprocess_spec() == PreprocessSpec(size=32, resize_size=32)
    import timm
    from timm.data import resolve_data_config

    for arch in ("vit_tiny_patch16_224", "mobilenetv3_small_100"):  # size, crop and normalisation: timm's own
        dc = resolve_data_config(model=timm.create_model(arch, pretrained=False))
        spec = StudentConfig(arch=arch).preprocess_spec()
        assert (spec.size, spec.mean, spec.std, spec.interpolation) == (dc["input_size"][1], tuple(dc["mean"]),
                                                                         tuple(dc["std"]), dc["interpolation"]), arch


def test_pretrained_student_weights_resolve_through_timms_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match=r"not in the local Hugging Face cache .* get model.safetensors from "
                                         r"https://huggingface.co/timm/lcnet_050.ra2_in1k and pass it as"):
        create_student("lcnet_050", 3, "dho", weights="lcnet_050")
    with pytest.raises(CheckpointError, match="weights file not found"):
        create_student("lcnet_050", 3, "dho", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="not a file, a timm pretrained name"):
        resolve_pretrained("lcnet_050", "lcnet_050.no_such_tag")

    torch.manual_seed(1)
    donor = create_student("lcnet_050", 3, "dho").backbone.model
    snap = tmp_path / "hub" / "models--timm--lcnet_050.ra2_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(snap / "model.safetensors"))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    for ref in ("lcnet_050", "lcnet_050.ra2_in1k", "hf-hub:timm/lcnet_050.ra2_in1k"):
        torch.manual_seed(2)
        s = create_student("lcnet_050", 3, "dho", weights=ref)
        assert torch.equal(s.backbone.model.conv_stem.weight, donor.conv_stem.weight), ref
    local = tmp_path / "local.pth"
    torch.save(donor.state_dict(), local)  # a local file keeps working
    assert torch.equal(create_student("lcnet_050", 3, "dho", weights=local).backbone.model.conv_stem.weight,
                       donor.conv_stem.weight)


def test_checkpoints_from_before_the_head_api_still_load() -> None:
    torch.manual_seed(0)
    s = create_student("resnet18", 3, "dho")
    legacy = {k.replace("backbone.model.", "backbone."): v for k, v in s.state_dict().items()}
    again = create_student("resnet18", 3, "dho")
    again.load_state_dict(legacy)
    assert torch.equal(again.backbone.model.conv1.weight, s.backbone.model.conv1.weight)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labeled ImageFolder of 3 classes x 10 small RGB images: enough for train/val/test splits with 2 shots."""
    return _image_folder(tmp_path_factory.mktemp("folder"), 10, seed=1)


@pytest.mark.parametrize("how", ["option", "config"])
def test_vit_student_image_size_as_a_user_types_it(how: str, small_folder: Path, tmp_path: Path, run_cli) -> None:
    """``distill train --student vit_tiny_patch16_224 --image-size 32`` (or ``student.size: 32`` in the YAML):
    the ViT is built with ``img_size=32`` (its position embeddings; without it step 0 fails with 'Input height (32)
    doesn't match model (224)'), trains 2 steps, and its checkpoint exports and passes the parity gate."""
    import json

    out = tmp_path / "run"
    size_args = ["--image-size", "32"]
    if how == "config":
        cfg = tmp_path / "vit.yaml"
        cfg.write_text("student:\n  arch: vit_tiny_patch16_224\n  size: 32\n")
        size_args = ["--config", str(cfg)]
    else:
        size_args = ["--student", "vit_tiny_patch16_224", *size_args]
    code, _, err = run_cli(["train", "--data", str(small_folder), "--method", "ce", *size_args, "--steps", "2",
                            "--batch-size", "4", "--shots", "2", "--cache-dir", str(tmp_path / "cache"),
                            "--no-progress", "--out", str(out)])
    assert code == 0, err[-3000:]
    assert "; no teacher;" in err  # a supervised run has no teacher cache to report
    from distill.checkpoint import load_checkpoint, student_from_checkpoint

    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["student"]["arch_kwargs"] == {"img_size": 32} and ckpt["preprocess"]["size"] == 32
    assert ckpt["step"] == 2
    student, _ = student_from_checkpoint(ckpt)  # rebuilt from the spec at 32 px (export and eval do this)
    assert tuple(student.backbone.model.patch_embed.img_size) == (32, 32)
    code, out_json, err = run_cli(["export", "onnx", "-c", str(out / "best.pt"), "-o", str(tmp_path / "vit.onnx"),
                                   "--opset", "17", "--verify-dir", str(small_folder), "--max-verify-images", "6",
                                   "--json"])
    assert code == 0, err[-3000:]
    report = json.loads(out_json)["report"]
    assert report["passed"] and report["images"] == 6


def test_fixed_size_timm_models_get_img_size_and_convnets_do_not() -> None:
    from distill.models.registry import input_size_kwargs

    assert input_size_kwargs("vit_tiny_patch16_224", 32) == {"img_size": 32}
    assert input_size_kwargs("timm/deit_tiny_patch16_224", 64) == {"img_size": 64}
    assert input_size_kwargs("vit_tiny_patch16_224", 224) == {}  # its own size: nothing to change
    assert input_size_kwargs("vit_tiny_patch16_224", None) == {}
    assert input_size_kwargs("mobilenetv3_small_100", 32) == {}  # a convnet takes any size
    assert input_size_kwargs("cifar_resnet20", 32) == {}


def test_pretrained_vit_weights_are_resampled_to_the_students_size(tmp_path: Path) -> None:
    """Weights of a 224 px ViT into a 32 px student: the position embeddings are resampled by timm's own filter
    (as ``timm.create_model(..., pretrained=True, img_size=32)`` does), not silently left random."""
    import timm
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(3)
    donor = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    file = tmp_path / "vit224.pth"
    torch.save(donor.state_dict(), file)
    s = create_student("vit_tiny_patch16_224", 3, "ce", weights=file, input_size=32)
    got = s.backbone.model.pos_embed
    assert got.shape == (1, 1 + 2 * 2, 192)
    want = resample_abs_pos_embed(donor.pos_embed, (2, 2), num_prefix_tokens=1)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(s.backbone.model.patch_embed.proj.weight, donor.patch_embed.proj.weight)


def test_timm_student_without_image_size_trains_at_timms_size(small_folder: Path, tmp_path: Path, run_cli) -> None:
    """``distill train --student lcnet_050`` with no ``--image-size``: the run uses timm's pretrained data config
    (224 px, its crop, interpolation and mean/std), not CIFAR's 32 px (which it once did silently)."""
    import timm
    from timm.data import resolve_data_config

    from distill.checkpoint import load_checkpoint

    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(small_folder), "--method", "ce", "--student", "lcnet_050",
                            "--steps", "1", "--batch-size", "4", "--shots", "2", "--cache-dir", str(tmp_path / "c"),
                            "--no-progress", "--set", "plots=false", "--out", str(out)])
    assert code == 0, err[-3000:]
    spec = load_checkpoint(out / "best.pt")["preprocess"]
    dc = resolve_data_config(model=timm.create_model("lcnet_050", pretrained=False))
    assert spec["size"] == dc["input_size"][1] == 224
    assert (tuple(spec["mean"]), tuple(spec["std"]), spec["interpolation"]) == (tuple(dc["mean"]), tuple(dc["std"]),
                                                                                dc["interpolation"])
