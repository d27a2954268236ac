"""The shared resources of one app (settings, the loaded artifact, the batcher, metrics, readiness).

Routes get it through ``Depends(get_state)``; the lifespan in :mod:`serve.app` fills it in.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any, Optional

import numpy as np
from fastapi import Request
from PIL import Image

from distill.io import sha256_file
from export.runtime import Artifact, load_artifact

from .batching import MicroBatcher
from .errors import ApiError
from .metrics import ServeMetrics
from .schemas import BatchingInfo, InputSpec, ModelInfo
from .settings import ServeSettings

log = logging.getLogger("serve")


class ServeState:
    def __init__(self, settings: ServeSettings, artifact: Optional[Artifact] = None) -> None:
        self.settings = settings
        self.artifact = artifact
        self.metrics = ServeMetrics()
        self.batcher: Optional[MicroBatcher] = None
        self.status = "loading"
        self.detail: Optional[str] = None
        self.sha256 = ""
        self.model_info: Optional[ModelInfo] = None
        self._warm_task: Optional[asyncio.Task] = None

    # -- readiness ---------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.status == "ok"

    def set_status(self, status: str, detail: Optional[str] = None) -> None:
        self.status, self.detail = status, detail
        self.metrics.ready.set(1 if status == "ok" else 0)

    # -- loading -----------------------------------------------------------------------------------------
    def load(self) -> Artifact:
        """Load the artifact named in the settings (blocking; run it in a thread). Raises ArtifactError."""
        if self.artifact is None:
            s = self.settings
            if s.model is None:
                from export.errors import ArtifactError

                raise ArtifactError("no model given: pass --model ARTIFACT or set DISTILL_SERVE_MODEL")
            self.artifact = load_artifact(s.model, providers=s.providers, intra_op_threads=s.intra_op_threads)
        self.sha256 = sha256_file(self.artifact.path)
        self.model_info = self._describe(self.artifact)
        self.metrics.model.info({"name": self.model_info.name, "version": self.model_info.version,
                                 "providers": ",".join(self.model_info.providers),
                                 "precision": self.model_info.precision})
        self._log_providers(self.artifact)
        return self.artifact

    def warm_up(self) -> None:
        """A few inference calls at batch 1 and max_batch so the first request does not pay for allocation."""
        art = self.artifact
        assert art is not None
        sizes = sorted({1, self.settings.max_batch})
        for fmt in ("JPEG", "PNG"):  # loads the decoders too, so the first real upload is not slow
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), (120, 80, 40)).save(buf, fmt)
            art.prepare([buf.getvalue()], max_pixels=self.settings.max_pixels)
        for _ in range(self.settings.warmup):
            for n in sizes:
                art.run(np.zeros((n, *art.input_shape), dtype=art.input_dtype))

    def _describe(self, art: Artifact) -> ModelInfo:
        m = art.meta
        s = self.settings
        name = m.model_name or art.path.stem
        return ModelInfo(
            name=name,
            version=self.sha256[:12],
            sha256=self.sha256,
            file=art.path.name,
            kind=m.kind,
            backend=art.backend,
            providers=art.providers,
            precision=m.precision,
            output_kind=m.output_kind,
            num_classes=len(m.class_names),
            classes=list(m.class_names),
            input=InputSpec(kind=m.input_kind, shape=["N", *art.input_shape],
                            dtype=np.dtype(art.input_dtype).name, preprocess=m.preprocess.model_dump(mode="json")),
            blend=m.blend,
            alpha=m.alpha,
            beta=m.beta,
            teacher=m.teacher,
            verification=m.verification,
            checkpoint_sha256=m.checkpoint_sha256,
            tool_version=m.tool_version,
            batching=BatchingInfo(max_batch=s.max_batch, max_wait_ms=s.max_wait_ms, adaptive_wait=s.adaptive_wait,
                                  queue_size=s.queue_size),
            limits={"max_upload_bytes": s.max_upload_bytes, "max_request_bytes": s.max_request_bytes,
                    "max_pixels": s.max_pixels, "max_images_per_request": s.max_images_per_request},
        )

    @staticmethod
    def _log_providers(art: Artifact) -> None:
        log.info("model %s loaded: backend=%s providers=%s", art.path, art.backend, art.providers)
        try:
            import onnxruntime as ort

            available = ort.get_available_providers()
        except Exception:  # noqa: BLE001 - informational only
            return
        if "CUDAExecutionProvider" in available and "CUDAExecutionProvider" not in art.providers:
            log.warning("onnxruntime has CUDA but the session runs on %s (CUDA libraries missing?)", art.providers)

    # -- helpers for routes ------------------------------------------------------------------------------
    def require_ready(self) -> tuple[Artifact, MicroBatcher, ModelInfo]:
        if not self.ready or self.artifact is None or self.batcher is None or self.model_info is None:
            raise ApiError(503, f"model not ready ({self.status})",
                           headers={"Retry-After": str(self.settings.retry_after_s)})
        return self.artifact, self.batcher, self.model_info

    def describe_timing(self, started: float) -> float:
        return (time.perf_counter() - started) * 1e3

    def info(self) -> dict[str, Any]:
        return self.model_info.model_dump() if self.model_info else {}


def get_state(request: Request) -> ServeState:
    return request.app.state.serve


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.serve.settings
