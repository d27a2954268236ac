"""Atomic file writes (a killed process never leaves a half-written checkpoint, artifact or report) and the
inter-process lock under which one of several concurrent runs builds a shared cache entry."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically, on error it is removed.

    Writing beside the target keeps ``os.replace`` on one file system (rename is atomic there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; a serving user must be able to read artifacts
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def file_lock(path: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[float]:
    """Hold an exclusive lock on ``path`` (``fcntl.flock``: the OS releases it if the holder dies) while building
    something several processes share (teacher outputs, decoded images): one builds, the others wait, then reuse.

    ``on_wait`` is called once, before blocking, when another process holds the lock; the context yields the
    seconds spent waiting (0.0 when it was free). Without ``fcntl`` (Windows) nothing is locked: both may build,
    and atomic writes keep the result whole.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield 0.0
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        waited = 0.0
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            t0 = time.perf_counter()
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            waited = time.perf_counter() - t0
        try:
            yield waited
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(path: str | Path) -> Path:
    """Fail early (before minutes of work) when an output path cannot be written."""
    from .errors import ConfigError

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory {parent}: {e.strerror or e}") from e
    if path.is_dir():
        raise ConfigError(f"output path {path} is a directory")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"output directory {parent} is not writable")
    return path
