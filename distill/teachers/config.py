"""``TeacherConfig``: which teacher, its weights, and (for CLIP) how class names become prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TeacherKind = Literal["cifar_resnet", "timm", "open_clip", "distill", "auto"]


class TeacherConfig(BaseModel):
    """Teacher section of a run config (``--set teacher.templates=openai``)."""

    model_config = ConfigDict(extra="forbid")

    kind: TeacherKind = Field("auto", description="auto infers it: a `distill train` checkpoint as weights -> distill, "
                                                  "cifar_resnet<N>, open_clip names/configs, else timm.")
    name: str = Field("cifar_resnet56", description="cifar_resnet56, a timm name, an open_clip name or config .json "
                                                    "(ignored by kind distill: the checkpoint names its architecture).")
    weights: str | None = Field(None, description="Weights file; for open_clip a pretrained tag or a local checkpoint; "
                                                  "for distill a run's best.pt.")
    class_names_file: Path | None = Field(
        None, description="Classifier output names, one per line (cifar_resnet: CIFAR-10 order by default). "
                          "For open_clip: prompt names for the dataset's classes, in dataset order.")
    templates: str = Field("simple", description="'single', 'simple' (7), 'openai' (80) or a file, one template a line with {c}.")
    descriptions: Path | None = Field(None, description="YAML/JSON mapping class name -> description text (open_clip).")
    preprocess: dict[str, Any] | None = Field(
        None, description="Override the teacher's own preprocessing, any PreprocessSpec field: "
                          "--set teacher.preprocess.size=112 (resize_size follows, keeping the crop ratio).")
    device: str = "auto"
    batch_size: int = Field(256, gt=0)
