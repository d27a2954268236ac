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
from ..preprocess import PreprocessSpec
from .timm_backbone import (TimmBackbone, _pretrained_cfg, create_timm_backbone, read_state_dict, resolve_pretrained,
                            timm_preprocess)

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


def create_backbone(name: str, **kwargs: Any) -> tuple[nn.Module, int]:
    """Build a backbone by name (``cifar_resnet20``, or any timm model such as ``resnet18``)."""
    name = name.removeprefix("timm/")
    if name in _BACKBONES:
        return _BACKBONES[name](**kwargs)
    import timm

    if not timm.is_model(name):
        raise ModelError(f"unknown model {name!r}: not a built-in backbone ({', '.join(list_backbones())}) "
                         "nor a timm model")
    return create_timm_backbone(name, **kwargs)


def default_student_preprocess(arch: str) -> PreprocessSpec:
    """A student's default eval preprocessing: timm's pretrained config for timm models, CIFAR's 32 px otherwise."""
    name = arch.removeprefix("timm/")
    if name not in _BACKBONES:
        import timm

        if timm.is_model(name) and _pretrained_cfg(name) is not None:
            return timm_preprocess(name=name)
    return PreprocessSpec(size=32, resize_size=32)


def create_student(
    arch: str,
    num_classes: int,
    method: str = "dho",
    heads: tuple[str, ...] | None = None,
    weights: str | Path | None = None,
    **arch_kwargs: Any,
) -> Student:
    """Build a student; ``weights`` optionally initialises the backbone (heads stay fresh): a local file, a timm
    pretrained name (``mobilenetv3_small_100.lamb_in1k``) or an ``hf-hub:`` id found in timm's local cache."""
    if heads is None:
        if method not in HEADS_BY_METHOD:
            raise ModelError(f"unknown method {method!r}; choose from {', '.join(HEADS_BY_METHOD)}")
        heads = HEADS_BY_METHOD[method]
    backbone, dim = create_backbone(arch, **arch_kwargs)
    if weights is not None:
        load_backbone_weights(backbone, weights, arch)
    student = Student(backbone, dim, num_classes, heads)
    student.spec = StudentSpec(arch=arch, num_classes=num_classes, heads=tuple(heads), feature_dim=dim,  # type: ignore[assignment]
                               arch_kwargs=arch_kwargs)
    return student


def student_from_spec(spec: StudentSpec | dict[str, Any]) -> Student:
    spec = StudentSpec.model_validate(spec)
    return create_student(spec.arch, spec.num_classes, heads=spec.heads, **spec.arch_kwargs)


def load_backbone_weights(backbone: nn.Module, path: str | Path, arch: str | None = None) -> None:
    """Load pretrained backbone weights, ignoring classifier keys; a shape mismatch is a clear error.

    ``path`` is a local file, else (for timm backbones) a pretrained reference resolved by
    :func:`~distill.models.timm_backbone.resolve_pretrained` in timm's cache.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        ref = str(path)
        looks_remote = ref.startswith("hf-hub:") or ("/" not in ref and not file.suffix.lower() in (".pt", ".pth", ".th",
                                                                                                     ".bin", ".safetensors"))
        if not (isinstance(backbone, TimmBackbone) and looks_remote):
            raise CheckpointError(f"weights file not found: {path}")
        file = resolve_pretrained(arch or ref, ref)
    state = read_state_dict(file)
    target = backbone.net if isinstance(backbone, _CifarBackbone) else (
        backbone.model if isinstance(backbone, TimmBackbone) else backbone)
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"no tensor in {file} fits the backbone (wrong architecture?)")
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
