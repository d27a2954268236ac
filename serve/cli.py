"""``distill serve --model ARTIFACT`` (and ``python -m serve``): run the HTTP server with uvicorn.

Options left out fall back to ``DISTILL_SERVE_*`` environment variables, then to the defaults in
:class:`serve.settings.ServeSettings`. The artifact is loaded before the server starts, so a missing or
invalid model ends with one ``error:`` line and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from pydantic import ValidationError

from distill.cli_base import DistillTyper, fail

app = DistillTyper(
    help="Serve an exported artifact over HTTP: POST /v1/classify, /health/live, /health/ready, /v1/model, "
    "/metrics, OpenAPI at /docs. Options default to DISTILL_SERVE_* environment variables.",
    no_args_is_help=False,
    subcommand_metavar="",  # one command, not a group: the usage line must not ask for a COMMAND
)


@app.callback(invoke_without_command=True)
def serve(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Artifact (.onnx, or .engine with sidecar). Env: DISTILL_SERVE_MODEL."),
    model_repository: Optional[Path] = typer.Option(None, "--model-repository", help="Serve every model of a Triton model repository ('distill export triton' layout) over the v2 protocol, with zero-downtime version updates (POST /v2/repository/models/NAME/load). Env: DISTILL_SERVE_MODEL_REPOSITORY."),
    host: Optional[str] = typer.Option(None, help="Bind address (default: 127.0.0.1; 0.0.0.0 in the container)."),
    port: Optional[int] = typer.Option(None, help="Port (default: 8000)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Most images per inference call; 1 disables batching (default: 16)."),
    max_wait_ms: Optional[float] = typer.Option(None, "--max-wait-ms", help="Longest wait for a batch to fill (default: 5)."),
    adaptive_wait: Optional[bool] = typer.Option(None, "--adaptive-wait/--fixed-wait", help="Wait only while more requests are arriving (default: adaptive)."),
    batch_sizing: Optional[str] = typer.Option(None, "--batch-sizing", help="auto: batch only as far as it pays (timed at warm-up); fixed: fill up to --max-batch (default: auto)."),
    queue_size: Optional[int] = typer.Option(None, "--queue-size", help="Most queued images before 503 (default: 256)."),
    max_upload_bytes: Optional[int] = typer.Option(None, "--max-upload-bytes", help="Largest image file (default: 10 MiB)."),
    max_request_bytes: Optional[int] = typer.Option(None, "--max-request-bytes", help="Largest request body (default: 32 MiB)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Decoded-pixel cap per image (default: 40,000,000)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Most images per request (default: 16)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Default top_k (default: 5)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads (default: the CPUs this process may use: affinity and cgroup quota)."),
    provider: Optional[list[str]] = typer.Option(None, "--provider", help="Execution provider (repeatable) (default: best available)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warm-up calls before ready (default: 3)."),
    loop: Optional[str] = typer.Option(None, "--loop", help="Event loop: auto, asyncio or uvloop (default: auto: uvloop if installed)."),
    http: Optional[str] = typer.Option(None, "--http", help="HTTP parser: auto, h11 or httptools (default: auto: httptools if installed)."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="uvicorn log level (default: info)."),
    access_log: Optional[bool] = typer.Option(None, "--access-log/--no-access-log", help="Log every request (default: on)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Server processes sharing the port, each with its own model and an equal share of the CPUs; connections go to the least-loaded worker, a dead one is replaced; metrics are summed over them; --model only (default: 1)."),
) -> None:
    """Start the server (blocks until SIGINT/SIGTERM; in-flight requests are drained first)."""
    overrides: dict[str, Any] = {
        "model": model, "model_repository": model_repository, "host": host, "port": port, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
        "adaptive_wait": adaptive_wait, "batch_sizing": batch_sizing, "queue_size": queue_size, "max_upload_bytes": max_upload_bytes,
        "max_request_bytes": max_request_bytes, "max_pixels": max_pixels, "max_images_per_request": max_images,
        "default_top_k": top_k, "intra_op_threads": threads, "providers": provider or None, "warmup": warmup,
        "loop": loop, "http": http, "log_level": log_level, "access_log": access_log, "workers": workers,
    }
    run_server({k: v for k, v in overrides.items() if v is not None})


def run_server(overrides: dict[str, Any]) -> None:
    from .settings import ServeSettings

    try:
        settings = ServeSettings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"invalid setting {where}: {first['msg']} (option --{where.replace('_', '-')} or DISTILL_SERVE_{where.upper()})")
    if settings.model is not None and settings.model_repository is not None:
        fail("pass either --model ARTIFACT or --model-repository DIR, not both")
    if settings.model is None and settings.model_repository is None:
        fail("no model given: pass --model ARTIFACT (or --model-repository DIR) or set DISTILL_SERVE_MODEL")
    if settings.model_repository is not None and not settings.model_repository.is_dir():
        fail(f"model repository {settings.model_repository} is not a directory (write one with 'distill export triton')")
    if settings.workers > 1 and settings.model_repository is not None:
        fail("--workers applies to --model: a model repository's load/unload requests would reach one worker "
             "(run one process per replica instead)")
    for option, impl in (("loop", settings.loop), ("http", settings.http)):
        if impl in ("uvloop", "httptools") and importlib.util.find_spec(impl) is None:
            fail(f"--{option} {impl}: {impl} is not installed (pip install '{impl}', or --{option} auto)")

    import uvicorn

    from export.runtime import load_artifact

    from .app import create_app

    if settings.model_repository is not None:
        art = None  # each model version is loaded (and warmed) by the repository, before it takes traffic
    else:
        art = _load_or_fail(settings, load_artifact)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common: dict[str, Any] = dict(
        host=settings.host, port=settings.port, loop=settings.loop, http=settings.http,
        log_level=settings.log_level, access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None, server_header=False,
    )
    if settings.workers > 1:
        del art  # checked above (fail fast); each worker loads its own
        _run_workers(settings, overrides, common)
        return
    app_ = create_app(settings, artifact=art)
    _exit_zero_on_stop_signals()
    uvicorn.run(app_, **common)


def _run_workers(settings: Any, overrides: dict[str, Any], common: dict[str, Any]) -> None:
    """``--workers N``: bind the port here, then hand its connections to N worker processes by load
    (:mod:`serve.workers`); exit 0 on SIGTERM/SIGINT once they have drained."""
    import uvicorn

    from .metrics import forget_process
    from .workers import Supervisor, WorkerBootError

    with _worker_environment(settings, overrides):
        config = uvicorn.Config("serve.app:app_from_env", factory=True, **common)
        sock = config.bind_socket()  # logs "Uvicorn running on http://HOST:PORT" (a taken port: one line, exit 3)
        supervisor = Supervisor(sock, settings.workers, common, stop_timeout_s=settings.drain_timeout_s + 10.0,
                                on_worker_exit=forget_process)
        try:
            code = supervisor.run()
        except WorkerBootError as e:
            fail(str(e))
    raise SystemExit(code)


@contextlib.contextmanager
def _worker_environment(settings: Any, overrides: dict[str, Any]) -> Iterator[None]:
    """What worker processes start from: the CLI's options as ``DISTILL_SERVE_*`` variables (the workers build
    their settings from the environment) and a fresh directory for the summed metrics, removed afterwards."""
    from .metrics import MULTIPROC_ENV

    metrics_dir = tempfile.mkdtemp(prefix="distill-serve-metrics-")
    saved = dict(os.environ)
    os.environ.update(settings.to_env(overrides))
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _load_or_fail(settings: Any, load_artifact: Any) -> Any:
    from distill.errors import DistillError

    try:
        return load_artifact(settings.model, providers=settings.providers, intra_op_threads=settings.ort_threads(),
                            allow_spinning=settings.ort_spinning)
    except DistillError as e:
        fail(f"cannot serve model: {e}")
    except Exception as e:  # noqa: BLE001 - any loader failure is reported as one line, not a traceback
        fail(f"cannot serve model {settings.model}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _exit_zero_on_stop_signals() -> None:
    """uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler it found: make that one a
    clean exit 0, so a requested, graceful stop is not reported as death by signal (or as "interrupted")."""

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)


def main() -> None:
    app(prog_name="python -m serve")
