"""Models as the v2 protocol sees them: one :class:`LoadedModel` per served model version, found through a
:class:`ModelSet` (the single ``--model`` artifact, or a model repository, :mod:`serve.repository`).

A loaded version owns its micro-batcher, whose inference call returns the artifact's probabilities (exactly
what ``/v1/classify`` returns) beside the graph's raw outputs (what Triton would return for the same model), so
one batched call serves every output a request can ask for. ``acquire()`` counts the requests a version is
serving: a version is retired (its batcher drained) only once that count is back to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol

import numpy as np

from export.runtime import Artifact, postprocess

from .batching import BatchObserver, MicroBatcher
from .settings import ServeSettings

log = logging.getLogger("serve.v2")

#: Our own outputs and inputs beside the graph's.
PROBS_OUTPUT = "probs"
IMAGE_INPUT = "image"

NP_TO_V2 = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8", np.dtype(np.float16): "FP16"}


class ModelNotFound(LookupError):
    """Unknown model or version (404)."""


class ModelUnavailable(RuntimeError):
    """Known but not ready (loading, failed, retiring): 503 with Retry-After."""


@dataclass(frozen=True)
class OutputSpec:
    name: str
    width: int
    labelled: bool  # one column per class: the classification extension can name them


class LoadedModel:
    """One model version: its artifact, its batcher (outputs ``[probs | raw outputs...]``) and in-flight count."""

    def __init__(self, name: str, version: str, artifact: Artifact, settings: ServeSettings,
                 sha256: str = "", observer: Optional[BatchObserver] = None) -> None:
        self.name, self.version, self.artifact, self.settings, self.sha256 = name, version, artifact, settings, sha256
        meta = artifact.meta
        n_classes = meta.num_classes
        raw_width = (meta.embed_dim or 0) if meta.output_kind == "embedding" else n_classes
        raw = [OutputSpec(n, raw_width if meta.kind != "two_head" else n_classes,
                          meta.output_kind != "embedding") for n in meta.output_names]
        self.outputs: list[OutputSpec] = [OutputSpec(PROBS_OUTPUT, n_classes, True),
                                          *[o for o in raw if o.name != PROBS_OUTPUT]]
        self.input_name = meta.input_name
        self.input_dtype = np.dtype(artifact.input_dtype)
        self.batcher = MicroBatcher(self._run, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                                    queue_size=settings.queue_size, adaptive_wait=settings.adaptive_wait,
                                    observer=observer)
        self.ready = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- inference -----------------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        """One call for every output: probabilities (the /v1 post-processing) then the raw graph outputs."""
        art = self.artifact
        outs = art.run_raw(x)
        cols = [postprocess(outs, art.meta, art.labels)]
        cols += [np.asarray(outs[o.name], np.float32).reshape(x.shape[0], -1) for o in self.outputs[1:]]
        return np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]

    def split(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        out, col = {}, 0
        for o in self.outputs:
            out[o.name] = rows[:, col:col + o.width]
            col += o.width
        return out

    @property
    def labels(self) -> list[str]:
        return list(self.artifact.meta.class_names)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, warm: bool = True) -> None:
        """Start the batcher and warm up (batch 1 and max_batch) *before* the version takes any traffic."""
        import anyio

        await self.batcher.start()
        if warm and self.settings.warmup:
            await anyio.to_thread.run_sync(self.warm_up)
        self.ready = True

    def warm_up(self) -> None:
        art = self.artifact
        for _ in range(self.settings.warmup):
            for n in sorted({1, self.settings.max_batch}):
                self.batcher.run_sync(np.zeros((n, *art.input_shape), dtype=art.input_dtype))

    @contextlib.contextmanager
    def acquire(self) -> Iterator["LoadedModel"]:
        """Count a request as in flight on this version for as long as it is being served."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def retire(self, timeout: Optional[float] = None) -> None:
        """Stop taking new requests, wait for the in-flight ones, then drain and stop the batcher."""
        self.ready = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("model %s version %s retired with %d requests still in flight", self.name, self.version,
                        self._in_flight)
        await self.batcher.close(timeout=self.settings.drain_timeout_s)


class ModelSet(Protocol):
    """What the v2 routes need from whatever serves the models."""

    extensions: tuple[str, ...]

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    def get(self, name: str, version: Optional[str] = None) -> LoadedModel:
        """The version asked for (default: the newest ready one). Raises ModelNotFound / ModelUnavailable."""
        ...

    def versions(self, name: str) -> list[str]: ...


class SingleModelSet:
    """The one ``--model`` artifact as v2 model ``<name>`` version ``1`` (served beside ``/v1/classify``)."""

    VERSION = "1"
    extensions = ("binary_tensor_data", "classification")

    def __init__(self, state: object) -> None:
        self.state = state  # serve.state.ServeState
        self.model: Optional[LoadedModel] = None

    async def start(self) -> None:
        st = self.state
        art = st.artifact  # type: ignore[attr-defined]
        info = st.model_info  # type: ignore[attr-defined]
        self.model = LoadedModel(info.name, self.VERSION, art, st.settings, st.sha256,  # type: ignore[attr-defined]
                                 observer=st.metrics)  # type: ignore[attr-defined]
        await self.model.start(warm=False)  # the app's own warm-up gates readiness; this model shares the session

    async def close(self) -> None:
        if self.model is not None:
            await self.model.retire(timeout=self.state.settings.drain_timeout_s)  # type: ignore[attr-defined]

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return bool(self.state.ready) and self.model is not None and self.model.ready  # type: ignore[attr-defined]

    def get(self, name: str, version: Optional[str] = None) -> LoadedModel:
        m = self.model
        if m is None:
            raise ModelUnavailable(f"model not loaded ({self.state.status})")  # type: ignore[attr-defined]
        if name != m.name:
            raise ModelNotFound(f"unknown model {name!r} (this server serves {m.name!r})")
        if version not in (None, "", self.VERSION):
            raise ModelNotFound(f"unknown version {version!r} of model {name!r} (served: {self.VERSION})")
        if not self.ready():
            raise ModelUnavailable(f"model {name!r} is not ready ({self.state.status})")  # type: ignore[attr-defined]
        return m

    def versions(self, name: str) -> list[str]:
        if self.model is None or name != self.model.name:
            raise ModelNotFound(f"unknown model {name!r}")
        return [self.VERSION]
