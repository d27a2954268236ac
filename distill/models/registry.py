"""Backbone registry: CIFAR ResNets built here, everything else resolved through timm.

``create_backbone(name)`` returns a module mapping images to pooled features and its feature size; a new
backbone registers itself with :func:`register_backbone` and never touches the factory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CheckpointError, ModelError
from .cifar_resnet import CifarResNet, load_cifar_resnet_state
from .student import HEADS_BY_METHOD, Student, StudentSpec

BackboneFn = Callable[..., tuple[nn.Module, int]]
_BACKBONES: dict[str, BackboneFn] = {}


def register_backbone(name: str) -> Callable[[BackboneFn], BackboneFn]:
    def deco(fn: BackboneFn) -> BackboneFn:
        _BACKBONES[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def _cifar_factory(depth: int) -> BackboneFn:
    def build(**kw: Any) -> tuple[nn.Module, int]:
        net = CifarResNet(depth=depth, num_classes=0, **kw)
        return _CifarBackbone(net), net.num_features

    return build


class _CifarBackbone(nn.Module):
    def __init__(self, net: CifarResNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    register_backbone(f"cifar_resnet{_depth}")(_cifar_factory(_depth))


def _timm_backbone(name: str, **kw: Any) -> tuple[nn.Module, int]:
    import timm

    if not timm.is_model(name):
        raise ModelError(
            f"unknown model {name!r}: not a built-in backbone ({', '.join(list_backbones())}) nor a timm model"
        )
    model = timm.create_model(name, pretrained=False, num_classes=0, **kw)
    return model, int(model.num_features)


def create_backbone(name: str, **kwargs: Any) -> tuple[nn.Module, int]:
    """Build a backbone by name (``cifar_resnet20``, or any timm model such as ``resnet18``)."""
    name = name.removeprefix("timm/")
    if name in _BACKBONES:
        return _BACKBONES[name](**kwargs)
    return _timm_backbone(name, **kwargs)


def create_student(
    arch: str,
    num_classes: int,
    method: str = "dho",
    heads: tuple[str, ...] | None = None,
    weights: str | Path | None = None,
    **arch_kwargs: Any,
) -> Student:
    """Build a student; ``weights`` optionally initialises the backbone from a local file (heads stay fresh)."""
    if heads is None:
        if method not in HEADS_BY_METHOD:
            raise ModelError(f"unknown method {method!r}; choose from {', '.join(HEADS_BY_METHOD)}")
        heads = HEADS_BY_METHOD[method]
    backbone, dim = create_backbone(arch, **arch_kwargs)
    if weights is not None:
        load_backbone_weights(backbone, weights)
    student = Student(backbone, dim, num_classes, heads)
    student.spec = StudentSpec(arch=arch, num_classes=num_classes, heads=tuple(heads), feature_dim=dim,  # type: ignore[assignment]
                               arch_kwargs=arch_kwargs)
    return student


def student_from_spec(spec: StudentSpec | dict[str, Any]) -> Student:
    spec = StudentSpec.model_validate(spec)
    return create_student(spec.arch, spec.num_classes, heads=spec.heads, **spec.arch_kwargs)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load pretrained backbone weights, ignoring classifier keys; a shape mismatch is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"cannot read weights {path}: {str(e).splitlines()[0]}") from None
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = backbone.net if isinstance(backbone, _CifarBackbone) else backbone
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"no tensor in {path} fits the backbone (wrong architecture?)")
    target.load_state_dict(usable, strict=False)


def create_cifar_resnet_classifier(depth: int, num_classes: int = 10, weights: str | Path | None = None) -> CifarResNet:
    """A full CIFAR ResNet classifier (teacher or reference), optionally with the shared pretrained weights."""
    model = CifarResNet(depth=depth, num_classes=num_classes)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        try:
            load_cifar_resnet_state(model, state)
        except RuntimeError as e:
            raise ModelError(f"{path} does not fit cifar_resnet{depth}: {str(e).splitlines()[0]}") from None
    return model
