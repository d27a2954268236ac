"""``distill bench run``: load every (model, backend, variant), measure it, and return the report dict.

One row per (model, backend, variant, scenario, batch size); model-level facts (size, parameters, load time,
first-inference time, accuracy, memory) are repeated on each row so the CSV stands on its own. Backends that
cannot run here, and scenarios cut by the time budget, are rows with ``status: skipped`` and a ``reason``.

Memory: ``rss_mb`` is this process's resident set after the model's scenarios (Python, numpy, onnxruntime, and
torch when a checkpoint is in the same run, included; compare models within one run, or run a model alone for
its absolute footprint); ``process_peak_rss_mb`` is the process high-water mark so far; ``gpu_mem_mb`` is
``torch.cuda.max_memory_allocated`` for torch-cuda rows.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill.errors import DistillError

from ._version import SCHEMA_VERSION, __version__
from .accuracy import checkpoint_split, class_mismatch, evaluate, labeled_images, list_images
from .backends import (FORMAT_BACKENDS, BackendFellBack, Loaded, backend_unavailable_reason, gpu_peak_memory_mb,
                       load_artifact_backend, load_checkpoint_backend, model_format)
from .emulate import apply_emulation
from .env import capture_environment, load_average
from .jetson import TegrastatsSampler, detect_jetson
from .scenarios import DEFAULT_BATCH_SWEEP, MLPERF_NAMES, offline, server, single_stream


@dataclass
class BenchConfig:
    models: list[tuple[str, Path]]
    backends: list[str]
    scenarios: list[str]
    torch_modes: list[str] = field(default_factory=lambda: ["eager"])
    torch_dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    data_dir: Path | None = None
    data_split: str | None = None
    images_dir: Path | None = None
    max_images: int = 64
    accuracy_limit: int | None = None
    emulation: dict[str, Any] | None = None
    threads: int | None = None
    warmup: int = 10
    count: int | None = None
    duration: float = 5.0
    max_seconds: float = 600.0
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SWEEP
    server_qps: float | None = None
    server_bound_ms: float | None = None
    server_max_batch: int = 1
    seed: int = 0
    auto: bool = False  # --backends auto: name the fastest backend within 0.3 points of fp32 per precision

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["models"] = [{"label": lbl, "path": str(p)} for lbl, p in self.models]
        for k in ("data_dir", "images_dir"):
            d[k] = str(d[k]) if d[k] else None
        d["batch_sizes"] = list(self.batch_sizes)
        return d


def _rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        return None


def _process_peak_rss_mb() -> float | None:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    except ImportError:  # pragma: no cover
        return None


def variants_for(path: Path, cfg: BenchConfig) -> list[tuple[str, str | None, str | None]]:
    """(backend, torch mode, torch dtype) combinations that apply to this model file."""
    fmt = model_format(path)
    out: list[tuple[str, str | None, str | None]] = []
    for backend in cfg.backends:
        if backend not in FORMAT_BACKENDS[fmt]:
            continue
        if fmt == "checkpoint":
            out.extend((backend, m, d) for m in cfg.torch_modes for d in cfg.torch_dtypes)
        else:
            out.append((backend, None, None))
    return out


def _base_row(label: str, path: Path, backend: str, variant: str, emulation: dict[str, Any] | None) -> dict[str, Any]:
    return {"model": label, "path": str(path), "format": model_format(path), "backend": backend, "variant": variant,
            "emulation": emulation["label"] if emulation else None}


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    t_begin = time.perf_counter()
    deadline = t_begin + cfg.max_seconds
    jetson = detect_jetson()
    sampler = TegrastatsSampler().start() if jetson and jetson.get("tegrastats") else None
    apply_emulation(cfg.emulation)
    threads = cfg.emulation["intra_op_threads"] if cfg.emulation else cfg.threads
    if threads and any(model_format(p) == "checkpoint" for _, p in cfg.models):
        import torch

        torch.set_num_threads(int(threads))
    if any(model_format(p) == "checkpoint" for _, p in cfg.models):
        import torch  # noqa: F401 - loaded anyway for the checkpoints; lets the environment record its details
    env = capture_environment(threads=threads, emulation=cfg.emulation, jetson=jetson)

    images = list_images(cfg.images_dir, cfg.max_images) if cfg.images_dir else None
    samples = (labeled_images(cfg.data_dir) if cfg.data_dir
               else checkpoint_split(cfg.data_split) if cfg.data_split else None)
    if samples and cfg.accuracy_limit:
        samples = _stratified(samples, cfg.accuracy_limit)
    if images is None and samples:
        images = [p for p, _ in samples[:: max(1, len(samples) // cfg.max_images)]][: cfg.max_images]
    inputs_desc = f"{len(images)} real images" if images else "synthetic random inputs (pass --images for real ones)"

    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    for label, path in cfg.models:
        for backend, mode, dtype in variants_for(path, cfg):
            variant = f"{mode}-{dtype}" if mode else "artifact"
            base = _base_row(label, path, backend, variant, cfg.emulation)
            reason = backend_unavailable_reason(backend)
            if reason is None and time.perf_counter() >= deadline:
                reason = "time budget (--max-seconds) exhausted before this model"
            if reason:
                rows.append({**base, "scenario": None, "status": "skipped", "reason": reason})
                models.append({**base, "status": "skipped", "reason": reason})
                log(f"[yellow]skipped[/] {label} on {backend}: {reason}")
                continue
            log(f"[bold]{label}[/] on {backend} ({variant})")
            try:
                model_rows, summary = _bench_one(label, path, backend, mode, dtype, cfg, images, samples,
                                                 inputs_desc, threads, deadline, sampler, log)
            except BackendFellBack as e:
                rows.append({**base, "scenario": None, "status": "skipped", "reason": str(e)})
                models.append({**base, "status": "skipped", "reason": str(e)})
                continue
            except DistillError:
                raise
            except Exception as e:  # noqa: BLE001 - one broken combination must not lose the other results
                msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
                rows.append({**base, "scenario": None, "status": "error", "reason": msg})
                models.append({**base, "status": "error", "reason": msg})
                log(f"[red]error[/] {label} on {backend}: {msg}")
                continue
            rows.extend(model_rows)
            models.append(summary)
            gc.collect()
    if sampler:
        sampler.stop()
    env["load_average_end"] = load_average()
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": "edge_bench",
        "tool_version": __version__,
        "command": " ".join(sys.argv),
        "created": env["timestamp"],
        "wall_s": time.perf_counter() - t_begin,
        "inputs": inputs_desc,
        "emulation": cfg.emulation,
        "environment": env,
        "config": cfg.as_dict(),
        "models": models,
        "results": rows,
    }
    if cfg.auto:
        from .auto import select_winners

        report["auto"] = select_winners(report)
    return report


def _stratified(samples: list[tuple[Path, str]], limit: int) -> list[tuple[Path, str]]:
    """At most ``limit`` samples, the same number from each class (deterministic)."""
    by: dict[str, list[tuple[Path, str]]] = {}
    for s in samples:
        by.setdefault(s[1], []).append(s)
    per = max(1, limit // len(by))
    return [s for group in by.values() for s in group[:per]]


def _bench_one(label: str, path: Path, backend: str, mode: str | None, dtype: str | None, cfg: BenchConfig,
               images: list[Path] | None, samples: list[tuple[Path, str]] | None, inputs_desc: str,
               threads: int | None, deadline: float, sampler: TegrastatsSampler | None,
               log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    loaded: Loaded
    if mode is not None:
        loaded = load_checkpoint_backend(label, path, backend, mode, dtype or "fp32", threads)
    else:
        loaded = load_artifact_backend(label, path, backend, threads)
    info = loaded.info
    if images:
        t0 = time.perf_counter()
        pool = loaded.prepare(images)
        prep_ms = (time.perf_counter() - t0) * 1e3 / len(images)
    else:
        pool, prep_ms = loaded.synthetic(16), None
    n_pool = int(pool.shape[0])
    singles = [loaded.take(pool, i, i + 1) for i in range(n_pool)]
    t0 = time.perf_counter()
    loaded.run(singles[0])
    first_ms = (time.perf_counter() - t0) * 1e3

    accuracy: dict[str, Any] | None = None
    acc_reason = None if samples else "no labeled data (--data)"
    if samples:
        acc_reason = class_mismatch(samples, loaded.class_names)
        if acc_reason is None:
            accuracy = evaluate(lambda paths: loaded.to_probs(loaded.run(loaded.prepare(paths))), samples,
                                loaded.class_names)
            log(f"  accuracy top-1 {accuracy['top1']:.4f} on {accuracy['n']} images")

    common = {
        **_base_row(label, path, backend, loaded.variant, cfg.emulation),
        "kind": info.get("kind"),
        "precision": loaded.precision,
        "top1": accuracy["top1"] if accuracy else None,
        "mean_class_acc": accuracy["mean_class_acc"] if accuracy else None,
        "acc_n": accuracy["n"] if accuracy else None,
        "size_mb": info["size_bytes"] / 1e6,
        "params": info.get("params"),
        "load_s": info["load_s"],
        "first_inference_ms": first_ms,
        "preprocess_ms_per_image": prep_ms,
        "threads": threads,
    }
    rows: list[dict[str, Any]] = []
    mk = lambda b: loaded.make_batch(pool, b)  # noqa: E731

    def window(name: str, fn: Callable[[], Any]) -> Any:
        """Run a scenario; attach power and energy per image from tegrastats samples in each result's window."""
        res = fn()
        for r in res if isinstance(res, list) else [res]:
            win = r.pop("_window", None)
            if sampler and win:
                imgs = int(round((r.get("throughput_ips") or 0) * (r.get("duration_s") or 0)))
                e = sampler.energy(win[0], win[1], imgs)
                if e:
                    r.update(e)
        return res

    ss: dict[str, Any] | None = None
    for scen in cfg.scenarios:
        if time.perf_counter() >= deadline:
            rows.append({**common, "scenario": MLPERF_NAMES[scen], "status": "skipped",
                         "reason": "time budget (--max-seconds) exhausted"})
            continue
        if scen == "single-stream":
            ss = window(scen, lambda: single_stream(loaded.run, singles, warmup=cfg.warmup, count=cfg.count,
                                                    duration=cfg.duration, deadline=deadline))
            rows.append({**common, "scenario": "SingleStream", "status": "ok", **ss})
            log(f"  SingleStream p50 {ss['p50_ms']:.3f} ms  p90 {ss['p90_ms']:.3f} ms  (n={ss['n']})")
        elif scen == "offline":
            res = window(scen, lambda: offline(loaded.run, mk, batch_sizes=cfg.batch_sizes, warmup=2,
                                               count=cfg.count, duration=cfg.duration, deadline=deadline))
            for r in res:
                rows.append({**common, "scenario": "Offline", "status": r.pop("status", "ok"), **r})
            best = max((r.get("throughput_ips") or 0 for r in res), default=0)
            log(f"  Offline best {best:.1f} img/s over batches {list(cfg.batch_sizes)}")
        elif scen == "server":
            mean_ms, p50_ms = (ss["mean_ms"], ss["p50_ms"]) if ss else _quick_mean_p50(loaded.run, singles[0], deadline)
            qps = cfg.server_qps or max(0.1, 0.5 * 1000.0 / mean_ms)
            bound = cfg.server_bound_ms or max(1.0, 10.0 * p50_ms)
            r = window(scen, lambda: server(loaded.run, mk, target_qps=qps, bound_ms=bound,
                                            max_batch=cfg.server_max_batch, warmup=cfg.warmup, count=cfg.count,
                                            duration=cfg.duration, deadline=deadline, seed=cfg.seed))
            r["qps_auto"] = cfg.server_qps is None
            r["bound_auto"] = cfg.server_bound_ms is None
            rows.append({**common, "scenario": "Server", "status": "ok", **r})
            log(f"  Server {r['achieved_qps']:.1f}/{qps:.1f} QPS  p99 {r.get('p99_ms', float('nan')):.3f} ms  "
                f"bound {bound:.2f} ms {'met' if r['bound_met'] else 'MISSED'}")
    rss, peak = _rss_mb(), _process_peak_rss_mb()
    gpu = gpu_peak_memory_mb(backend)
    for r in rows:
        r.update(rss_mb=rss, process_peak_rss_mb=peak, gpu_mem_mb=gpu, inputs=inputs_desc)
    summary = {**common, "status": "ok", "info": info, "accuracy": accuracy, "accuracy_skipped": acc_reason,
               "rss_mb": rss, "process_peak_rss_mb": peak, "gpu_mem_mb": gpu}
    loaded.cleanup()
    return rows, summary


def _quick_mean_p50(fn: Callable[[Any], Any], x: Any, deadline: float, n: int = 20) -> tuple[float, float]:
    """Mean and median latency (ms) of a few batch-1 calls, for the Server defaults when SingleStream did not run."""
    lat = []
    for _ in range(n):
        if time.perf_counter() >= deadline:
            break
        t0 = time.perf_counter()
        fn(x)
        lat.append(time.perf_counter() - t0)
    if not lat:
        return 1.0, 1.0
    lat.sort()
    return sum(lat) / len(lat) * 1e3, lat[len(lat) // 2] * 1e3
