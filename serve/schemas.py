"""Typed response models: the OpenAPI schema generated from them is the service's contract."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


class Prediction(_Model):
    index: int = Field(..., description="Class index in the model's output.")
    label: str = Field(..., description="Class name.")
    score: float = Field(..., description="Probability (0..1) after the artifact's recorded post-processing.")


class ImageResult(_Model):
    index: int = Field(..., description="Position of the image in the request (0-based, upload order).")
    filename: Optional[str] = Field(None, description="The file name the client sent, if any.")
    predictions: list[Prediction] = Field(..., description="top_k classes, best first.")


class ModelRef(_Model):
    name: str
    version: str = Field(..., description="First 12 hex digits of the artifact file's SHA-256.")


class Timing(_Model):
    preprocess_ms: float = Field(..., description="Decoding and preprocessing of this request's images.")
    queue_ms: float = Field(..., description="Time this request's images waited for an inference call.")
    inference_ms: float = Field(..., description="Duration of the (shared) inference call.")
    total_ms: float = Field(..., description="From receiving the request to building the response.")
    batch_size: int = Field(..., description="Images in the inference call this request was part of.")


class ClassifyResponse(_Model):
    request_id: str
    model: ModelRef
    top_k: int
    results: list[ImageResult]
    timing: Timing


class ImageError(_Model):
    index: int = Field(..., description="Position of the bad image in the request (0-based).")
    filename: Optional[str] = None
    status: int = Field(..., description="HTTP status this image alone would have got.")
    error: str


class ErrorResponse(_Model):
    detail: str = Field(..., description="Human-readable reason.")
    request_id: Optional[str] = None
    errors: list[ImageError] = Field(default_factory=list, description="Per-image problems (classify only).")


class Health(_Model):
    status: Literal["ok", "loading", "draining", "failed"]
    ready: bool
    detail: Optional[str] = None


class InputSpec(_Model):
    kind: Literal["float", "uint8"] = Field(..., description="float: NCHW normalised; uint8: NHWC in-graph norm.")
    shape: list[Any] = Field(..., description="Model input shape, batch axis first (dynamic).")
    dtype: str
    preprocess: dict[str, Any] = Field(..., description="The preprocessing spec recorded in the artifact.")


class BatchingInfo(_Model):
    max_batch: int
    max_wait_ms: float
    adaptive_wait: bool
    queue_size: int
    batch_sizing: str = "fixed"
    effective_max_batch: Optional[int] = Field(
        None, description="The batch limit in force: max_batch, or what auto sizing chose at warm-up.")
    ms_per_image: Optional[dict[str, float]] = Field(
        None, description="Auto sizing: measured per-image inference wall ms by batch size.")


class LabelsInfo(_Model):
    """The label set an embedding (open-vocabulary) model classifies with: replaceable without re-export."""

    source: str = Field(..., description="File path it was loaded from, or 'upload'.")
    sha256: str = Field(..., description="SHA-256 of the label-set file's bytes.")
    num_classes: int
    embed_dim: int
    tau: float
    teacher: Optional[dict[str, Any]] = None
    loaded_at: float = Field(..., description="Unix time it was loaded.")


class ModelInfo(_Model):
    name: str
    version: str
    sha256: str
    file: str = Field(..., description="Artifact file name (no directory).")
    kind: str
    backend: str
    providers: list[str] = Field(..., description="Execution providers really in use.")
    precision: str
    output_kind: str
    num_classes: int
    classes: list[str]
    input: InputSpec
    blend: Optional[str] = None
    alpha: Optional[float] = None
    beta: Optional[float] = None
    teacher: Optional[dict[str, Any]] = None
    verification: Optional[dict[str, Any]] = Field(None, description="Fold/verification report from export.")
    checkpoint_sha256: Optional[str] = None
    tool_version: Optional[str] = None
    batching: BatchingInfo
    limits: dict[str, int]
    labels: Optional["LabelsInfo"] = Field(None, description="Embedding models: the label set in use.")
