"""``export_openvino``: a verified ONNX artifact -> OpenVINO IR (fp32, fp16-compressed, int8, bf16), verified.

The source is an fp32 artifact written by ``distill export onnx`` (its verification report must say it passed).
Every IR carries the source's metadata in its runtime info (:mod:`export.runtime_openvino`) plus the facts OpenVINO
needs, and goes through the same gate as ONNX: on real images the fp32 IR must match the ONNX artifact (max abs
difference of the graph outputs within the ONNX artifact's own threshold, 100% top-1 agreement, batch 1 and 7),
else :class:`~export.errors.VerificationError` and nothing is written. Variants are measured and reported
(accuracy, top-1 agreement with fp32), never fatal.

=========  =====================================  =========================================================
variant    file                                   what
=========  =====================================  =========================================================
fp32       ``model.xml`` + ``.bin``               fp32 weights, compiled with INFERENCE_PRECISION_HINT=f32
                                                  (pinned: OpenVINO picks bf16 by default on AMX/AVX-512 BF16)
fp16       ``model.fp16.xml``                     weights compressed to fp16 (half the size; CPUs decompress
                                                  them and compute in f32, iGPUs/NPUs run fp16 natively)
int8       ``model.int8.xml``                     ``qdq``: our calibrated Q/DQ graph (:func:`export.quantize.
                                                  to_int8`, the configuration this CPU's ISA measured best),
                                                  read by OpenVINO's low-precision transformations; ``nncf``:
                                                  NNCF post-training quantisation of the fp32 IR
bf16       ``model.bf16.xml``                     fp32 weights, compiled with the bf16 hint (a labelled variant)
=========  =====================================  =========================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distill.io import check_writable, sha256_file

from .errors import ArtifactError, ExportError, VerificationError
from .metadata import ArtifactMetadata
from .runtime_openvino import INSTALL_HINT, OV_PRECISION, write_rt_info

VARIANTS = ("fp32", "fp16", "int8", "bf16")
INT8_SOURCES = ("qdq", "nncf")
#: Measured on the ResNet-56 teacher and the folded student (docs/results.md, issue 16): see DEFAULT_INT8_SOURCE.
DEFAULT_INT8_SOURCE = "qdq"
DEFAULT_MAX_CALIB_IMAGES = 256


@dataclass
class OpenVinoResult:
    """What :func:`export_openvino` wrote: IR paths per variant and the verification report stored in each."""

    paths: dict[str, Path]
    report: dict[str, Any]
    metadata: ArtifactMetadata
    messages: list[str] = field(default_factory=list)


def ir_path(output: str | Path, variant: str) -> Path:
    """``model.xml`` -> ``model.fp16.xml`` / ``model.int8.xml`` / ``model.bf16.xml`` (fp32 keeps ``model.xml``)."""
    out = Path(output)
    return out if variant == "fp32" else out.with_name(f"{out.stem}.{variant}{out.suffix}")


def check_variants(variants: Sequence[str] | str | None) -> tuple[str, ...]:
    items = [variants] if isinstance(variants, str) else list(variants or [])
    names = [s.strip() for v in items for s in v.split(",") if s.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise ExportError(f"unknown OpenVINO variant {', '.join(map(repr, bad))}; choose from {', '.join(VARIANTS)}")
    return tuple(dict.fromkeys(["fp32", *names]))


def _openvino() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise ExportError(f"distill export openvino needs OpenVINO: {INSTALL_HINT}") from None
    return ov


def load_source(onnx_path: str | Path) -> tuple[Path, Any]:
    """The fp32 ONNX artifact (loaded with onnxruntime on CPU); it must carry a passed verification report."""
    from .runtime import load_artifact

    src = Path(onnx_path)
    if src.suffix.lower() != ".onnx":
        raise ExportError(f"--onnx {src} should be an .onnx artifact from 'distill export onnx'")
    art = load_artifact(src, providers=["CPUExecutionProvider"])
    if art.meta.precision != "fp32":
        raise ExportError(f"{src.name} is a {art.meta.precision} artifact; convert the fp32 one (variants are "
                          "built here from it)")
    ver = art.meta.verification or {}
    if not ver.get("passed"):
        raise ExportError(f"{src.name} carries no passed verification report; export it with 'distill export onnx'")
    if art.is_embedding:
        raise ExportError("embedding artifacts are not supported by the OpenVINO exporter yet (use the ONNX artifact)")
    return src, art


def verification_images(art: Any, verify_dir: str | Path | None, calib_dir: str | Path | None,
                        max_images: int) -> Any:
    """--verify-dir, else --calib-dir, else the folder the ONNX artifact was verified on (when it is here)."""
    from .verify import list_folder, load_images

    folder = verify_dir or calib_dir
    if folder is None:
        recorded = (art.meta.verification or {}).get("source")
        if recorded and Path(str(recorded)).is_dir():
            folder = recorded
    if folder is None:
        raise ExportError("no real images to verify the IR on: pass --verify-dir DIR (an ImageFolder or a folder of "
                          "images)")
    files, labels = list_folder(folder, art.meta.class_names)
    return load_images(files, labels, art.meta.preprocess, str(folder), max_images)


def int8_model(ov: Any, source: str, onnx_path: Path, art: Any, calib: np.ndarray, fp32_model: Any,
               config: str | None) -> tuple[Any, dict[str, Any]]:
    """The int8 IR and how it was made: our Q/DQ graph read by OpenVINO, or NNCF post-training quantisation."""
    if source == "qdq":
        import onnx

        from .quantize import default_int8_config, to_int8

        name = config or default_int8_config()
        qdq = to_int8(onnx.load(str(onnx_path)), calib, art.meta.input_name, config=name)
        with tempfile.TemporaryDirectory(prefix="distill-ov-int8-") as tmp:
            p = Path(tmp) / "int8.onnx"
            onnx.save(qdq, str(p))
            model = ov.convert_model(str(p))
        return model, {"method": "qdq", "config": name, "calibration_images": int(len(calib))}
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    data = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars must not corrupt --json on stdout
        model = nncf.quantize(fp32_model.clone(), data, preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=int(len(calib)))
    return model, {"method": "nncf", "nncf": nncf.__version__, "preset": "performance",
                   "calibration_images": int(len(calib))}


def export_openvino(
    onnx_path: str | Path,
    output: str | Path | None = None,
    *,
    variants: Sequence[str] | str = ("fp32",),
    verify_dir: str | Path | None = None,
    calib_dir: str | Path | None = None,
    max_verify_images: int = 1000,
    max_calib_images: int = DEFAULT_MAX_CALIB_IMAGES,
    int8_source: str | None = None,
    int8_config: str | None = None,
    verbose: bool = True,
) -> OpenVinoResult:
    """Convert a verified fp32 ONNX artifact to OpenVINO IR variants, verify them on real images, write atomically.

    Raises :class:`~distill.errors.DistillError` subclasses for bad input (no openvino, wrong artifact, no images)
    and :class:`VerificationError` (nothing written) when the fp32 IR does not match the ONNX artifact.
    """
    from distill.cli_base import console

    say = console.print if verbose else (lambda *a, **k: None)
    chosen = check_variants(variants)
    int8_source = int8_source or DEFAULT_INT8_SOURCE
    if int8_source not in INT8_SOURCES:
        raise ExportError(f"unknown --int8 {int8_source!r}; choose from {', '.join(INT8_SOURCES)}")
    ov = _openvino()
    src, art = load_source(onnx_path)
    output = Path(output) if output is not None else src.with_suffix(".xml")
    if output.suffix.lower() != ".xml":
        raise ExportError(f"output {output} should end in .xml (the IR is model.xml + model.bin)")
    paths = {v: ir_path(output, v) for v in chosen}
    for p in paths.values():
        check_writable(p)
        check_writable(p.with_suffix(".bin"))

    from .verify import run_artifact

    data = verification_images(art, verify_dir, calib_dir, max_verify_images)
    x = data.inputs(art.meta.input_kind, art.meta.preprocess)
    ref_raw = run_artifact(art, x)
    ref_probs = art.run(x)
    source_info = {"file": src.name, "sha256": sha256_file(src), "precision": art.meta.precision,
                   "format": "onnx"}
    base = {"openvino": ov.__version__.split("-")[0], "source": source_info}
    fp32_model = ov.convert_model(str(src))

    out_dir = output.parent if str(output.parent) else Path(".")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".distill-ov-", dir=out_dir))
    try:
        models: dict[str, tuple[Any, ArtifactMetadata, dict[str, Any], bool]] = {}
        for v in chosen:
            info = {**base, "inference_precision": OV_PRECISION.get(v, "f32")}
            compress = v == "fp16"
            if v == "fp16":
                info["weights"] = "fp16"
            if v == "int8":
                say(f"building int8 IR ({int8_source}) ...")
                calib = _calibration(art, calib_dir, data, x, max_calib_images)
                model, how = int8_model(ov, int8_source, src, art, calib, fp32_model, int8_config)
                info |= {"inference_precision": "f32", "int8": how}
            else:
                model = fp32_model.clone() if v != "fp32" else fp32_model
            meta = art.meta.model_copy(update={"precision": v, "quantization": None if v != "int8" else
                                               f"openvino-{info['int8']['method']}"})
            models[v] = (model, meta, info, compress)
            _save(ov, model, meta, info, tmp / paths[v].name, compress)

        report = _verify(tmp, paths, art, data, x, ref_raw, ref_probs, say)
        if not report["passed"]:
            if verbose:
                print_report(report)
            raise VerificationError(f"OpenVINO fp32 parity with {src.name} broken ({'; '.join(report['problems'])}); "
                                    "nothing was written")
        for v, (model, meta, info, compress) in models.items():
            _save(ov, model, meta.model_copy(update={"verification": report}), info, tmp / paths[v].name, compress)
        for v, p in paths.items():
            for suffix in (".bin", ".xml"):  # weights first: a reader of the new .xml never sees old weights
                staged = (tmp / p.name).with_suffix(suffix)
                _readable_by_all(staged)
                os.replace(staged, p.with_suffix(suffix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print_report(report)
        for v, p in paths.items():
            say(f"wrote {v} OpenVINO IR: {p} (+ {p.with_suffix('.bin').name})")
    return OpenVinoResult(paths=paths, report=report,
                          metadata=models["fp32"][1].model_copy(update={"verification": report}))


def _calibration(art: Any, calib_dir: str | Path | None, data: Any, x: np.ndarray, max_images: int) -> np.ndarray:
    """int8 calibration inputs: --calib-dir when given (a seeded subset), else the verification images."""
    if calib_dir is None:
        return x[:max_images]
    from .verify import list_folder, load_images

    files, _ = list_folder(calib_dir, art.meta.class_names)
    calib = load_images(files, None, art.meta.preprocess, str(calib_dir), max_images, seed=1)
    return calib.inputs(art.meta.input_kind, art.meta.preprocess)


def _save(ov: Any, model: Any, meta: ArtifactMetadata, info: dict[str, Any], path: Path, compress: bool) -> None:
    write_rt_info(model, meta, info)
    ov.save_model(model, str(path), compress_to_fp16=compress)


def _readable_by_all(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _verify(tmp: Path, paths: dict[str, Path], art: Any, data: Any, x: np.ndarray, ref_raw: dict[str, np.ndarray],
            ref_probs: np.ndarray, say: Any) -> dict[str, Any]:
    """fp32 IR vs the ONNX artifact (the gate), then each variant vs the fp32 IR (reported)."""
    from .runtime_openvino import load_openvino_artifact
    from .verify import (MAX_ABS_DIFF, MIN_AGREEMENT, _acc, _agree, _max_diff, parity_problems, run_artifact,
                         verify_variant)

    onnx_report = art.meta.verification or {}
    tol = float((onnx_report.get("thresholds") or {}).get("max_abs_diff", MAX_ABS_DIFF))
    ir = load_openvino_artifact(tmp / paths["fp32"].name)
    raw = run_artifact(ir, x)
    probs = ir.run(x)
    dyn: dict[str, Any] = {}
    for n in (1, 7):
        k = min(n, len(x))
        o = ir.run_raw(x[:k])
        dyn[f"batch{n}_max_abs_diff"] = _max_diff(o, {name: v[:k] for name, v in ref_raw.items()})
        dyn[f"batch{n}_rows"] = int(o[ir.meta.output_names[0]].shape[0])
    fp32 = {
        "compared": "+".join(ir.meta.output_names),
        "max_abs_diff": _max_diff(raw, ref_raw),
        "max_abs_prob_diff": float(np.abs(probs - ref_probs).max()),
        "top1_agreement_onnx": _agree(probs, ref_probs),
        "accuracy": _acc(probs, data.labels),
        "onnx_accuracy": _acc(ref_probs, data.labels),
        "inference_precision": ir.providers[0].rsplit(":", 1)[-1],
        **dyn,
    }
    problems = parity_problems(fp32["max_abs_diff"], fp32["top1_agreement_onnx"], "ONNX", dyn, tol, len(x))
    if fp32["inference_precision"] != "f32":
        problems.append(f"the fp32 IR compiled for {fp32['inference_precision']}, not f32")
    report: dict[str, Any] = {
        "format": "openvino",
        "images": len(data), "source": data.source, "skipped": data.skipped, "labelled": data.labels is not None,
        "reference": {"file": art.path.name, "backend": "onnxruntime", "precision": "fp32"},
        "thresholds": {"max_abs_diff": tol, "top1_agreement": MIN_AGREEMENT},
        "fp32": fp32, "passed": not problems, "problems": problems,
        "onnx": onnx_report,
    }
    if not problems and len(paths) > 1:
        report["variants"] = {}
        for v in [k for k in paths if k != "fp32"]:
            vart = load_openvino_artifact(tmp / paths[v].name)
            entry = verify_variant(vart, probs, data) | {"file": paths[v].name}
            entry["inference_precision"] = vart.providers[0].rsplit(":", 1)[-1]
            if v == "bf16" and entry["inference_precision"] != "bf16":
                entry["note"] = "this CPU has no bf16: OpenVINO ran it in f32"
            report["variants"][v] = entry
    return report


def print_report(report: dict[str, Any], console: Any = None) -> None:
    from rich.table import Table

    from distill.cli_base import console as default_console
    from .verify import _pct

    console = console or default_console
    fp32 = report["fp32"]
    t = Table(title=f"OpenVINO verification: {report['images']} real images from {report['source']}")
    for col in ("model", "accuracy", "top-1 agreement", "max abs diff", "runs in"):
        t.add_column(col)
    t.add_row(f"onnx fp32 ({report['reference']['file']})", _pct(fp32["onnx_accuracy"]), "reference", "-",
              "onnxruntime CPU")
    t.add_row("openvino fp32", _pct(fp32["accuracy"]), f"{_pct(fp32['top1_agreement_onnx'])} vs onnx",
              f"{fp32['max_abs_diff']:.2e} ({fp32['compared']})", fp32["inference_precision"])
    for name, v in (report.get("variants") or {}).items():
        t.add_row(f"openvino {name}", _pct(v["accuracy"]), f"{_pct(v['top1_agreement_fp32'])} vs fp32",
                  f"{v['max_abs_prob_diff_fp32']:.2e} (probs)", v.get("inference_precision", "-"))
    console.print(t)
    status = "[green]PASSED[/]" if report["passed"] else "[red]FAILED[/]: " + "; ".join(report["problems"])
    console.print(f"fp32 parity with ONNX (max abs diff <= {report['thresholds']['max_abs_diff']:g}, 100% top-1 "
                  f"agreement, compiled f32): {status}")


def read_report(path: str | Path) -> dict[str, Any]:
    """The verification report stored in an IR's rt_info (for tooling and tests)."""
    from .runtime_openvino import import_openvino, rt_section

    ov = import_openvino()
    try:
        model = ov.Core().read_model(str(path))
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{path} is not a loadable OpenVINO IR ({str(e).splitlines()[0][:160]})") from None
    return json.loads(rt_section(model, "distill").get("verification", "{}"))


__all__ = ["DEFAULT_INT8_SOURCE", "INT8_SOURCES", "OpenVinoResult", "VARIANTS", "check_variants", "export_openvino",
           "ir_path", "print_report", "read_report"]
