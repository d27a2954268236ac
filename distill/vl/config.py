"""``VLConfig``: the ``vl`` section of a run config for ``--method vl-distill`` (torch-free).

Loss weights follow Li et al. (ICCV 2023), docs/method.md section 2: every weight 1 and tau = 0.07 is the paper's best
combination L_cls + L_mse + L_im-cst + L_vlprox; ``w_mse = w_imcst = w_vlprox = 0`` is its L_cls baseline.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class VLConfig(BaseModel):
    """Open-vocabulary distillation: which classes are held out, the losses and the few-shot evaluation."""

    model_config = ConfigDict(extra="forbid")

    unseen_classes: list[str] | None = Field(
        None, description="Classes held out of training (comma list on the CLI); default: a seeded share.")
    unseen_fraction: float = Field(0.5, gt=0, lt=1, description="Share of classes held out when no list is given.")
    split_seed: int = Field(0, description="Seed of the seen/unseen class split (when no list is given).")
    tau: float = Field(0.07, gt=0, description="Temperature of the cosine logits (L_cls, L_im-cst, L_vlprox, eval).")
    w_cls: float = Field(1.0, ge=0, description="CE over cos(student, seen-class text embeddings) / tau.")
    w_mse: float = Field(1.0, ge=0, description="Squared L2 distance of student and teacher image embeddings.")
    w_imcst: float = Field(1.0, ge=0, description="Bidirectional in-batch contrastive loss, student vs teacher.")
    w_vlprox: float = Field(1.0, ge=0, description="KL(teacher || student) over the teacher's top-k seen labels.")
    topk: int = Field(5, gt=0, description="L_vlprox: number of teacher top labels (capped at the seen classes).")
    kshot: int = Field(5, ge=0, description="Few-shot evaluation: labeled images per unseen class (0 = off).")
    kshot_trials: int = Field(10, gt=0, description="Few-shot evaluation: seeded support draws averaged.")

    @field_validator("unseen_classes", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",")]
        return v

    def loss_weights(self) -> dict[str, float]:
        return {"cls": self.w_cls, "mse": self.w_mse, "imcst": self.w_imcst, "vlprox": self.w_vlprox}
