"""``distill serve --model-repository DIR``: every model of a Triton model repository over the v2 protocol, with
zero-downtime version updates.

The layout is the one ``distill export triton`` writes (``DIR/<model>/<version>/model.onnx``, ``config.pbtxt``,
``labels.txt``); the newest ``repository_versions`` versions of each model are served, and a request without a
version goes to the newest. Triton's model repository extension drives updates:

* ``POST /v2/repository/index``: every model found on disk, its versions and their state;
* ``POST /v2/repository/models/{name}/load``: (re)scan the model's folder and serve what is there now;
* ``POST /v2/repository/models/{name}/unload``: stop serving it.

Unlike Triton's POLL mode, which unloads a model before loading its new version (clients see errors during the
update), a load here first loads **and warms** the new version, then switches new requests to it in one step
on the event loop, and retires the old version only after its in-flight requests have finished. A version that
fails to load leaves the old one serving (400 with the reason). Every answer names the version that computed it
(``model_version``). The repository routes take the admin token (``DISTILL_SERVE_ADMIN_TOKEN``) when one is set,
else the API token when that is set (``DISTILL_SERVE_API_TOKEN``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

import anyio
from fastapi import APIRouter, Request, Response

from distill.errors import DistillError
from distill.io import sha256_file
from export.runtime import Artifact, load_artifact

from .metrics import ServeMetrics
from .security import token_ok
from .settings import ServeSettings
from .v2 import ProtocolError
from .v2_models import LoadedModel, ModelNotFound, ModelUnavailable
from .v2_schemas import RepositoryIndexEntry, RepositoryIndexRequest, V2Error

log = logging.getLogger("serve.repository")

MODEL_FILE = "model.onnx"
Loader = Callable[[Path], Artifact]


class LoadError(RuntimeError):
    """A version on disk cannot be served (the reason is the client's answer; the old version keeps serving)."""


class ModelRepository:
    """The models of one repository folder; implements :class:`serve.v2_models.ModelSet`."""

    extensions = ("binary_tensor_data", "classification", "model_repository")

    def __init__(self, root: Path, settings: ServeSettings, loader: Optional[Loader] = None,
                 metrics: Optional[ServeMetrics] = None) -> None:
        self.root = Path(root)
        self.settings = settings
        self.metrics = metrics
        self.loader: Loader = loader or self._load_artifact
        self._served: dict[str, dict[str, LoadedModel]] = {}  # name -> version -> model: replaced, never mutated
        self._locks: dict[str, asyncio.Lock] = {}
        self._errors: dict[str, str] = {}
        self._retiring: set[asyncio.Task] = set()
        self.started = False
        self.swaps = 0

    def _load_artifact(self, path: Path) -> Artifact:
        s = self.settings
        return load_artifact(path, providers=s.providers, intra_op_threads=s.ort_threads(),
                             allow_spinning=s.ort_spinning)

    # -- what is on disk -----------------------------------------------------------------------------
    def on_disk(self) -> dict[str, list[str]]:
        """Model name -> its complete versions (numeric folders holding model.onnx), oldest first."""
        out: dict[str, list[str]] = {}
        if not self.root.is_dir():
            return out
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            versions = sorted((v.name for v in d.iterdir() if v.name.isdigit() and (v / MODEL_FILE).is_file()),
                              key=int)
            if versions or (d / "config.pbtxt").is_file():
                out[d.name] = versions
        return out

    # -- ModelSet ------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.started and not self._errors and all(self._served.values())

    def get(self, name: str, version: Optional[str] = None) -> LoadedModel:
        served = self._served.get(name)
        if not served:
            why = f": {self._errors[name]}" if name in self._errors else ""
            raise ModelNotFound(f"unknown model {name!r} (not loaded{why})")
        if version in (None, ""):
            return served[max(served, key=int)]
        m = served.get(version)
        if m is None:
            raise ModelNotFound(f"unknown version {version!r} of model {name!r} (serving {', '.join(served)})")
        if not m.ready:
            raise ModelUnavailable(f"version {version} of model {name!r} is being retired")
        return m

    def versions(self, name: str) -> list[str]:
        if name not in self._served:
            raise ModelNotFound(f"unknown model {name!r}")
        return sorted(self._served[name], key=int)

    # -- loading and swapping ------------------------------------------------------------------------
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def start(self) -> None:
        """Load every model found (each warmed before it serves); failures are kept for the index."""
        for name in self.on_disk():
            try:
                await self.load(name)
            except LoadError as e:
                log.error("model %s not loaded: %s", name, e)
        self.started = True

    async def load(self, name: str) -> list[str]:
        """Serve what ``<root>/<name>`` holds now: load and warm new or changed versions, switch, then retire
        the replaced ones after their in-flight requests. Returns the versions served. Raises LoadError."""
        if "/" in name or name.startswith(".") or not name:
            raise LoadError(f"invalid model name {name!r}")
        async with self._lock(name):
            versions = self.on_disk().get(name)
            if not versions:
                raise LoadError(f"no model {name!r} with a version folder holding {MODEL_FILE} in {self.root}")
            wanted = versions[-self.settings.repository_versions:]
            current = self._served.get(name, {})
            fresh: dict[str, LoadedModel] = {}
            try:
                for v in wanted:
                    path = self.root / name / v / MODEL_FILE
                    digest = await anyio.to_thread.run_sync(sha256_file, path)
                    if v in current and current[v].sha256 == digest:
                        continue
                    fresh[v] = await self._start_version(name, v, path, digest)
            except BaseException as e:
                for m in fresh.values():
                    await m.retire(timeout=0)
                if isinstance(e, LoadError) and name not in self._served:
                    self._errors[name] = str(e)
                raise
            served = {v: fresh.get(v) or current[v] for v in wanted}
            self._served = {**self._served, name: served}  # the switch: one assignment on the event loop
            self._errors.pop(name, None)
            replaced = [m for v, m in current.items() if served.get(v) is not m]
            for m in replaced:
                self._retire_later(m)
            if fresh:
                self.swaps += 1
                log.info("model %s: serving versions %s (new: %s, retiring: %s)", name, list(served), list(fresh),
                         [m.version for m in replaced])
            return list(served)

    async def _start_version(self, name: str, version: str, path: Path, digest: str) -> LoadedModel:
        t0 = time.perf_counter()
        try:
            art = await anyio.to_thread.run_sync(self.loader, path)
        except DistillError as e:
            raise LoadError(f"version {version} of model {name!r}: {e}") from None
        except Exception as e:  # noqa: BLE001 - any loader failure is the repository's content, reported
            raise LoadError(f"version {version} of model {name!r}: {type(e).__name__}: {e}") from None
        m = LoadedModel(name, version, art, self.settings, digest, observer=self.metrics)
        try:
            await m.start(warm=True)  # warm before it takes traffic
        except Exception as e:  # noqa: BLE001
            await m.retire(timeout=0)
            raise LoadError(f"version {version} of model {name!r} failed its warm-up: {e}") from None
        log.info("model %s version %s loaded and warm in %.0f ms", name, version, (time.perf_counter() - t0) * 1e3)
        return m

    def _retire_later(self, m: LoadedModel) -> None:
        m.ready = False
        task = asyncio.get_running_loop().create_task(m.retire(timeout=self.settings.drain_timeout_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def wait_retired(self) -> None:
        """Until every replaced version has finished its in-flight requests and stopped."""
        while self._retiring:
            await asyncio.gather(*list(self._retiring))

    async def unload(self, name: str) -> None:
        async with self._lock(name):
            served = self._served.get(name)
            if served is None:
                raise ModelNotFound(f"unknown model {name!r} (not loaded)")
            self._served = {k: v for k, v in self._served.items() if k != name}
            for m in served.values():
                self._retire_later(m)

    async def close(self) -> None:
        served, self._served = self._served, {}
        for versions in served.values():
            for m in versions.values():
                self._retire_later(m)
        await self.wait_retired()

    def index(self, ready_only: bool = False) -> list[RepositoryIndexEntry]:
        out = []
        for name, versions in self.on_disk().items():
            served = self._served.get(name, {})
            if not versions:
                out.append(RepositoryIndexEntry(name=name, state="UNAVAILABLE", reason="no version folder"))
            for v in versions:
                if v in served:
                    out.append(RepositoryIndexEntry(name=name, version=v, state="READY"))
                elif not ready_only:
                    reason = self._errors.get(name) or ("unloaded" if name not in self._served else "not the newest")
                    out.append(RepositoryIndexEntry(name=name, version=v, state="UNAVAILABLE", reason=reason))
        return [e for e in out if not ready_only or e.state == "READY"]


# -- the repository extension's routes -----------------------------------------------------------------
router = APIRouter(prefix="/v2/repository", tags=["v2 repository"])
_ERR: dict[int | str, dict[str, Any]] = {s: {"model": V2Error, "description": d} for s, d in (
    (400, "The model cannot be loaded (the old version keeps serving)."), (401, "Missing or wrong token."),
    (404, "Unknown model."))}


def _repo(request: Request) -> ModelRepository:
    return request.app.state.v2_models


def _require_control_token(request: Request) -> None:
    """The admin token when one is set (the API token is then not enough to change what is served)."""
    token = request.app.state.serve_settings.admin_token
    if token and not token_ok(request.headers.get("authorization", ""), token):
        raise ProtocolError(401, "repository control needs the admin token: Authorization: Bearer <admin token>",
                            {"WWW-Authenticate": 'Bearer realm="distill-serve"'})


_INDEX_BODY = {"requestBody": {"required": False, "content": {"application/json": {
    "schema": RepositoryIndexRequest.model_json_schema()}}}}
_EMPTY = {"description": "Done (empty body).", "content": {}}


@router.post("/index", response_model=list[RepositoryIndexEntry], responses=_ERR, summary="Repository index",
             openapi_extra=_INDEX_BODY)
async def repository_index(request: Request) -> list[RepositoryIndexEntry]:
    _require_control_token(request)
    raw = await request.body()
    ready_only = False
    if raw.strip():
        try:
            ready_only = bool(RepositoryIndexRequest.model_validate_json(raw).ready)
        except ValueError as e:
            raise ProtocolError(400, f"invalid index request: {str(e).splitlines()[0]}") from None
    return _repo(request).index(ready_only=ready_only)


@router.post("/models/{name}/load", responses={200: _EMPTY, **_ERR}, response_class=Response,
             summary="Load (or update to) what the model's folder holds now")
async def repository_load(request: Request, name: str) -> Response:
    _require_control_token(request)
    try:
        await _repo(request).load(name)
    except LoadError as e:
        raise ProtocolError(400, f"failed to load {name!r}: {e}") from None
    return Response(status_code=200)


@router.post("/models/{name}/unload", responses={200: _EMPTY, **_ERR}, response_class=Response,
             summary="Stop serving a model (after its in-flight requests)")
async def repository_unload(request: Request, name: str) -> Response:
    _require_control_token(request)
    try:
        await _repo(request).unload(name)
    except ModelNotFound as e:
        raise ProtocolError(404, str(e)) from None
    return Response(status_code=200)
