"""Graph outputs -> class probabilities (numpy only): shared by the runtime and by export's verification.

What an artifact's outputs mean is recorded in its metadata (:mod:`export.metadata`): folded students output
``logits`` (softmaxed here) or ``probs`` (renormalised), unfolded two-head graphs output ``logits_ce`` and
``logits_kd`` (blended here with the recorded blend, :mod:`distill.blend`), embedding students output a unit
embedding (scored against a label set, :mod:`distill.vl.labelset`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from distill.blend import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_KIND, blend_probs, softmax

from .errors import ArtifactError
from .metadata import ArtifactMetadata

if TYPE_CHECKING:
    from distill.vl.labelset import LabelSet


def renormalize(probs: np.ndarray) -> np.ndarray:
    """Clip and renormalise rows of probabilities (an int8 graph quantises its ``probs`` output too)."""
    p = np.clip(np.asarray(probs, dtype=np.float32), 0.0, None)
    return p / np.maximum(p.sum(axis=1, keepdims=True), np.float32(1e-12))


def postprocess(outs: dict[str, np.ndarray], meta: ArtifactMetadata, labels: "LabelSet | None" = None) -> np.ndarray:
    """The graph's named outputs -> probabilities (N, C) float32, as the metadata says."""
    if meta.output_kind == "embedding":
        if labels is None:
            raise ArtifactError("an embedding artifact needs a label set to produce class probabilities")
        return labels.probs(outs[meta.output_names[0]])
    if meta.kind == "two_head":
        alpha = DEFAULT_ALPHA if meta.alpha is None else meta.alpha
        beta = DEFAULT_BETA if meta.beta is None else meta.beta
        return blend_probs(outs["logits_ce"], outs["logits_kd"], meta.blend or DEFAULT_KIND, alpha, beta)
    first = outs[meta.output_names[0]] if meta.output_names[0] in outs else next(iter(outs.values()))
    if meta.output_kind == "probs":
        return renormalize(first)
    return softmax(first)


__all__ = ["blend_probs", "postprocess", "renormalize", "softmax"]
