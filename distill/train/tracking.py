"""Experiment tracking where people already look: TensorBoard event files and (optionally) an MLflow run.

Every row the loop writes to ``metrics.jsonl`` goes through :meth:`Tracker.log_row` as scalars named
``<event>/<field>`` (``train/loss``, ``train/ce``, ``train/kd``, ``train/lr``, ``train/images_per_s``,
``val/acc_ce``, ``val/acc_blend05``, ``grad_conflict/cosine``, ...), so the files hold exactly what the run log
holds. At the end :meth:`Tracker.log_final` records the hyper-parameters with the final metrics (TensorBoard's
HParams tab; MLflow params + metrics) and the run's files as MLflow artifacts.

    tracker = create_tracker(cfg, run_dir)          # TensorBoard in run_dir/tensorboard; MLflow with cfg.mlflow_uri
    tracker.log_row({"event": "train", "step": 10, "loss": 0.7}, step=10)
    tracker.log_final(flat_hparams(cfg), {"test/acc_blend_prob": 0.61})
    tracker.log_artifact(run_dir / "best.pt"); tracker.close()

The MLflow run id is kept in ``run_dir/mlflow.json`` so a resumed run, and ``distill export`` (the verified ONNX),
log to the same run (:func:`log_to_run`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError, DependencyError
from ..io import atomic_write_json

#: Row fields that are coordinates or labels, not scalars.
_NOT_SCALARS = {"event", "step", "epoch"}
MLFLOW_FILE = "mlflow.json"


def row_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """``{"<event>/<field>": value}`` for every finite number in a metrics row (nested dicts flattened)."""
    event = str(row.get("event", "metrics"))
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            if math.isfinite(float(value)):
                out[prefix] = float(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)

    for key, value in row.items():
        if key not in _NOT_SCALARS:
            walk(f"{event}/{key}", value)
    return out


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"data.shots": 4, "student.arch": "resnet18", ...}`` with str/int/float/bool values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif value is not None:
            out[name] = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return out


class Tracker:
    """Fans rows out to the enabled sinks; with none enabled every call is a no-op."""

    def __init__(self, sinks: Iterable[Any] = ()) -> None:
        self.sinks = list(sinks)

    def log_row(self, row: Mapping[str, Any], step: int | None = None) -> None:
        scalars = row_scalars(row)
        if not scalars:
            return
        at = int(step if step is not None else row.get("step", 0) or 0)
        for sink in self.sinks:
            sink.scalars(scalars, at)

    def log_final(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        for sink in self.sinks:
            sink.final(dict(hparams), clean)

    def log_artifact(self, path: str | Path) -> None:
        if Path(path).exists():
            for sink in self.sinks:
                sink.artifact(Path(path))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class TensorBoardSink:
    """Event files under ``run_dir/tensorboard`` (open with ``tensorboard --logdir runs/``)."""

    def __init__(self, logdir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # pragma: no cover - tensorboard is a train dependency
            raise DependencyError(f"TensorBoard logging needs the tensorboard package ({e}); "
                                  "pip install tensorboard, or --set tensorboard=false") from None
        self.writer = SummaryWriter(log_dir=str(logdir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, step)
        self.writer.flush()

    def final(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        if metrics:
            self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")
        self.writer.flush()

    def artifact(self, path: Path) -> None:
        pass  # the event files live in the run directory already

    def close(self) -> None:
        self.writer.close()


class MlflowSink:
    """One MLflow run (params, metrics per step, artifacts) on any tracking URI (``file:./mlruns`` works offline)."""

    def __init__(self, uri: str, experiment: str, run_dir: Path, run_name: str | None = None) -> None:
        self.client, self.run_id = _mlflow_run(uri, experiment, run_dir, run_name)
        self._params_logged = False

    def scalars(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key=k, value=v, timestamp=now, step=step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def final(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params  # a resumed run: params are immutable
        params = [Param(k, str(v)[:6000]) for k, v in hparams.items() if k not in existing]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.scalars(metrics, 0)

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _mlflow_run(uri: str, experiment: str, run_dir: Path, run_name: str | None) -> tuple[Any, str]:
    """(client, run id): the run recorded in ``run_dir/mlflow.json`` (resume, export) or a new one."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise DependencyError(f"--mlflow-uri needs mlflow ({e}): pip install mlflow-skinny") from None
    _allow_file_store(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"cannot open MLflow tracking URI {uri!r}: {str(e).splitlines()[0][:200]}") from None
    record = Path(run_dir) / MLFLOW_FILE
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("tracking_uri") == uri:
            client.update_run(saved["run_id"], status="RUNNING")
            return client, saved["run_id"]
    try:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
        run = client.create_run(exp_id, run_name=run_name or Path(run_dir).name)
    except Exception as e:  # noqa: BLE001 - bad URIs raise many types
        raise ConfigError(f"cannot open MLflow tracking URI {uri!r}: {str(e).splitlines()[0][:200]}") from None
    atomic_write_json(record, {"tracking_uri": uri, "experiment_id": exp_id, "run_id": run.info.run_id})
    return client, run.info.run_id


def _allow_file_store(uri: str) -> None:
    """MLflow >= 3.7 refuses the file store unless opted in; a ``file:`` URI (or a path) given here is that opt-in,
    so a local, offline run directory keeps working."""
    import os

    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def create_tracker(cfg: Any, run_dir: str | Path) -> Tracker:
    """Sinks from the run config: ``cfg.tensorboard`` (default on) and ``cfg.mlflow_uri`` (default off)."""
    run_dir = Path(run_dir)
    sinks: list[Any] = []
    if getattr(cfg, "tensorboard", True):
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    uri = getattr(cfg, "mlflow_uri", None)
    if uri:
        sinks.append(MlflowSink(uri, getattr(cfg, "mlflow_experiment", "distill"), run_dir))
    return Tracker(sinks)


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers to compare runs by: val/test accuracy of every head and blend, the teacher's, throughput."""
    out: dict[str, float] = {}
    for split in ("val", "test"):
        for k, v in (summary.get(split) or {}).items():
            if isinstance(v, (int, float)):
                out[f"final/{split}_{k}"] = float(v)
    teacher = summary.get("teacher") or {}
    for k in ("val_acc", "test_acc"):
        if isinstance(teacher.get(k), (int, float)):
            out[f"final/teacher_{k}"] = float(teacher[k])
    for k in ("images_per_s", "s_per_step", "train_time_s", "wall_time_s"):
        if isinstance(summary.get(k), (int, float)):
            out[f"final/{k}"] = float(summary[k])
    return out


def log_to_run(run_dir: str | Path, paths: Iterable[str | Path]) -> str | None:
    """Log files (e.g. the verified ONNX of ``distill export``) to the MLflow run of ``run_dir``; the run id, or
    None when the run was not tracked with MLflow."""
    record = Path(run_dir) / MLFLOW_FILE
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    from mlflow.tracking import MlflowClient

    _allow_file_store(saved["tracking_uri"])
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    for p in paths:
        if Path(p).exists():
            client.log_artifact(saved["run_id"], str(p), artifact_path="export")
    return str(saved["run_id"])
