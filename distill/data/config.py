"""``DataConfig``: where the images are and how they are split (a section of the run config)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


def default_cache_dir() -> Path:
    """``$DISTILL_CACHE_DIR`` or ``~/.cache/distill``: extracted archives, scan results and teacher outputs."""
    env = os.environ.get("DISTILL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distill"


class DataConfig(BaseModel):
    """Data section of a run config; every field can be overridden on the command line (``--set data.shots=4``)."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(..., description="ImageFolder directory, or a .tar/.tar.gz/.tgz archive of one.")
    subdir: str | None = Field(None, description="Folder inside root to use, e.g. 'train'.")
    unlabeled_dir: Path | None = Field(None, description="Extra folder (or archive) of unlabeled images, any layout.")
    unlabeled_shards: str | None = Field(None, description="The unlabeled pool as WebDataset-style shards (a folder, "
                                         "a .tar, a glob or shard-{000000..000099}.tar), streamed; replaces the "
                                         "root's leftover images; needs teacher_store.")
    shuffle_buffer: int = Field(1000, ge=0, description="Shuffle buffer (images) of each unlabeled-shard reader.")
    val_dir: Path | None = Field(None, description="Labeled validation folder; otherwise carved from root.")
    val_subdir: str | None = Field(None, description="Folder inside val_dir to use, e.g. 'validation'.")
    labeled_fraction: float = Field(0.01, gt=0, le=1, description="Labeled share of each class (of all its images).")
    shots: int | None = Field(None, gt=0, description="Labeled images per class; overrides labeled_fraction.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each class carved out for validation.")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each class carved out for the final test.")
    seed: int = 0
    cache_dir: Path = Field(default_factory=default_cache_dir)
    max_images: int | None = Field(None, gt=0, description="Stratified cap on the labeled pool (smoke tests).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (and image-verification threads).")

    @model_validator(mode="after")
    def _check_fractions(self) -> "DataConfig":
        if self.unlabeled_shards is not None and self.unlabeled_dir is not None:
            raise ValueError("give the unlabeled pool as unlabeled_dir or as unlabeled_shards, not both")
        carved = self.test_fraction + (0.0 if self.val_dir else self.val_fraction)
        if carved >= 1.0:
            raise ValueError(
                f"test_fraction + val_fraction = {carved:g} leaves no training images (must be < 1)"
            )
        if self.shots is None and carved + self.labeled_fraction > 1.0 + 1e-9:
            raise ValueError(
                f"test_fraction + val_fraction + labeled_fraction = {carved + self.labeled_fraction:g} exceeds 1"
            )
        return self
