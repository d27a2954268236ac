"""``TrainConfig``: one run of ``distill train`` as data (YAML file < ``--set`` < explicit options).

Flat named values with defaults, nanoGPT style, grouped into the ``data``, ``teacher`` and ``student`` sections.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..data.config import DataConfig
from ..preprocess import PreprocessSpec
from ..teachers.config import TeacherConfig
from ..vl.config import VLConfig

Method = Literal["dho", "ce", "kd", "ce+kd", "vl-distill"]


class StudentConfig(BaseModel):
    """The student network and its (eval-time) preprocessing, which is written into every checkpoint."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field("cifar_resnet20", description="cifar_resnet{8,14,20,32,44,56,110} or any timm model name.")
    weights: str | None = Field(None, description="Initialise the backbone (heads start fresh): a local file, a timm "
                                                  "pretrained name (mobilenetv3_small_100.lamb_in1k) or an hf-hub: id, "
                                                  "found in timm's local cache (never downloaded).")
    init: Literal["random", "teacher"] = Field(
        "random", description="random, or teacher: start the backbone from the teacher's stem and evenly spaced "
                              "residual blocks (a CIFAR ResNet teacher and student of one width; heads start fresh).")
    size: int | None = Field(None, gt=0, description="Square input side; default: the model's own (timm pretrained "
                                                     "config; 32 for CIFAR ResNets).")
    crop_pct: float | None = Field(None, gt=0, le=1, description="Eval resize to size/crop_pct, then center crop.")
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @model_validator(mode="after")
    def _one_init(self) -> "StudentConfig":
        if self.init == "teacher" and self.weights:
            raise ValueError("student.init=teacher and student.weights both initialise the backbone: choose one")
        return self

    def preprocess_spec(self) -> PreprocessSpec:
        """Unset fields come from the architecture's own data config (``default_student_preprocess``)."""
        from ..models import default_student_preprocess

        base = default_student_preprocess(self.arch)
        if all(v is None for v in (self.size, self.crop_pct, self.interpolation, self.mean, self.std)):
            return base
        crop = self.crop_pct if self.crop_pct is not None else base.size / base.resize_size
        return PreprocessSpec.for_size(self.size or base.size, crop, resize_mode=base.resize_mode,
                                       interpolation=self.interpolation or base.interpolation,
                                       mean=self.mean or base.mean, std=self.std or base.std)


class TrainConfig(BaseModel):
    """Everything one training run needs. ``steps`` (if set) wins over ``epochs``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    data: DataConfig
    teacher: TeacherConfig | None = Field(None, description="Not needed by --method ce (a supervised run).")
    student: StudentConfig = Field(default_factory=StudentConfig)
    method: Method = "dho"
    vl: VLConfig = Field(default_factory=VLConfig, description="Open-vocabulary distillation (--method vl-distill).")

    # budget: an epoch is one pass over the unlabeled pool (the labeled set when there is none), for every method
    epochs: int = Field(10, gt=0)
    steps: int | None = Field(None, gt=0, description="Total optimisation steps; overrides epochs.")
    max_steps: int = Field(0, ge=0, description="Stop (checkpointed, resumable) after this many steps; 0 = no limit.")
    batch_labeled: int = Field(64, gt=0)
    batch_unlabeled: int = Field(64, ge=0)

    # optimisation (AdamW, linear warm-up then cosine decay, as docs/method.md)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.03, ge=0, lt=1, description="Share of the steps spent in linear warm-up.")
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(0.0, ge=0, description="Clip the global gradient norm; 0 = off.")

    # losses
    lambda_: float = Field(0.5, alias="lambda", ge=0, le=1, description="Weight of CE; KD gets 1 - lambda.")
    temperature: float = Field(2.0, gt=0)

    # augmentation of student inputs (teacher logits are always of the un-augmented image)
    augment: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = True

    # teacher outputs
    teacher_cache: bool = Field(True, description="Cache teacher logits on disk (under data.cache_dir).")
    teacher_batch_size: int = Field(256, gt=0)
    teacher_store: Path | None = Field(None, description="Store written by `distill cache-teacher` (logits): "
                                                         "memory-mapped, the teacher is never built.")

    # evaluation, logging, checkpoints
    eval_every: int = Field(0, ge=0, description="Validate every N steps; 0 = once per epoch.")
    eval_batch_size: int = Field(256, gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(0, ge=0, description="Write last.pt every N steps; 0 = once per epoch.")
    grad_conflict_every: int = Field(0, ge=0, description="Log the CE/KD backbone-gradient cosine every N steps.")
    plots: bool = True
    progress: bool = True
    progress_every: int = Field(0, ge=0, description="In a log (not a terminal): a progress line every N steps; "
                                                    "0 = every max(log_every, steps/50).")
    tensorboard: bool = Field(True, description="Write TensorBoard event files to <out>/tensorboard.")
    mlflow_uri: str | None = Field(None, description="Also log to an MLflow run at this tracking URI "
                                                     "(file:./mlruns works offline).")
    mlflow_experiment: str = "distill"

    # runtime
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps.")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="Mixed precision: auto (bf16/fp16 on "
                                                    "CUDA, fp32 on a CPU), off, bf16 (CUDA, or a CPU with AMX / "
                                                    "AVX-512 BF16 / ARM BF16), fp16 (CUDA).")
    channels_last: Literal["auto"] | bool = Field("auto", description="NHWC memory format for the student: true, "
                                                  "false or auto (on for CPU bf16, where it was measured faster).")
    decoded_cache: bool = Field(True, description="Decode small, same-size training images once into a "
                                                  "memory-mapped uint8 array in data.cache_dir and augment tensors.")
    deterministic: bool = True
    threads: int | None = Field(None, gt=0, description="torch intra-op threads; default: torch's choice.")
    seed: int = 0
    out_dir: Path = Path("runs/dho")

    @model_validator(mode="before")
    @classmethod
    def _teacher_from_store(cls, data: Any) -> Any:
        """With ``teacher_store`` the store describes the teacher: no teacher section is needed."""
        if isinstance(data, dict) and data.get("teacher_store") and data.get("teacher") is None:
            data = {**data, "teacher": {}}
        return data

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr:g}) must not exceed lr ({self.lr:g})")
        if self.teacher is None and self.student.init == "teacher":
            raise ValueError("student.init=teacher needs a teacher to start from: --teacher NAME --teacher-weights FILE")
        if self.teacher is None and self.method != "ce":
            raise ValueError(f"method {self.method} needs a teacher: --teacher NAME --teacher-weights FILE "
                             "(or --teacher-store DIR); only --method ce trains without one")
        if self.teacher_store is not None and self.method == "vl-distill":
            raise ValueError("teacher_store holds logits for dho/kd/ce+kd; vl-distill uses the teacher's embedding cache")
        if self.data.unlabeled_shards is not None and self.teacher_store is None:
            raise ValueError("data.unlabeled_shards needs teacher_store (--teacher-store DIR from distill cache-teacher "
                             "--shards): the teacher is never run on a streamed pool")
        return self

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up, then cosine from ``lr`` to ``min_lr`` (or constant), like nanoGPT's ``get_lr``."""
        warmup = int(self.warmup_fraction * total)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "constant" or total <= warmup:
            return self.lr
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)
