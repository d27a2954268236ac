"""``distill bench int8``: int8 variants of an fp32 artifact against it on this CPU, accuracy and interleaved speed.

The evidence behind export's default int8 configuration (:data:`export.quantize.DEFAULT_INT8`)::

    distill bench int8 runs/bench-cpu/models/student.onnx --data runs/bench-cpu/data/cifar_train_subset \\
        --configs cpu,qdq-s8s8 --batches 1,32,128 --threads 1,2 --rounds 7 --seconds 0.4 --out runs/bench-int8

* Variants come from :func:`export.quantize.to_int8` with the named :data:`export.quantize.INT8_CONFIGS`
  (``--configs all`` for every one), calibrated on ``--calib-per-class`` real images per class of ``--calib``
  (default ``--data``, after skipping ``--calib-skip`` files per class so calibration and accuracy images differ).
  Each variant carries the fp32 artifact's metadata with precision int8 and its configuration's name.
* Accuracy: top-1 on ``--data`` (``--per-class`` images per class) and top-1 agreement with fp32.
* Timing: every call is ``export.runtime.load_artifact(path, intra_op_threads=t).run(batch)`` on real images.
  The machine may be shared, so the models are interleaved: in each round every model runs ``--seconds`` (the
  order rotated per round); a round's figure is its median call time, and the speed-up is the median over rounds
  of the per-round ratio fp32 / int8 (paired, so load drifting between rounds cancels).

* ``--profile``: onnxruntime's per-node profile (batch 1 and the largest batch, 1 thread) summed per op type,
  through ``export.runtime`` (``load_artifact(..., profile_prefix=...)``).

The load average and the CPU's ISA flags are recorded with the numbers; output ``OUT/bench_int8.json`` and a
markdown table.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from distill.errors import ConfigError

from .scenarios import Clock

Log = Callable[[str], None]


@dataclass(frozen=True)
class Int8Bench:
    """What to compare and how long; every field is a ``distill bench int8`` option."""

    fp32: Path
    data: Path
    out: Path
    configs: tuple[str, ...]
    calib: Path | None = None
    per_class: int = 100
    calib_per_class: int = 20
    calib_skip: int = 0
    batches: tuple[int, ...] = (1, 32, 128)
    threads: tuple[int, ...] = (1, 2)
    rounds: int = 7
    seconds: float = 0.4
    spin: bool | None = None
    reuse: bool = False
    timing: bool = True
    profile: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def parse_configs(text: str) -> tuple[str, ...]:
    from export.quantize import INT8_CONFIGS

    names = list(INT8_CONFIGS) if text.strip() == "all" else [c.strip() for c in text.split(",") if c.strip()]
    bad = [n for n in names if n not in INT8_CONFIGS]
    if bad or not names:
        raise ConfigError(f"unknown int8 configuration(s) {', '.join(map(repr, bad)) or '(none)'}; "
                          f"choose from {', '.join(INT8_CONFIGS)} or all")
    return tuple(dict.fromkeys(names))


def per_class_files(root: Path, per_class: int, skip: int = 0) -> tuple[list[Path], list[int], list[str]]:
    """``per_class`` images of each class folder after skipping ``skip`` (the image-folder rule of distill.data)."""
    from distill.data.archive import labeled_images

    by_class: dict[str, list[Path]] = defaultdict(list)
    for path, name in labeled_images(root):
        by_class[name].append(path)
    classes = sorted(by_class)
    files, labels = [], []
    for i, c in enumerate(classes):
        take = by_class[c][skip:skip + per_class]
        files += take
        labels += [i] * len(take)
    if not files:
        raise ConfigError(f"no labelled images in {root} (after skipping {skip} per class)")
    return files, labels, classes


def build_variants(fp32: Path, out: Path, names: Sequence[str], calib: np.ndarray, log: Log) -> dict[str, Path]:
    """``OUT/<stem>.<config>.onnx`` for each configuration, written atomically with the fp32 artifact's metadata."""
    import onnx

    from distill.io import atomic_path
    from export.metadata import read_metadata, write_metadata
    from export.quantize import INT8_CONFIGS, to_int8

    meta = read_metadata(fp32)
    model = onnx.load(str(fp32))
    paths = {}
    for name in names:
        dst = out / f"{fp32.stem}.{name}.onnx"
        t = time.perf_counter()
        q = to_int8(model, calib, meta.input_name, config=INT8_CONFIGS[name])
        with atomic_path(dst) as tmp:
            onnx.save(write_metadata(q, meta.model_copy(update={"precision": "int8", "quantization": name})), tmp)
        log(f"built {name} ({INT8_CONFIGS[name].describe()}) in {time.perf_counter() - t:.1f}s -> {dst}")
        paths[name] = dst
    return paths


def variant_accuracy(paths: dict[str, Path], x: np.ndarray, y: np.ndarray, chunk: int = 256) -> dict[str, dict[str, Any]]:
    """Top-1 of each model and its top-1 agreement with the first one (fp32)."""
    from export.runtime import load_artifact

    res: dict[str, dict[str, Any]] = {}
    ref = None
    for name, p in paths.items():
        art = load_artifact(p, providers=["CPUExecutionProvider"])
        pred = np.concatenate([art.run(x[s:s + chunk]) for s in range(0, len(x), chunk)]).argmax(1)
        ref = pred if ref is None else ref
        res[name] = {"top1": float((pred == y).mean()), "agree_fp32": float((pred == ref).mean()), "n": int(len(y))}
    return res


def paired_rows(per_round: dict[str, list[float]], *, threads: int, batch: int) -> list[dict[str, Any]]:
    """Rows from per-round median call times (seconds); the first model is the reference (fp32).

    The speed-up is the median over rounds of reference / model in the same round, not a ratio of medians.
    """
    names = list(per_round)
    ref = per_round[names[0]]
    rows = []
    for n in names:
        ratios = [f / m for f, m in zip(ref, per_round[n])]
        med = statistics.median(per_round[n])
        rows.append({"model": n, "threads": threads, "batch": batch, "median_ms": med * 1e3, "img_per_s": batch / med,
                     "speedup_vs_fp32": statistics.median(ratios), "speedup_min": min(ratios),
                     "speedup_max": max(ratios), "round_ms": [v * 1e3 for v in per_round[n]]})
    return rows


def timed_median(run: Callable[[], Any], seconds: float, clock: Clock = time.perf_counter) -> float:
    """Median call time of ``run`` over at least ``seconds`` (and at least three calls)."""
    ts: list[float] = []
    end = clock() + seconds
    while True:
        t0 = clock()
        run()
        ts.append(clock() - t0)
        if t0 + ts[-1] >= end and len(ts) >= 3:
            return statistics.median(ts)


def time_interleaved(paths: dict[str, Path], x: np.ndarray, cfg: Int8Bench, log: Log,
                     clock: Clock = time.perf_counter) -> list[dict[str, Any]]:
    from export.runtime import load_artifact

    rows: list[dict[str, Any]] = []
    names = list(paths)
    for t in cfg.threads:
        arts = {n: load_artifact(p, providers=["CPUExecutionProvider"], intra_op_threads=t, allow_spinning=cfg.spin)
                for n, p in paths.items()}
        for b in cfg.batches:
            batch = np.ascontiguousarray(np.concatenate([x] * -(-b // len(x)))[:b])
            for a in arts.values():  # warm-up (allocations, kernel selection)
                for _ in range(3):
                    a.run(batch)
            per_round: dict[str, list[float]] = {n: [] for n in names}
            for r in range(cfg.rounds):
                for n in names[r % len(names):] + names[:r % len(names)]:
                    per_round[n].append(timed_median(lambda: arts[n].run(batch), cfg.seconds, clock))
            rows += paired_rows(per_round, threads=t, batch=b)
            line = "  ".join(f"{n}={statistics.median(v) * 1e3:.3f}ms" for n, v in per_round.items())
            log(f"threads={t} batch={b}: {line}  (load {os.getloadavg()[0]:.1f})")
    return rows


def op_profile(paths: dict[str, Path], x: np.ndarray, batches: Sequence[int], out: Path, log: Log,
               iters: int = 50) -> dict[str, Any]:
    """onnxruntime's per-node profile (1 thread) summed per op type, per model and batch size (microseconds per run)."""
    from export.runtime import load_artifact

    result: dict[str, Any] = {}
    for name, p in paths.items():
        for b in batches:
            art = load_artifact(p, providers=["CPUExecutionProvider"], intra_op_threads=1,
                                profile_prefix=str(out / f"prof_{name}_b{b}"))
            batch = np.ascontiguousarray(np.concatenate([x] * -(-b // len(x)))[:b])
            for _ in range(5 + iters):
                art.run(batch)
            trace = art.end_profiling()
            events = json.loads(trace.read_text())
            trace.unlink(missing_ok=True)
            per_op: dict[str, float] = defaultdict(float)
            total, nodes = 0.0, 0
            for e in events:
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    per_op[e.get("args", {}).get("op_name", "?")] += e["dur"]
                    nodes += 1
                elif e.get("cat") == "Session" and e.get("name") == "model_run":
                    total += e["dur"]
            runs = 5 + iters
            r = {"model_run_us": total / runs, "nodes": nodes // runs,
                 "ops_us": {k: v / runs for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}}
            result[f"{name}/b{b}"] = r
            ops = ", ".join(f"{k} {v:.0f}" for k, v in list(r["ops_us"].items())[:8])
            log(f"profile {name} b{b}: run {r['model_run_us']:.0f} us, {r['nodes']} nodes: {ops}")
    return result


def run_int8_bench(cfg: Int8Bench, log: Log = print) -> dict[str, Any]:
    """Build (or reuse) the variants, measure accuracy and interleaved speed; returns the report."""
    from export.quantize import INT8_CONFIGS
    from export.runtime import load_artifact

    from distill.isa import cpu_features, cpu_model, isa_class

    load_before = os.getloadavg()
    base = load_artifact(cfg.fp32, providers=["CPUExecutionProvider"])
    files, labels, _ = per_class_files(cfg.data, cfg.per_class)
    x, y = base.prepare(files), np.asarray(labels)
    calib_dir = cfg.calib or cfg.data
    cfiles, _, _ = per_class_files(calib_dir, cfg.calib_per_class, skip=cfg.calib_skip)
    random.Random(0).shuffle(cfiles)
    log(f"cpu: {cpu_model()} x{os.cpu_count()} flags {' '.join(cpu_features())}; load {load_before}")
    log(f"accuracy: {len(files)} images from {cfg.data}; calibration: {len(cfiles)} images from {calib_dir}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    variants = {n: cfg.out / f"{cfg.fp32.stem}.{n}.onnx" for n in cfg.configs}
    todo = [n for n, p in variants.items() if not (cfg.reuse and p.exists())]
    if todo:
        variants.update(build_variants(cfg.fp32, cfg.out, todo, base.prepare(cfiles), log))
    paths = {"fp32": cfg.fp32} | variants
    acc = variant_accuracy(paths, x, y)
    for n, r in acc.items():
        log(f"accuracy {n}: top1 {100 * r['top1']:.2f}%  agree-with-fp32 {100 * r['agree_fp32']:.2f}%  "
            f"(delta {100 * (r['top1'] - acc['fp32']['top1']):+.2f} pt)")
    rows = time_interleaved(paths, x, cfg, log) if cfg.timing else []
    prof = op_profile(paths, x, sorted({cfg.batches[0], cfg.batches[-1]}), cfg.out, log) if cfg.profile else None
    import onnxruntime

    return {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": list(cpu_features()), "isa_class": isa_class(), "onnxruntime": onnxruntime.__version__,
        "load_before": list(load_before), "load_after": list(os.getloadavg()), "fp32": str(cfg.fp32),
        "settings": {"batches": list(cfg.batches), "threads": list(cfg.threads), "rounds": cfg.rounds,
                     "seconds": cfg.seconds, "spin": cfg.spin, "per_class": cfg.per_class,
                     "calib": str(calib_dir), "calib_per_class": cfg.calib_per_class, "calib_skip": cfg.calib_skip},
        "configs": {n: INT8_CONFIGS[n].describe() for n in cfg.configs},
        "sizes": {n: p.stat().st_size for n, p in paths.items()}, "accuracy": acc, "timing": rows, "profile": prof,
        **cfg.extra,
    }


def markdown_table(report: dict[str, Any]) -> str:
    acc = report["accuracy"]
    lines = ["| model | threads | batch | median ms | img/s | speed-up vs fp32 (min..max over rounds) | top-1 |",
             "|---|---|---|---|---|---|---|"]
    for r in report["timing"]:
        lines.append(f"| {r['model']} | {r['threads']} | {r['batch']} | {r['median_ms']:.3f} | {r['img_per_s']:.0f} | "
                     f"{r['speedup_vs_fp32']:.2f}x ({r['speedup_min']:.2f}..{r['speedup_max']:.2f}) | "
                     f"{100 * acc[r['model']]['top1']:.2f}% |")
    return "\n".join(lines)
