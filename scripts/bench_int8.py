#!/usr/bin/env python
"""INT8 vs fp32 on this CPU: build int8 variants of an fp32 artifact, check accuracy, time them interleaved.

    .venv/bin/python scripts/bench_int8.py runs/bench-cpu/models/student.onnx \\
        --data runs/bench-cpu/data/cifar_train_subset --configs qdq-s8s8,qdq-u8s8 \\
        --batches 1,32,128 --threads 1,2 --rounds 7 --seconds 0.4 --out runs/bench-int8

* Variants come from :func:`export.quantize.to_int8` with the named :data:`export.quantize.INT8_CONFIGS`
  (``--configs all`` for every one), calibrated on ``--calib-per-class`` real images per class taken from
  ``--calib`` (default: the extracted CIFAR-10 training JPEGs, files disjoint from the accuracy images when both
  come from the same folder). Each variant is written with the fp32 artifact's metadata (precision int8).
* Accuracy: top-1 on ``--data`` (ImageFolder, ``--per-class`` images per class) and top-1 agreement with fp32.
* Timing: every timed call is ``export.runtime.load_artifact(path, intra_op_threads=t).run(batch)`` on real
  images. The machine is shared, so the models are interleaved: in each round every model runs ``--seconds``
  (order rotated per round); a round's figure is its median call time; the speed-up is the median over rounds
  of the per-round ratio fp32 / int8 (paired, so load drifting between rounds cancels).
* ``--profile``: onnxruntime's per-node profile (batch 1 and the largest batch, 1 thread) summed per op type.
The load average is recorded before and after; output: ``OUT/bench_int8.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from export.metadata import write_metadata  # noqa: E402
from export.quantize import DEFAULT_INT8, INT8_CONFIGS, Int8Config, to_int8  # noqa: E402
from export.isa import cpu_features, isa_class  # noqa: E402
from export.runtime import load_artifact  # noqa: E402

DEFAULT_CALIB = Path.home() / ".cache/distill/extracted"


def cpu_flags() -> list[str]:
    """The ISA features that decide the int8 kernels (export.isa, the one home of that list)."""
    return list(cpu_features())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def image_folder(root: Path, per_class: int, skip: int = 0) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        imgs = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        take = imgs[skip:skip + per_class]
        files += take
        labels += [i] * len(take)
    return files, labels, classes


def default_calib_dir() -> Path | None:
    found = sorted(DEFAULT_CALIB.glob("cifar10-train-jpeg-*/train"))
    return found[0] if found else None


def build_variants(fp32: Path, out: Path, names: list[str], calib: np.ndarray) -> dict[str, Path]:
    import onnx

    base = load_artifact(fp32, providers=["CPUExecutionProvider"])
    model = onnx.load(str(fp32))
    paths = {}
    for name in names:
        dst = out / f"{fp32.stem}.{name}.onnx"
        t = time.perf_counter()
        q = to_int8(model, calib, base.meta.input_name, config=INT8_CONFIGS[name])
        onnx.save(write_metadata(q, base.meta.model_copy(update={"precision": "int8"})), dst)
        print(f"built {name:28s} ({INT8_CONFIGS[name].describe()}) in {time.perf_counter() - t:.1f}s -> {dst}",
              flush=True)
        paths[name] = dst
    return paths


def accuracy(paths: dict[str, Path], x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, float]] = {}
    ref = None
    for name, p in paths.items():
        art = load_artifact(p, providers=["CPUExecutionProvider"])
        pred = np.concatenate([art.run(x[s:s + 256]) for s in range(0, len(x), 256)]).argmax(1)
        if ref is None:
            ref = pred
        res[name] = {"top1": float((pred == y).mean()), "agree_fp32": float((pred == ref).mean()), "n": int(len(y))}
    return res


def time_interleaved(paths: dict[str, Path], x: np.ndarray, batches: list[int], threads: list[int], rounds: int,
                     seconds: float, spin: bool | None) -> list[dict]:
    rows = []
    names = list(paths)
    for t in threads:
        arts = {n: load_artifact(p, providers=["CPUExecutionProvider"], intra_op_threads=t) for n, p in paths.items()}
        if spin is not None:  # rebuild sessions with spinning set explicitly
            arts = {n: _with_spin(p, t, spin) for n, p in paths.items()}
        for b in batches:
            reps = int(np.ceil(b / len(x)))
            batch = np.ascontiguousarray(np.concatenate([x] * reps)[:b])
            for a in arts.values():  # warm-up (allocations, kernel selection)
                for _ in range(3):
                    a.run(batch)
            per_round: dict[str, list[float]] = {n: [] for n in names}
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for n in order:
                    a = arts[n]
                    ts = []
                    end = time.perf_counter() + seconds
                    while True:
                        t0 = time.perf_counter()
                        a.run(batch)
                        ts.append(time.perf_counter() - t0)
                        if t0 + ts[-1] >= end and len(ts) >= 3:
                            break
                    per_round[n].append(statistics.median(ts))
            fp = per_round[names[0]]
            for n in names:
                ratios = [f / m for f, m in zip(fp, per_round[n])]
                med = statistics.median(per_round[n])
                rows.append({"model": n, "threads": t, "batch": b, "median_ms": med * 1e3,
                             "img_per_s": b / med, "speedup_vs_fp32": statistics.median(ratios),
                             "speedup_min": min(ratios), "speedup_max": max(ratios),
                             "round_ms": [v * 1e3 for v in per_round[n]]})
            line = "  ".join(f"{n}={statistics.median(per_round[n]) * 1e3:.3f}ms" for n in names)
            print(f"threads={t} batch={b}: {line}  (load {os.getloadavg()[0]:.1f})", flush=True)
    return rows


def _with_spin(path: Path, threads: int, spin: bool):
    import onnxruntime as ort

    from export.runtime import Artifact, ArtifactMetadata

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    meta = ArtifactMetadata.from_props(dict(sess.get_modelmeta().custom_metadata_map), path)

    class S:
        input_name = sess.get_inputs()[0].name
        output_names = list(meta.output_names)
        providers = sess.get_providers()

        def run(self, batch):
            return sess.run(self.output_names, {self.input_name: batch})

    return Artifact(path, meta, S(), backend="onnxruntime")


def profile(paths: dict[str, Path], x: np.ndarray, batches: list[int], out: Path, iters: int = 50) -> dict:
    import onnxruntime as ort

    result: dict = {}
    for name, p in paths.items():
        for b in batches:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.enable_profiling = True
            opts.profile_file_prefix = str(out / f"prof_{name}_b{b}")
            opts.optimized_model_filepath = str(out / f"optimized_{name}.onnx")
            sess = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
            batch = np.ascontiguousarray(np.concatenate([x] * int(np.ceil(b / len(x))))[:b])
            inp = sess.get_inputs()[0].name
            for _ in range(5):
                sess.run(None, {inp: batch})
            for _ in range(iters):
                sess.run(None, {inp: batch})
            prof = sess.end_profiling()
            events = json.loads(Path(prof).read_text())
            per_op: dict[str, float] = {}
            total_run = 0.0
            for e in events:
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    op = e.get("args", {}).get("op_name", "?")
                    per_op[op] = per_op.get(op, 0.0) + e["dur"]
                elif e.get("cat") == "Session" and e.get("name") == "model_run":
                    total_run += e["dur"]
            n_runs = iters + 5
            result[f"{name}/b{b}"] = {
                "model_run_us": total_run / n_runs,
                "ops_us": {k: v / n_runs for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
                "nodes": sum(1 for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")) // n_runs,
            }
            Path(prof).unlink(missing_ok=True)
            r = result[f"{name}/b{b}"]
            ops = ", ".join(f"{k} {v:.0f}" for k, v in list(r["ops_us"].items())[:8])
            print(f"profile {name} b{b}: run {r['model_run_us']:.0f} us, {r['nodes']} nodes: {ops}", flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32", type=Path, help="fp32 .onnx artifact (export's output)")
    ap.add_argument("--data", type=Path, required=True, help="labelled ImageFolder for accuracy")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--calib", type=Path, default=None, help="ImageFolder for calibration (default: CIFAR-10 train)")
    ap.add_argument("--calib-per-class", type=int, default=20)
    ap.add_argument("--calib-skip", type=int, default=2000, help="skip this many files per class in --calib")
    ap.add_argument("--configs", default=DEFAULT_INT8, help="comma-separated INT8_CONFIGS keys, or 'all'")
    ap.add_argument("--reuse", action="store_true", help="reuse variants already in --out")
    ap.add_argument("--batches", default="1,32,128")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.4)
    ap.add_argument("--spin", choices=("default", "on", "off"), default="default",
                    help="session.intra_op.allow_spinning")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "runs/bench-int8")
    a = ap.parse_args()

    a.out.mkdir(parents=True, exist_ok=True)
    names = list(INT8_CONFIGS) if a.configs == "all" else [c.strip() for c in a.configs.split(",") if c.strip()]
    for n in names:
        if n not in INT8_CONFIGS:
            ap.error(f"unknown config {n!r}; known: {', '.join(INT8_CONFIGS)}")
    load_before = os.getloadavg()
    base = load_artifact(a.fp32, providers=["CPUExecutionProvider"])
    files, labels, classes = image_folder(a.data, a.per_class)
    x = base.prepare(files)
    y = np.asarray(labels)
    calib_dir = a.calib or default_calib_dir() or a.data
    cfiles, _, _ = image_folder(calib_dir, a.calib_per_class, skip=a.calib_skip)
    random.Random(0).shuffle(cfiles)
    calib = base.prepare(cfiles)
    print(f"cpu: {cpu_model()} x{os.cpu_count()} flags {' '.join(cpu_flags())}; load {load_before}", flush=True)
    print(f"accuracy: {len(files)} images from {a.data}; calibration: {len(cfiles)} images from {calib_dir}")

    if a.reuse:
        variants = {n: a.out / f"{a.fp32.stem}.{n}.onnx" for n in names}
        missing = [n for n, p in variants.items() if not p.exists()]
        variants.update(build_variants(a.fp32, a.out, missing, calib) if missing else {})
    else:
        variants = build_variants(a.fp32, a.out, names, calib)
    paths = {"fp32": a.fp32} | variants
    acc = accuracy(paths, x, y)
    for n, r in acc.items():
        print(f"accuracy {n:28s} top1 {100 * r['top1']:.2f}%  agree-with-fp32 {100 * r['agree_fp32']:.2f}%  "
              f"(delta {100 * (r['top1'] - acc['fp32']['top1']):+.2f} pt)")
    batches = [int(b) for b in a.batches.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    spin = None if a.spin == "default" else a.spin == "on"
    rows = [] if a.no_timing else time_interleaved(paths, x, batches, threads, a.rounds, a.seconds, spin)
    prof = profile(paths, x, [batches[0], batches[-1]], a.out) if a.profile else None
    report = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(), "isa_class": isa_class(),
        "onnxruntime": __import__("onnxruntime").__version__, "load_before": load_before,
        "load_after": os.getloadavg(), "argv": sys.argv, "fp32": str(a.fp32),
        "configs": {n: INT8_CONFIGS[n].describe() for n in names}, "sizes": {n: p.stat().st_size for n, p in paths.items()},
        "accuracy": acc, "timing": rows, "profile": prof,
    }
    (a.out / "bench_int8.json").write_text(json.dumps(report, indent=1))
    if rows:
        print("\n| model | threads | batch | median ms | img/s | speed-up vs fp32 (min..max over rounds) | top-1 |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['threads']} | {r['batch']} | {r['median_ms']:.3f} | {r['img_per_s']:.0f} | "
                  f"{r['speedup_vs_fp32']:.2f}x ({r['speedup_min']:.2f}..{r['speedup_max']:.2f}) | "
                  f"{100 * acc[r['model']]['top1']:.2f}% |")
    print(f"load average before {load_before}, after {os.getloadavg()}; report {a.out / 'bench_int8.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
