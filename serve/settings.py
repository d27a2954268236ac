"""Serving settings: one pydantic-settings model, read from ``DISTILL_SERVE_*`` environment variables.

The CLI (``distill serve`` / ``python -m serve``) passes its options as init values, which take precedence over
the environment; the container is configured with ``-e DISTILL_SERVE_MODEL=/models/model.onnx`` and friends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from distill.preprocess import DEFAULT_MAX_PIXELS

ENV_PREFIX = "DISTILL_SERVE_"


class ServeSettings(BaseSettings):
    """Everything the server can be told. Every field is also ``DISTILL_SERVE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    model: Optional[Path] = Field(None, description="Artifact to serve (.onnx or .engine with its sidecar).")
    host: str = Field("127.0.0.1", description="Bind address (use 0.0.0.0 in a container).")
    port: int = Field(8000, ge=0, le=65535)
    max_batch: int = Field(16, ge=1, le=1024, description="Most images per inference call; 1 disables batching.")
    max_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="Longest time the oldest queued image waits for a batch to fill."
    )
    adaptive_wait: bool = Field(
        True,
        description="Wait for a batch to fill only while other requests are still being received/decoded "
        "(a lone request is dispatched at once); False always waits up to max_wait_ms.",
    )
    queue_size: int = Field(256, ge=1, description="Most images waiting for inference; beyond it: 503 + Retry-After.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503 responses.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest accepted image file, in bytes.")
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="Largest request body (all files together), in bytes."
    )
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Decoded-pixel cap per image (bomb guard).")
    max_images_per_request: int = Field(16, ge=1, le=1024)
    inline_decode_bytes: int = Field(
        32 * 1024, ge=0,
        description="Requests whose files total at most this many bytes are decoded on the event loop (cheaper "
        "than a thread hop for thumbnails); larger ones in a worker thread. 0: always in a thread.",
    )
    default_top_k: int = Field(5, ge=1)
    intra_op_threads: Optional[int] = Field(None, ge=1, description="onnxruntime intra-op threads (None: ORT default).")
    providers: Optional[list[str]] = Field(None, description="onnxruntime execution providers (None: best available).")
    warmup: int = Field(3, ge=0, description="Warm-up inference calls (batch 1 and max_batch) before ready.")
    drain_timeout_s: float = Field(30.0, ge=0, description="How long shutdown waits for in-flight requests.")
    log_level: str = Field("info")
    access_log: bool = Field(True)

