"""Trained classifiers as teachers: the CIFAR ResNets of ../shared/models and any timm model + weights file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch

from ..errors import CheckpointError, ModelError
from ..preprocess import PreprocessSpec
from .base import Teacher, file_digest, read_class_names
from .config import TeacherConfig

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_NAME = re.compile(r"^cifar_resnet(\d+)$")


def _require_weights(cfg: TeacherConfig) -> Path:
    if not cfg.weights:
        raise ModelError(f"teacher {cfg.name!r} needs a weights file (--teacher-weights)")
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"teacher weights file not found: {path}")
    return path


class CifarResNetTeacher(Teacher):
    """ResNet-20/56 for 32x32 CIFAR images; inputs scaled to [0, 1] and ImageNet-normalised (models README)."""

    kind = "cifar_resnet"

    def __init__(self, cfg: TeacherConfig, dataset_class_names: Sequence[str] | None = None) -> None:
        from ..models import create_cifar_resnet_classifier

        m = _CIFAR_NAME.match(cfg.name)
        if not m or (int(m.group(1)) - 2) % 6:
            raise ModelError(f"unknown CIFAR ResNet {cfg.name!r}; use cifar_resnet<6n+2>, e.g. cifar_resnet56")
        weights = _require_weights(cfg)
        names = read_class_names(cfg.class_names_file) if cfg.class_names_file else CIFAR10_CLASSES
        try:
            net = create_cifar_resnet_classifier(int(m.group(1)), num_classes=len(names), weights=weights)
        except (ModelError, CheckpointError):
            raise
        except Exception as e:  # noqa: BLE001 - torch.load raises many types for bad files
            raise CheckpointError(f"cannot read teacher weights {weights}: {str(e).splitlines()[0][:160]}") from None
        spec = PreprocessSpec(size=32, resize_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        super().__init__(cfg.name, names, spec, {"weights": file_digest(weights), "weights_file": str(weights)})
        self.net = net.eval()

    def _native_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 64-d penultimate feature."""
        return self.net.forward_features(x).float()


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read teacher weights {path}: {str(e).splitlines()[0][:160]}") from None
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def timm_preprocess(model: torch.nn.Module) -> PreprocessSpec:
    """timm's resolved data config (input size, crop_pct, interpolation, mean/std) as our PreprocessSpec."""
    import math

    from timm.data import resolve_data_config

    dc = resolve_data_config(model=model)
    _, h, w = dc["input_size"]
    if h != w:
        raise ModelError(f"non-square input size {h}x{w} is not supported")
    crop_pct = float(dc.get("crop_pct") or 1.0)
    mode = "squash" if dc.get("crop_mode") == "squash" else "shortest"
    interp = dc.get("interpolation", "bilinear")
    if interp not in ("nearest", "bilinear", "bicubic", "lanczos"):
        interp = "bilinear"
    mean, std = tuple(dc["mean"]), tuple(dc["std"])
    if len(mean) != 3 or len(std) != 3:
        raise ModelError("only 3-channel (RGB) timm models can be teachers")
    return PreprocessSpec(size=int(h), resize_size=max(int(h), math.floor(h / crop_pct)), resize_mode=mode,
                          interpolation=interp, mean=mean, std=std)  # type: ignore[arg-type]


class TimmTeacher(Teacher):
    """Any timm architecture with a local weights file; classes from ``class_names_file`` or the dataset."""

    kind = "timm"

    def __init__(self, cfg: TeacherConfig, dataset_class_names: Sequence[str] | None = None) -> None:
        import timm

        name = cfg.name.removeprefix("timm/")
        if not timm.is_model(name):
            raise ModelError(f"unknown timm model {name!r}")
        weights = _require_weights(cfg)
        if cfg.class_names_file:
            names = read_class_names(cfg.class_names_file)
        elif dataset_class_names is not None:
            names = list(dataset_class_names)  # trusted: the weights' outputs follow the dataset's folder order
        else:
            raise ModelError("a timm teacher needs --class-names-file (the names of its outputs, in order)")
        net = timm.create_model(name, pretrained=False, num_classes=len(names))
        try:
            net.load_state_dict(_load_state(weights))
        except RuntimeError as e:
            raise ModelError(f"{weights} does not fit timm model {name} with {len(names)} classes: "
                             f"{str(e).splitlines()[0][:160]}") from None
        super().__init__(name, names, timm_preprocess(net),
                         {"weights": file_digest(weights), "weights_file": str(weights),
                          "class_names_source": "file" if cfg.class_names_file else "dataset"})
        self.net = net.eval()

    def _native_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits feature."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True).float()
