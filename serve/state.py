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

from .batching import Clock, MicroBatcher, batch_sizes_to_try, choose_batch_limit, time_batch_sizes
from .decode import DecodePool
from .errors import ApiError
from .metrics import ServeMetrics
from .schemas import BatchingInfo, InputSpec, LabelsInfo, ModelInfo
from .settings import ServeSettings

log = logging.getLogger("serve")


class ServeState:
    def __init__(self, settings: ServeSettings, artifact: Optional[Artifact] = None) -> None:
        self.settings = settings
        self.artifact = artifact
        self.metrics = ServeMetrics()
        self.batcher: Optional[MicroBatcher] = None
        self.decoder: Optional[DecodePool] = None
        self.status = "loading"
        self.detail: Optional[str] = None
        self.sha256 = ""
        self.model_info: Optional[ModelInfo] = None
        self._warm_task: Optional[asyncio.Task] = None
        self.batch_timings: Optional[dict[str, float]] = None  # auto batch sizing: per-image ms by batch size
        self.clock: Clock = time.perf_counter  # what auto batch sizing times with (tests inject a fake one)
        self.labels_info: Optional[LabelsInfo] = None

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
            self.artifact = load_artifact(s.model, providers=s.providers, intra_op_threads=s.ort_threads(),
                                          allow_spinning=s.ort_spinning,
                                          labels=s.labels)
        elif self.artifact.is_embedding and self.settings.labels is not None:
            self.artifact.set_labels(self.settings.labels)
        self.sha256 = sha256_file(self.artifact.path)
        if self.artifact.is_embedding and self.labels_info is None:
            self._note_labels(self.artifact, self._labels_source(self.artifact))
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
        if self.settings.batch_sizing == "auto" and self.settings.max_batch > 1 and self.batcher is not None:
            self.size_batches()

    def size_batches(self) -> int:
        """Auto batch sizing: time the model at batch 1, 2, 4, ... max_batch and keep batching only as far as it
        pays (see :func:`serve.batching.choose_batch_limit`). Runs before ready, so no request sees a change."""
        art, batcher = self.artifact, self.batcher
        assert art is not None and batcher is not None
        timings = time_batch_sizes(batcher.run_sync, lambda n: np.zeros((n, *art.input_shape), dtype=art.input_dtype),
                                   batch_sizes_to_try(self.settings.max_batch), clock=self.clock)
        limit = choose_batch_limit(timings, self.settings.batch_tolerance, self.settings.batch_call_overhead_ms)
        batcher.set_max_batch(limit)
        self.batch_timings = {str(n): round(t, 4) for n, t in timings.items()}
        log.info("auto batch sizing: per-image ms by batch size %s -> batches of at most %d (max_batch %d)",
                 {n: round(t, 3) for n, t in timings.items()}, limit, self.settings.max_batch)
        if self.model_info is not None:
            info = self.model_info.batching.model_copy(update={
                "effective_max_batch": limit, "ms_per_image": self.batch_timings})
            self.model_info = self.model_info.model_copy(update={"batching": info})
        return limit

    # -- label sets of embedding (open-vocabulary) models ---------------------------------------------------
    def _labels_source(self, art: Artifact) -> str:
        from export.runtime import default_labels_path

        return str(self.settings.labels or default_labels_path(art.path, art.meta))

    def _note_labels(self, art: Artifact, source: str, data: Optional[bytes] = None) -> None:
        import hashlib
        from pathlib import Path

        ls = art.labels
        assert ls is not None
        if data is None:
            p = Path(source)
            digest = sha256_file(p) if p.is_file() else ""
        else:
            digest = hashlib.sha256(data).hexdigest()
        self.labels_info = LabelsInfo(source=source, sha256=digest, num_classes=len(ls), embed_dim=ls.embed_dim,
                                      tau=ls.tau, teacher=ls.teacher or None, loaded_at=time.time())

    def replace_labels(self, data: bytes) -> LabelsInfo:
        """Swap the label set of the served embedding model (no re-export, no restart). Raises ApiError.

        In-flight requests finish with the label set they started with (see routes.classify)."""
        from distill.vl.labelset import LabelSet, LabelSetError
        from export.errors import ArtifactError

        art = self.artifact
        if art is None or self.model_info is None:
            raise ApiError(503, f"model not loaded ({self.status})", headers={"Retry-After": str(self.settings.retry_after_s)})
        if not art.is_embedding:
            raise ApiError(409, f"{art.path.name} is a classifier with fixed classes; only embedding models take a label set")
        if self.settings.workers > 1:  # a swap would reach the one worker that took this request
            raise ApiError(409, f"label swaps need a single server process: this server runs {self.settings.workers} "
                                "workers, each with its own label set (restart with --workers 1, or replace "
                                "model.labels.npz / set DISTILL_SERVE_LABELS and restart)")
        try:
            ls = LabelSet.from_bytes(data)
        except LabelSetError as e:
            raise ApiError(400, str(e)) from None
        try:
            art.set_labels(ls)
        except ArtifactError as e:
            raise ApiError(422, str(e)) from None
        self._note_labels(art, "upload", data)
        self.model_info = self._describe(art)
        log.info("label set replaced: %d classes (sha256 %s)", len(ls), self.labels_info.sha256[:12])  # type: ignore[union-attr]
        return self.labels_info  # type: ignore[return-value]

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
            teacher=_structured(m.teacher),
            verification=m.verification,
            checkpoint_sha256=m.checkpoint_sha256,
            tool_version=m.tool_version,
            batching=BatchingInfo(max_batch=s.max_batch, max_wait_ms=s.max_wait_ms, adaptive_wait=s.adaptive_wait,
                                  batch_sizing=s.batch_sizing,
                                  effective_max_batch=self.batcher.max_batch if self.batcher else s.max_batch,
                                  ms_per_image=self.batch_timings,
                                  queue_size=s.queue_size),
            limits={"max_upload_bytes": s.max_upload_bytes, "max_request_bytes": s.max_request_bytes,
                    "max_pixels": s.max_pixels, "max_images_per_request": s.max_images_per_request},
            labels=self.labels_info,
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
        if (not self.ready or self.artifact is None or self.batcher is None or self.decoder is None
                or self.model_info is None):
            raise ApiError(503, f"model not ready ({self.status})",
                           headers={"Retry-After": str(self.settings.retry_after_s)})
        return self.artifact, self.batcher, self.model_info

    def info(self) -> dict[str, Any]:
        return self.model_info.model_dump() if self.model_info else {}


async def get_state(request: Request) -> ServeState:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, which cost every request
    a thread hop (and a GIL hand-off with the inference thread) just to read an attribute."""
    return request.app.state.serve


def _structured(teacher: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """Artifacts exported before the fix hold nested teacher entries (``preprocess``) as a Python repr string:
    show them as JSON objects again (``ast.literal_eval`` reads literals only, never code)."""
    if not teacher:
        return teacher
    import ast

    out: dict[str, Any] = {}
    for k, v in teacher.items():
        if isinstance(v, str) and v[:1] in "{[" and v[-1:] in "}]":
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                pass
        out[k] = v
    return out
