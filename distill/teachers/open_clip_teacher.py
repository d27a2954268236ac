"""open_clip zero-shot teacher: logits = 100 * cos(image embedding, class text embedding).

Class text embeddings come from ``open_clip.build_zero_shot_classifier`` over a prompt template set (open_clip's
own lists), optionally with per-class descriptions. ``name`` is an open_clip model name (``ViT-B-32``), a
``local-dir:``/``hf-hub:`` reference, or a path to an open_clip model-config ``.json`` (used by the tests for a
tiny random model). ``weights`` is a pretrained tag or a local checkpoint path; ``None`` means random weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import CheckpointError, ConfigError, ModelError
from ..preprocess import PreprocessSpec
from .base import Teacher, file_digest, read_class_names
from .config import TeacherConfig
from .prompts import build_prompts, load_descriptions, load_templates, prompt_name

log = logging.getLogger(__name__)
_SCHEMES = ("local-dir:", "hf-hub:")


def is_open_clip_name(name: str) -> bool:
    import open_clip

    return name.startswith(_SCHEMES) or name.lower().endswith(".json") or name.replace("/", "-") in open_clip.list_models()


def _register_config_file(path: Path) -> tuple[str, str]:
    """Register a model-config JSON with open_clip; returns (model name, sha256 of the config)."""
    import open_clip

    if not path.is_file():
        raise ModelError(f"open_clip model config not found: {path}")
    try:
        cfg = json.loads(path.read_text())
    except ValueError as e:
        raise ModelError(f"open_clip model config {path} is not valid JSON: {e}") from None
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ModelError(f"{path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    open_clip.add_model_config(path)
    return path.stem, hashlib.sha256(path.read_bytes()).hexdigest()


def _resolve_pretrained(model_name: str, weights: str | None) -> tuple[str | None, str | None]:
    """(value for open_clip's ``pretrained``, identity of the weights)."""
    import open_clip

    if weights is None:
        log.warning("open_clip teacher %s has no weights: randomly initialised (only useful for tests)", model_name)
        return None, None
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path), file_digest(path)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if weights in tags:
        return weights, f"tag:{weights}"
    if "/" in weights or "\\" in weights or path.suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt"):
        raise CheckpointError(f"open_clip weights file not found: {path}")
    raise ModelError(f"unknown pretrained tag {weights!r} for open_clip model {model_name}"
                     f" (known: {', '.join(tags) or 'none'}; or pass a local checkpoint path)")


def open_clip_preprocess(model: torch.nn.Module) -> PreprocessSpec:
    """The model's ``PreprocessCfg`` (size, mean, std, interpolation, resize_mode) as our PreprocessSpec."""
    import open_clip

    pc: dict[str, Any] = dict(open_clip.get_model_preprocess_cfg(model))
    size = pc.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ModelError(f"non-square open_clip input size {tuple(size)} is not supported")
        size = size[0]
    mode = pc.get("resize_mode", "shortest")
    if mode == "longest":
        log.warning("open_clip resize_mode 'longest' (letterbox) is approximated by 'shortest' + center crop")
    interp = pc.get("interpolation", "bicubic")
    if interp not in ("nearest", "bilinear", "bicubic", "lanczos"):
        interp = "bicubic"
    return PreprocessSpec(size=int(size), resize_size=int(size), interpolation=interp,
                          resize_mode="squash" if mode == "squash" else "shortest",
                          mean=tuple(pc.get("mean", (0.48145466, 0.4578275, 0.40821073))),  # type: ignore[arg-type]
                          std=tuple(pc.get("std", (0.26862954, 0.26130258, 0.27577711))))  # type: ignore[arg-type]


class OpenClipTeacher(Teacher):
    """Zero-shot CLIP classifier over the dataset's classes (prompts from templates + descriptions)."""

    kind = "open_clip"

    def __init__(self, cfg: TeacherConfig, dataset_class_names: Sequence[str]) -> None:
        import open_clip

        name, config_digest = cfg.name, None
        if name.lower().endswith(".json"):
            name, config_digest = _register_config_file(Path(name).expanduser())
        elif not name.startswith(_SCHEMES) and name.replace("/", "-") not in open_clip.list_models():
            raise ModelError(f"unknown open_clip model {name!r} (see open_clip.list_models(), e.g. ViT-B-32)")
        pretrained, weights_id = _resolve_pretrained(name, cfg.weights)
        try:
            model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu")
        except (ModelError, CheckpointError):
            raise
        except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError/KeyError/OSError for bad weights
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"cannot load open_clip model {name} with weights {cfg.weights}: {first}") from None
        tokenizer = open_clip.get_tokenizer(name)
        if weights_id is None:  # random init: identify by the actual parameters so caches never mix two inits
            h = hashlib.sha256()
            for t in model.state_dict().values():
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            weights_id = f"random:{h.hexdigest()}"

        keys = list(dataset_class_names)
        if cfg.class_names_file:
            names = read_class_names(cfg.class_names_file)
            if len(names) != len(keys):
                raise ConfigError(f"class names file has {len(names)} names, the dataset has {len(keys)} classes")
        else:
            names = [prompt_name(k) for k in keys]
        if len(set(names)) != len(names):
            raise ConfigError("prompt class names must be unique")
        prompts = build_prompts(names, load_templates(cfg.templates), load_descriptions(cfg.descriptions), keys)
        super().__init__(cfg.name, keys, open_clip_preprocess(model),
                         {"weights": weights_id, "model_config": config_digest, "templates": cfg.templates,
                          "prompts": prompts})
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prompt_names = names
        by_name = dict(zip(names, prompts))
        templates = [lambda c, j=j: by_name[c][j] for j in range(len(prompts[0]))]
        weights = open_clip.build_zero_shot_classifier(model, tokenizer, names, templates, device="cpu")
        self.register_buffer("text_weights", weights.float(), persistent=False)  # (D, C), unit columns

    @property
    def prompts(self) -> list[list[str]]:
        return self._identity_parts["prompts"]

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (N, D)."""
        return self.model.encode_image(x, normalize=True).float()

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, D) of arbitrary prompts (e.g. new classes, later issues)."""
        tokens = self.tokenizer(list(prompts)).to(self.text_weights.device)
        return self.model.encode_text(tokens, normalize=True).float()

    def _native_logits(self, x: torch.Tensor) -> torch.Tensor:
        return 100.0 * self.image_embeddings(x) @ self.text_weights
