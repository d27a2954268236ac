#!/usr/bin/env python3
"""Jetson image entry point: build the TensorRT engine on the device at first start, reuse it after, then serve.

A TensorRT engine only runs on the GPU model and the exact TensorRT version it was built with, so it cannot ship
in the image: the image ships the ONNX artifact (mounted at ``/models/model.onnx``, or the fp16 / int8-trt
variant per ``DISTILL_TRT_PRECISION``), and this script keeps engines in a cache volume
(``DISTILL_ENGINE_CACHE``, default ``/cache/engines``), one file per

    <onnx sha256[:16]>.<precision>.trt<TensorRT version>.sm<compute capability>.engine  (+ .engine.json sidecar)

At start it reuses the engine whose sidecar matches this ONNX (sha256), precision, TensorRT version, GPU name and
compute capability (:func:`export.tensorrt.check_engine_compat`, the same check the loader applies); otherwise it
builds one (:func:`export.tensorrt.build_engine`, atomically) and records why. Then it runs ``python -m serve
--model <engine>``. ``--plan`` prints the decision as JSON and exits (what the tests and a curious user run).

    python3 scripts/container/jetson_start.py                 # in the image: the ENTRYPOINT
    python3 scripts/container/jetson_start.py --plan          # build or reuse, and why (JSON), nothing built
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

PRECISIONS = ("fp16", "fp32", "int8")
#: the ONNX variant each engine precision is built from (TensorRT 10 builds fp16 from fp32 too; 11 needs the fp16 ONNX)
ONNX_FOR = {"fp32": "{stem}.onnx", "fp16": "{stem}.fp16.onnx", "int8": "{stem}.int8-trt.onnx"}


@dataclass
class Decision:
    action: str            # "reuse" or "build"
    engine: str
    onnx: str
    precision: str
    reason: str
    key: dict[str, str]


def pick_onnx(model: Path, precision: str) -> Path:
    """The ONNX to build from: the variant for ``precision`` next to ``model`` when present, else ``model``."""
    if precision not in PRECISIONS:
        raise SystemExit(f"error: DISTILL_TRT_PRECISION={precision!r}; choose {', '.join(PRECISIONS)}")
    stem = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.stem
    variant = model.with_name(ONNX_FOR[precision].format(stem=stem))
    if variant.is_file():
        return variant
    if precision == "int8":
        raise SystemExit(f"error: int8 engines need the TensorRT Q/DQ ONNX {variant.name} (distill export onnx "
                         "--quantize int8-trt); it is not next to " + str(model))
    return model


def engine_key(onnx_sha256: str, precision: str, trt_version: str, gpu: dict[str, str]) -> dict[str, str]:
    return {"onnx_sha256": onnx_sha256, "precision": precision, "tensorrt_version": str(trt_version),
            "gpu_name": gpu["name"], "compute_capability": gpu["compute_capability"]}


def engine_name(key: dict[str, str]) -> str:
    cc = key["compute_capability"].replace(".", "")
    return f"{key['onnx_sha256'][:16]}.{key['precision']}.trt{key['tensorrt_version']}.sm{cc}.engine"


def plan(model: Path, cache: Path, precision: str, trt_version: str, gpu: dict[str, str]) -> Decision:
    """Reuse the cached engine when its sidecar matches this ONNX, precision, TensorRT and GPU; else build."""
    from distill.io import sha256_file
    from export.errors import ArtifactError
    from export.tensorrt import check_engine_compat, read_sidecar

    if not model.is_file():
        raise SystemExit(f"error: no ONNX artifact at {model} (mount it: -v /path/to/models:/models:ro)")
    onnx = pick_onnx(model, precision)
    key = engine_key(sha256_file(onnx), precision, trt_version, gpu)
    engine = cache / engine_name(key)
    base = dict(engine=str(engine), onnx=str(onnx), precision=precision, key=key)
    if not engine.is_file():
        return Decision("build", reason="no cached engine for this ONNX, precision, TensorRT version and GPU", **base)
    try:
        side = read_sidecar(engine)
        check_engine_compat(side, tensorrt_version=trt_version, gpu_name=gpu["name"],
                            compute_capability=gpu["compute_capability"], engine=engine)
    except ArtifactError as e:
        return Decision("build", reason=f"cached engine unusable: {e}", **base)
    if (side.get("onnx") or {}).get("sha256") != key["onnx_sha256"]:
        return Decision("build", reason="cached engine was built from another ONNX", **base)
    if side.get("precision") != precision:
        return Decision("build", reason=f"cached engine is {side.get('precision')}, {precision} wanted", **base)
    return Decision("reuse", reason=f"engine built {side.get('created', '?')} matches ONNX, precision, TensorRT "
                                    f"{trt_version} and {gpu['name']} (sm {gpu['compute_capability']})", **base)


def ensure_engine(decision: Decision, build: Callable[..., dict[str, Any]] | None = None,
                  **build_kw: Any) -> dict[str, Any]:
    """Carry the decision out: build (atomically, into the cache) or reuse; returns what happened and how long."""
    if decision.action == "reuse":
        return {"action": "reuse", "engine": decision.engine, "build_s": 0.0}
    if build is None:
        from export.tensorrt import build_engine as build
    Path(decision.engine).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info = build(decision.onnx, decision.engine, precision=decision.precision, **build_kw)
    return {"action": "build", "engine": decision.engine, "build_s": round(time.time() - t0, 1), "info": info}


def environment() -> tuple[str, dict[str, str]]:
    """(TensorRT version, GPU facts) of this device; a clear error when either is missing."""
    from distill.errors import DistillError
    from export.tensorrt import gpu_info, import_tensorrt

    try:
        trt = import_tensorrt()
        return str(trt.__version__), gpu_info()
    except DistillError as e:
        raise SystemExit(f"error: {e}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("DISTILL_ONNX_MODEL", "/models/model.onnx")))
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("DISTILL_ENGINE_CACHE", "/cache/engines")))
    ap.add_argument("--precision", default=os.environ.get("DISTILL_TRT_PRECISION", "fp16"), choices=PRECISIONS)
    ap.add_argument("--max-batch", type=int, default=int(os.environ.get("DISTILL_TRT_MAX_BATCH", "32")))
    ap.add_argument("--plan", action="store_true", help="print the build-or-reuse decision as JSON and exit")
    args, serve_args = ap.parse_known_args(argv)
    trt_version, gpu = environment()
    decision = plan(args.model, args.cache, args.precision, trt_version, gpu)
    print(json.dumps({"jetson_start": asdict(decision)}), file=sys.stderr, flush=True)
    if args.plan:
        print(json.dumps(asdict(decision), indent=2))
        return 0
    done = ensure_engine(decision, max_batch=args.max_batch, opt_batch=min(8, args.max_batch))
    print(json.dumps({"jetson_start": {k: v for k, v in done.items() if k != "info"}}), file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "serve", "--model", done["engine"], *serve_args])
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
