"""Backbone registry: CIFAR ResNets built here, everything else resolved through timm.

``create_backbone(name)`` returns a module mapping images to pooled features and its feature size; a new
backbone registers itself with :func:`register_backbone` and never touches the factory.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

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


def input_size_kwargs(arch: str, size: int | None) -> dict[str, Any]:
    """``{"img_size": size}`` for a timm model whose input size is fixed when it is built (ViT, DeiT, Swin, LeViT,
    EfficientViT: position embeddings sized to the image) and ``size`` is not its default; convolutional models
    take any size and get nothing. Without it a ViT student trained at 32 px fails at step 0."""
    name = arch.removeprefix("timm/")
    if size is None or name in _BACKBONES:
        return {}
    cfg = _pretrained_cfg(name)
    if cfg is None or not getattr(cfg, "fixed_input_size", False) or tuple(cfg.input_size[1:]) == (size, size):
        return {}
    return {"img_size": int(size)}


def create_student(
    arch: str,
    num_classes: int,
    method: str = "dho",
    heads: tuple[str, ...] | None = None,
    weights: str | Path | None = None,
    input_size: int | None = None,
    **arch_kwargs: Any,
) -> Student:
    """Build a student; ``weights`` optionally initialises the backbone (heads stay fresh): a local file, a timm
    pretrained name (``mobilenetv3_small_100.lamb_in1k``) or an ``hf-hub:`` id found in timm's local cache.
    ``input_size`` is the side it will be fed (:func:`input_size_kwargs`; recorded in the spec's ``arch_kwargs``)."""
    arch_kwargs = {**input_size_kwargs(arch, input_size), **arch_kwargs}
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
    load_backbone_state(backbone, read_state_dict(file), str(file))


def backbone_module(backbone: nn.Module) -> nn.Module:
    """The network a backbone wraps (a CIFAR ResNet, a timm model), whose keys weights files use."""
    return backbone.net if isinstance(backbone, _CifarBackbone) else (
        backbone.model if isinstance(backbone, TimmBackbone) else backbone)


def load_backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the tensors of ``state`` that fit the backbone (classifier keys and misfits keep their init, with a
    warning); none fitting is a :class:`ModelError` naming ``source``."""
    target = backbone_module(backbone)
    own = target.state_dict()
    if isinstance(backbone, TimmBackbone) and any(k in own and own[k].shape != v.shape for k, v in state.items()):
        state = _timm_checkpoint_filter(state, target)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"no tensor in {source} fits the backbone (wrong architecture?)")
    misfit = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    if misfit:
        log.warning("%d tensor(s) of %s do not fit the backbone and keep their random init: %s", len(misfit), source,
                    ", ".join(misfit[:5]) + (" ..." if len(misfit) > 5 else ""))
    target.load_state_dict(usable, strict=False)


def _timm_checkpoint_filter(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's own ``checkpoint_filter_fn`` of the model's module (resamples a ViT's position embeddings to the
    size it was built at, as ``timm.create_model(..., pretrained=True, img_size=...)`` does); unchanged without one."""
    import sys

    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return dict(fn(dict(state), model))
    except Exception as e:  # noqa: BLE001 - a filter that cannot handle this file: fall back to shape matching
        log.warning("timm's checkpoint filter for %s failed (%s): loading the tensors that fit", type(model).__name__,
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return state


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
