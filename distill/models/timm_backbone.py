"""timm models as student backbones, through timm's own head API, plus their data config and pretrained weights.

The pooled feature is ``forward_head(forward_features(x), pre_logits=True)`` and its size is ``head_hidden_size``:
for models with a pre-logits stage (MobileNetV3/V4, LCNet, GhostNet: a 1x1 conv after pooling) that is the
wider vector, not ``num_features``. Pretrained weights are looked up in timm's own caches (Hugging Face hub cache
or torch hub) and never downloaded: offline, the error names the file to provide.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelError
from ..preprocess import PreprocessSpec


class TimmBackbone(nn.Module):
    """A timm model without its classifier (``num_classes=0``); ``forward`` returns the pre-logits feature."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)  # type: ignore[arg-type]
        self._register_load_state_dict_pre_hook(_unprefixed_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # type: ignore[operator]


def _unprefixed_keys(state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Checkpoints written before the wrapper hold ``backbone.<key>``; map them to ``backbone.model.<key>``."""
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + "model.")]:
        state[prefix + "model." + key[len(prefix):]] = state.pop(key)


def create_timm_backbone(name: str, **kwargs: Any) -> tuple[nn.Module, int]:
    import timm

    if not timm.is_model(name):
        raise ModelError(f"unknown model {name!r}: not a timm model")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as e:  # e.g. img_size for a model that does not take it
        raise ModelError(f"timm model {name} cannot be built with {kwargs}: {e}") from None
    backbone = TimmBackbone(model)
    return backbone, backbone.feature_dim


def _pretrained_cfg(name: str) -> Any:
    """timm's pretrained config for ``arch`` or ``arch.tag`` (None when timm has none)."""
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name.removeprefix("timm/"))
    except Exception:  # noqa: BLE001 - unknown names/tags raise several types across timm versions
        return None


def timm_preprocess_from_config(dc: dict[str, Any]) -> PreprocessSpec:
    """A timm data config (input size, crop_pct, crop_mode, interpolation, mean/std) as our PreprocessSpec."""
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
        raise ModelError("only 3-channel (RGB) timm models are supported")
    return PreprocessSpec(size=int(h), resize_size=max(int(h), math.floor(h / crop_pct)), resize_mode=mode,
                          interpolation=interp, mean=mean, std=std)  # type: ignore[arg-type]


def timm_preprocess(model: nn.Module | None = None, name: str | None = None) -> PreprocessSpec:
    """timm's resolved data config (``resolve_data_config``) of a built model or of a model name."""
    from timm.data import resolve_data_config

    if model is not None:
        return timm_preprocess_from_config(resolve_data_config(model=model))
    cfg = _pretrained_cfg(name or "")
    if cfg is None:
        raise ModelError(f"timm has no pretrained config for {name!r}")
    return timm_preprocess_from_config(resolve_data_config(pretrained_cfg=cfg.to_dict()))


def resolve_pretrained(arch: str, ref: str) -> Path:
    """``ref`` = a timm name (``mobilenetv3_small_100`` or ``.lamb_in1k``) or ``hf-hub:org/repo``: the cached file.

    Looks only in the local caches timm itself uses (Hugging Face hub cache, torch hub ``checkpoints/``); offline and
    absent, a :class:`ModelError` names the file to download elsewhere and pass as a local ``--student-weights``.
    """
    if ref.startswith("hf-hub:"):
        hub_id, url, names = ref.removeprefix("hf-hub:"), None, ["model.safetensors", "pytorch_model.bin"]
    else:
        cfg = _pretrained_cfg(ref)
        if cfg is None:
            raise CheckpointError(f"student weights {ref!r}: not a file, a timm pretrained name (e.g. {arch}) "
                                  "nor an hf-hub: id")
        hub_id, url = cfg.hf_hub_id, cfg.url
        names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else ["model.safetensors",
                                                                                     "pytorch_model.bin"]
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in names:
            hit = try_to_load_from_cache(hub_id, fname)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
        raise ModelError(f"pretrained weights {ref} are not in the local Hugging Face cache and nothing is downloaded "
                         f"here: get {names[0]} from https://huggingface.co/{hub_id} and pass it as "
                         "--student-weights FILE")
    if url:
        hit = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if hit.is_file():
            return hit
        raise ModelError(f"pretrained weights {ref} are not cached ({hit}) and nothing is downloaded here: get "
                         f"{url} and pass it as --student-weights FILE")
    raise ModelError(f"timm lists no pretrained weights for {ref!r}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch state dict (``state_dict``/``model`` wrappers unwrapped)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read weights {path}: {str(e).splitlines()[0]}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"cannot read weights {path}: {str(e).splitlines()[0]}") from None
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
