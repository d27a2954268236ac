"""Fold the DHO heads for deployment (torch).

* ``logit`` blend: ``h = alpha*h_ce + (1-alpha)/beta*h_kd`` is exactly one Linear layer,
  ``W = alpha*W_ce + (1-alpha)/beta*W_kd`` (bias likewise). The graph outputs ``logits``; the runtime softmaxes.
* ``prob`` blend (the paper's): ``p = alpha*softmax(h_ce) + (1-alpha)*softmax(h_kd/beta)`` is not one linear
  layer, but stays one matmul: Linear(d, 2C) with the kd rows pre-scaled by 1/beta, and the fixed softmax mix in
  the graph. The graph outputs ``probs``.
* unfolded (two-head): the graph outputs ``logits_ce`` and ``logits_kd``; the runtime applies the recorded blend.
* single-head checkpoints (``ce``, ``kd``, ``ce+kd``) export their one head (``logits``).
* embedding students (``vl-distill``, one head ``embed``) export the L2-normalised ``embedding``; the classifier
  is the label set shipped next to the artifact (see :mod:`distill.vl.labelset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from distill import blend as blends
from distill.blend import BlendChoice, search_blend
from distill.models import Student
from distill.preprocess import PreprocessSpec

from .errors import ExportError


@dataclass(frozen=True)
class ExportPlan:
    """What the exported graph computes; becomes part of the artifact metadata."""

    kind: Literal["student", "two_head", "teacher", "embedding"]
    output_kind: Literal["logits", "probs", "embedding"]
    output_names: tuple[str, ...]
    blend: BlendChoice | None
    head: str | None = None


# -- modules -------------------------------------------------------------------------------------------
def folded_logit_linear(w_ce: nn.Linear, w_kd: nn.Linear, alpha: float, beta: float) -> nn.Linear:
    """One Linear equal to ``alpha*ce(z) + (1-alpha)/beta*kd(z)`` (computed in float64, stored in float32)."""
    a, c = float(alpha), (1.0 - float(alpha)) / float(beta)
    lin = nn.Linear(w_ce.in_features, w_ce.out_features)
    with torch.no_grad():
        lin.weight.copy_((a * w_ce.weight.double() + c * w_kd.weight.double()).float())
        lin.bias.copy_((a * w_ce.bias.double() + c * w_kd.bias.double()).float())
    return lin


class LogitFolded(nn.Module):
    """backbone -> one Linear (the folded logit blend, or a single head) -> logits."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ProbBlendFolded(nn.Module):
    """backbone -> Linear(d, 2C) -> alpha*softmax(first C) + (1-alpha)*softmax(last C) -> probs."""

    def __init__(self, backbone: nn.Module, w_ce: nn.Linear, w_kd: nn.Linear, alpha: float, beta: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = w_ce.out_features
        self.alpha = float(alpha)
        self.head = nn.Linear(w_ce.in_features, 2 * w_ce.out_features)
        with torch.no_grad():
            self.head.weight.copy_(torch.cat([w_ce.weight, (w_kd.weight.double() / beta).float()], 0))
            self.head.bias.copy_(torch.cat([w_ce.bias, (w_kd.bias.double() / beta).float()], 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.backbone(x))
        c = self.num_classes
        return self.alpha * torch.softmax(h[:, :c], dim=1) + (1.0 - self.alpha) * torch.softmax(h[:, c:], dim=1)


class NormalizedEmbedding(LogitFolded):
    """backbone -> Linear(d, D) -> L2-normalise: an open-vocabulary student's embedding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(super().forward(x), dim=-1)


class TwoHead(nn.Module):
    """backbone -> (logits_ce, logits_kd), unfolded."""

    def __init__(self, backbone: nn.Module, w_ce: nn.Linear, w_kd: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.ce = w_ce
        self.kd = w_kd

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.backbone(x)
        return self.ce(z), self.kd(z)


class Uint8Input(nn.Module):
    """NHWC uint8 (resized and cropped by the caller) -> /255, (x-mean)/std, NCHW -> the wrapped model.

    Same arithmetic, in the same order, as :func:`distill.preprocess.normalize_uint8`.
    """

    def __init__(self, inner: nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 1, 1, 3))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 1, 1, 3))

    def forward(self, x: torch.Tensor) -> Any:
        x = x.to(torch.float32) / 255.0
        x = (x - self.mean) / self.std
        return self.inner(x.permute(0, 3, 1, 2))


# -- blend choice (the rule lives in distill.blend) -------------------------------------------------------
def choose_blend(ckpt: dict[str, Any], requested: str | None) -> BlendChoice | None:
    """The blend to fold: the requested one, else the best recorded one (:func:`distill.blend.choose_blend`).

    Returns None when the checkpoint records no usable blend (the caller then searches alpha/beta on data).
    """
    if requested is not None and requested not in blends.KINDS:
        raise ExportError(f"unknown blend {requested!r}; choose logit or prob")
    return blends.choose_blend(ckpt.get("blend"), requested)


# -- plan + module -------------------------------------------------------------------------------------
def heads_of(student: Student) -> tuple[str, ...]:
    return tuple(student.heads.keys())


def build_module(student: Student, *, fold_heads: bool, blend: BlendChoice | None) -> tuple[nn.Module, ExportPlan]:
    """The module to export (float NCHW input) and what it outputs."""
    heads = heads_of(student)
    two = "ce" in heads and "kd" in heads
    if heads == ("embed",):
        if fold_heads:
            raise ExportError("--fold-heads applies to DHO checkpoints; an embedding student has one head (embed)")
        return (NormalizedEmbedding(student.backbone, student.heads["embed"]).eval(),
                ExportPlan("embedding", "embedding", ("embedding",), None, head="embed"))
    if fold_heads:
        if not two:
            raise ExportError(f"--fold-heads needs a DHO checkpoint with heads ce and kd; this one has {', '.join(heads)}")
        if blend is None:
            raise ExportError("no blend (alpha, beta) to fold; the checkpoint records none and no labelled data was given")
        if blend.blend == "logit":
            lin = folded_logit_linear(student.heads["ce"], student.heads["kd"], blend.alpha, blend.beta)
            module: nn.Module = LogitFolded(student.backbone, lin)
            plan = ExportPlan("student", "logits", ("logits",), blend)
        else:
            module = ProbBlendFolded(student.backbone, student.heads["ce"], student.heads["kd"], blend.alpha, blend.beta)
            plan = ExportPlan("student", "probs", ("probs",), blend)
    elif two:
        module = TwoHead(student.backbone, student.heads["ce"], student.heads["kd"])
        plan = ExportPlan("two_head", "logits", ("logits_ce", "logits_kd"), blend)
    elif len(heads) == 1:
        module = LogitFolded(student.backbone, student.heads[heads[0]])
        plan = ExportPlan("student", "logits", ("logits",), None, head=heads[0])
    else:
        raise ExportError(f"cannot export a student with heads {', '.join(heads)} without folding")
    return module.eval(), plan


def with_input_kind(module: nn.Module, input_kind: str, spec: PreprocessSpec) -> nn.Module:
    if input_kind == "float":
        return module
    if input_kind == "uint8":
        return Uint8Input(module, spec).eval()
    raise ExportError(f"unknown input kind {input_kind!r}; choose float or uint8")


__all__ = ["BlendChoice", "ExportPlan", "LogitFolded", "NormalizedEmbedding", "ProbBlendFolded", "TwoHead",
           "Uint8Input", "build_module", "choose_blend", "folded_logit_linear", "heads_of", "search_blend",
           "with_input_kind"]
