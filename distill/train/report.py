"""Run-directory outputs besides checkpoints: ``metrics.jsonl`` (appended, flushed) and PNG plots (atomic)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from ..io import atomic_path, atomic_write_text


class MetricsLog:
    """One JSON object per line; every write is flushed and fsynced so a killed run keeps its history."""

    def __init__(self, path: Path, on_write: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = Path(path)
        self.on_write = on_write  # e.g. Tracker.log_row: TensorBoard/MLflow see exactly the rows written here

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, **{k: _clean(v) for k, v in fields.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.on_write is not None:
            self.on_write(record)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                continue
        return out

    def truncate_after(self, step: int) -> None:
        """On resume: drop events logged after the checkpoint we resume from (they will be logged again)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step and r.get("event") not in ("final",)]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def _series(records: Iterable[dict[str, Any]], event: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        if r.get("event") == event and r.get(key) is not None:
            xs.append(r["step"])
            ys.append(r[key])
    return xs, ys


def write_plots(records: list[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    """loss.png, accuracy.png and (when logged) grad_conflict.png, written atomically with matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = Path(out_dir) / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "total"), ("ce", "CE part"), ("kd", "KD part")):
        xs, ys = _series(records, "train", key)
        if xs:
            ax.plot(xs, ys, label=label)
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.set_title(f"training loss {title}".strip())
    ax.grid(alpha=0.3), ax.legend()
    save(fig, "loss.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    keys = sorted({k for r in records if r.get("event") == "val" for k in r if k.startswith("acc_")})
    for key in keys:
        xs, ys = _series(records, "val", key)
        ax.plot(xs, ys, marker="o", label=key.removeprefix("acc_").replace("blend05", "blend a=b=0.5"))
    teacher = next((r.get("teacher_val_acc") for r in records if r.get("event") == "setup"), None)
    if teacher is not None:
        ax.axhline(teacher, color="gray", ls="--", label="teacher")
    ax.set_xlabel("step"), ax.set_ylabel("validation accuracy"), ax.set_title(f"validation accuracy {title}".strip())
    ax.grid(alpha=0.3), ax.legend()
    save(fig, "accuracy.png")

    xs, ys = _series(records, "grad_conflict", "cosine")
    if xs:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(xs, ys, marker=".", label="cos(g_CE, g_KD) on the backbone")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xlabel("step"), ax.set_ylabel("cosine similarity"), ax.set_ylim(-1, 1)
        ax.set_title(f"gradient conflict {title}".strip()), ax.grid(alpha=0.3), ax.legend()
        save(fig, "grad_conflict.png")
    return written
