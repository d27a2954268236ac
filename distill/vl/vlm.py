"""Teachers seen as vision-language models: L2-normalised image embeddings and class ("text") embeddings.

* :class:`OpenClipVLM` wraps an :class:`~distill.teachers.OpenClipTeacher`: a class embedding is the mean of the
  text embeddings of its prompts (templates, optionally "a photo of a {name}. {description}"), re-normalised,
  exactly as ``open_clip.build_zero_shot_classifier`` builds the zero-shot head.
* :class:`ClassifierVLM` ("classifier-as-VLM") wraps a trained classifier (the CIFAR ResNets, timm models): its
  penultimate feature plays the image tower and the rows of its final linear layer play the class text
  embeddings. Choices, so the same code path treats it like CLIP:

  - rows are L2-normalised. A classifier's logit ``w_c . f + b_c`` mixes direction with the row norm
    ``|w_c|``, which acts as a per-class prior learnt on the training classes; CLIP scores a class by cosine only,
    and the student's loss (cos / tau) needs unit vectors. Normalising puts every class, including ones the student
    never trained on, on the same footing.
  - the bias is dropped: it is a class prior, not part of the class's direction; a text tower produces no bias,
    and a bias learnt with all classes present would leak information about the unseen ones.
  - image embeddings (post-ReLU pooled features, all >= 0) are L2-normalised as CLIP's are.

  The cost of these choices is measured, not assumed: :func:`classifier_scoring_report` gives the teacher's
  accuracy with its native logits and with cosine scoring (see docs/results.md).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError, ModelError
from ..teachers.base import Teacher


class VisionLanguageTeacher:
    """Interface: ``image_embeddings(x)`` (N, D) and ``class_embeddings(names)`` (C, D), both unit rows."""

    kind = "vlm"

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher

    @property
    def embed_dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """Hash of the teacher's towers (kind, name, weights, model config, preprocessing), NOT of its class names
        or prompts: a label set is valid exactly with a student distilled from the same embedding space."""
        parts = self.teacher._identity_parts
        payload = {"kind": self.teacher.kind, "name": self.teacher.name, "weights": parts.get("weights"),
                   "model_config": parts.get("model_config"),
                   "preprocess": self.teacher.preprocess.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """Identity of the embedding space (what a label set and an embedding checkpoint record)."""
        return {"adapter": self.kind, "kind": self.teacher.kind, "name": self.teacher.name,
                "identity": self.identity, "embed_dim": self.embed_dim}

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.teacher.image_embeddings(x).float(), dim=-1)

    def class_embeddings(self, names: Sequence[str], descriptions: dict[str, str] | None = None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover


class OpenClipVLM(VisionLanguageTeacher):
    kind = "open_clip"

    def __init__(self, teacher: Teacher, templates: str | None = None) -> None:
        super().__init__(teacher)
        self.templates = templates if templates is not None else getattr(teacher, "_identity_parts", {}).get(
            "templates", "single")

    @property
    def embed_dim(self) -> int:
        return int(self.teacher.text_weights.shape[0])  # type: ignore[union-attr]

    @torch.no_grad()
    def class_embeddings(self, names: Sequence[str], descriptions: dict[str, str] | None = None) -> torch.Tensor:
        from ..teachers.prompts import build_prompts, load_templates, prompt_name

        prompts = build_prompts([prompt_name(n) for n in names], load_templates(self.templates),
                                descriptions or {}, keys=list(names))
        rows = []
        for per_class in prompts:
            e = self.teacher.text_embeddings(per_class).mean(0)  # type: ignore[operator]
            rows.append(F.normalize(e, dim=-1))
        return torch.stack(rows).float().cpu()


def _final_linear(teacher: Teacher) -> torch.nn.Linear:
    net = getattr(teacher, "net", None)
    for attr in ("linear", "fc", "head", "classifier"):
        layer = getattr(net, attr, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
        inner = getattr(layer, "fc", None)  # timm heads wrap the Linear (e.g. head.fc)
        if isinstance(inner, torch.nn.Linear):
            return inner
    if net is not None and hasattr(net, "get_classifier"):
        layer = net.get_classifier()
        if isinstance(layer, torch.nn.Linear):
            return layer
    raise ModelError(f"teacher {teacher.name} has no final linear layer to use as class embeddings")


class ClassifierVLM(VisionLanguageTeacher):
    """Classifier-as-VLM: class embedding = normalised row of the final linear layer (bias dropped)."""

    kind = "classifier"

    def __init__(self, teacher: Teacher) -> None:
        super().__init__(teacher)
        self.linear = _final_linear(teacher)

    @property
    def embed_dim(self) -> int:
        return int(self.linear.weight.shape[1])

    @property
    def known_classes(self) -> list[str]:
        return list(self.teacher._native_names)

    @torch.no_grad()
    def class_embeddings(self, names: Sequence[str], descriptions: dict[str, str] | None = None) -> torch.Tensor:
        if descriptions:
            raise ConfigError(f"classifier-as-VLM teacher {self.teacher.name} has no text tower: class descriptions "
                              "need an open_clip teacher")
        known = self.known_classes
        bad = [n for n in names if n not in known]
        if bad:
            raise DataError(f"classifier-as-VLM teacher {self.teacher.name} has no class {', '.join(bad[:5])} "
                            f"(it knows {', '.join(known[:12])}); it cannot embed new class names")
        rows = self.linear.weight.detach().float().cpu()[[known.index(n) for n in names]]
        return F.normalize(rows, dim=-1)


def as_vlm(teacher: Teacher) -> VisionLanguageTeacher:
    """The adapter for ``teacher``'s kind (open_clip -> text tower; classifiers -> classifier rows)."""
    if teacher.kind == "open_clip":
        return OpenClipVLM(teacher)
    if teacher.kind in ("cifar_resnet", "timm"):
        return ClassifierVLM(teacher)
    raise ModelError(f"teacher kind {teacher.kind!r} cannot act as a vision-language teacher")


@torch.no_grad()
def classifier_scoring_report(teacher: Teacher, features: torch.Tensor, labels: torch.Tensor,
                              class_ids: Sequence[int]) -> dict[str, float]:
    """Top-1 accuracy among ``class_ids`` of a classifier teacher scored three ways, on raw penultimate
    ``features``: native logits (W f + b), dot product without bias, cosine with normalised rows and features."""
    lin = _final_linear(teacher)
    order = getattr(teacher, "_order", None)
    W, b = lin.weight.float().cpu(), lin.bias.float().cpu() if lin.bias is not None else None
    if order is not None:
        W, b = W[order], (b[order] if b is not None else None)
    ids = torch.as_tensor(list(class_ids))
    pos = {int(c): i for i, c in enumerate(ids.tolist())}
    keep = torch.tensor([int(y) in pos for y in labels.tolist()])
    f, y = features[keep].float(), torch.tensor([pos[int(v)] for v in labels[keep].tolist()])
    Ws = W[ids]
    bs = b[ids] if b is not None else torch.zeros(len(ids))
    acc = lambda s: float((s.argmax(-1) == y).float().mean()) if len(y) else float("nan")  # noqa: E731
    return {"native_logits": acc(f @ Ws.T + bs), "dot_no_bias": acc(f @ Ws.T),
            "cosine": acc(F.normalize(f, dim=-1) @ F.normalize(Ws, dim=-1).T)}
