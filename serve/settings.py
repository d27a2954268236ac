"""Serving settings: one pydantic-settings model, read from ``DISTILL_SERVE_*`` environment variables.

The CLI (``distill serve`` / ``python -m serve``) passes its options as init values, which take precedence over
the environment; the container is configured with ``-e DISTILL_SERVE_MODEL=/models/model.onnx`` and friends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Literal, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from distill.cpus import usable_cpus
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
    batch_sizing: Literal["auto", "fixed"] = Field(
        "auto",
        description="auto: at warm-up, time the model at batch 1, 2, 4, ... max_batch and batch only as far as it "
        "pays (the smallest size whose per-image time is within batch_tolerance of the best); a model whose "
        "per-image cost does not shrink with the batch (a small CNN on a CPU) then runs small calls, which is never "
        "slower than batching off. fixed: always fill batches up to max_batch.",
    )
    batch_tolerance: float = Field(
        0.10, ge=0, le=10, description="auto batch sizing: per-image time allowed above the best measured one."
    )
    batch_call_overhead_ms: float = Field(
        0.4, ge=0, le=1000,
        description="auto batch sizing: the server's own CPU cost per inference call (thread hand-off, futures), "
        "added to the measured time of each call (about 0.4-0.5 ms on the 2-core dev box).",
    )
    queue_size: int = Field(256, ge=1, description="Most images waiting for inference; beyond it: 503 + Retry-After.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503 responses.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest accepted image file, in bytes.")
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="Largest request body (all files together), in bytes."
    )
    refused_drain_bytes: int = Field(
        128 * 1024 * 1024, ge=0, description="A body refused as too large (413, sent before reading it) is read and "
        "dropped up to this many bytes before the connection closes, so a client still sending gets the 413 "
        "instead of a connection reset; memory stays bounded (nothing is kept).")
    refused_drain_s: float = Field(10.0, ge=0, description="Longest time spent draining a refused body.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Decoded-pixel cap per image (bomb guard).")
    max_images_per_request: int = Field(16, ge=1, le=1024)
    inline_decode_bytes: int = Field(
        32 * 1024, ge=0,
        description="Requests whose files total at most this many bytes are decoded on the event loop (cheaper "
        "than a thread hop for thumbnails); larger ones in a worker thread. 0: always in a thread.",
    )
    default_top_k: int = Field(5, ge=1)
    labels: Optional[Path] = Field(
        None, description="Embedding models: the label set (.labels.npz) to classify with; default: the one "
        "shipped next to the artifact (model.labels.npz).")
    admin_token: Optional[str] = Field(
        None, description="Bearer token for admin endpoints (POST /v1/labels); unset: they answer 403.")
    intra_op_threads: Optional[int] = Field(
        None, ge=1, description="onnxruntime intra-op threads (None: the CPUs the process may really use: affinity "
        "and the cgroup cpu.max quota of a container or pod, not the host's core count).")
    decode_threads: Optional[int] = Field(
        None, ge=1, le=256, description="Threads decoding uploads off the event loop, in arrival order (None: the "
        "usable CPUs, as for intra_op_threads).")
    decode_queue: int = Field(
        256, ge=1, description="Most uploads waiting for or in decoding; beyond it: 503 + Retry-After.")
    ort_spinning: bool = Field(
        False, description="onnxruntime thread-pool spinning. Off: idle inference threads sleep instead of burning the "
        "cores the event loop needs (with ORT's default threads, spinning doubled the server CPU per request).",
    )
    providers: Optional[list[str]] = Field(None, description="onnxruntime execution providers (None: best available).")
    workers: int = Field(
        1, ge=1, le=64, description="Server processes sharing one port, each with its own model, "
        "batcher and decode pool, and an equal share of the usable CPUs for its threads. One Python process is held "
        "back by its GIL under load (docs/results.md 14); a second one uses the cores that leaves idle. A supervisor "
        "owns the port and hands each connection to the ready worker with the fewest open ones, and replaces a "
        "worker that dies. Metrics are summed over the workers; label swaps (POST /v1/labels) need a single worker; "
        "--model only.")
    warmup: int = Field(3, ge=0, description="Warm-up inference calls (batch 1 and max_batch) before ready.")
    drain_timeout_s: float = Field(30.0, ge=0, description="How long shutdown waits for in-flight requests.")
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="Event loop (uvicorn --loop). auto: uvloop when installed. Not a dependency: measured here it "
        "saves ~5% server CPU with batching on but costs ~17% throughput with batching off (docs/results.md §3).")
    http: Literal["auto", "h11", "httptools"] = Field(
        "auto", description="HTTP/1.1 parser (uvicorn --http). auto: httptools when installed.")
    # -- model repository (distill serve --model-repository DIR), see serve/repository.py ------------------
    model_repository: Optional[Path] = Field(
        None, description="Serve every model of a Triton model repository (the layout 'distill export triton' "
        "writes) over the v2 protocol, instead of one --model; new versions are swapped in without downtime.")
    repository_versions: int = Field(
        1, ge=1, description="Versions served per model: the newest N (Triton's version_policy latest).")
    # -- security for a shared cluster (serve/security.py) ----------------------------------------------
    api_token: Optional[str] = Field(
        None, description="Bearer token required on every route except /health/*, /v2/health/* and /metrics; "
        "unset: no auth.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list in the environment; ['*'] any); "
        "empty: no CORS headers.")
    cors_allow_credentials: bool = Field(False, description="CORS: allow credentials (cookies, Authorization).")
    log_level: str = Field("info")
    access_log: bool = Field(True)

    def cpus_per_worker(self) -> int:
        """The CPUs this process may really use (affinity, cgroup quota), shared equally by the workers."""
        return max(1, usable_cpus() // self.workers)

    def ort_threads(self) -> int:
        """onnxruntime intra-op threads: the setting, else this worker's share of the usable CPUs."""
        return self.intra_op_threads or self.cpus_per_worker()

    def decode_pool_threads(self) -> int:
        """Decode threads: the setting, else this worker's share of the usable CPUs."""
        return self.decode_threads or self.cpus_per_worker()

    def to_env(self, fields: Iterable[str]) -> dict[str, str]:
        """``DISTILL_SERVE_*`` variables that give ``fields`` their values here: how the CLI hands its options to
        worker processes, which build their settings from the environment (:func:`serve.app.app_from_env`)."""
        out = {}
        for name in fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (list, tuple, dict)):
                text = json.dumps(value)
            else:
                text = str(value)
            out[ENV_PREFIX + name.upper()] = text
        return out

