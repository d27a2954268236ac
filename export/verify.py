"""Verification on real images: ONNX vs PyTorch parity, folded vs two-head agreement, accuracy, dynamic batch.

The images come from the checkpoint's validation split (``ckpt["data"]``), ``--calib-dir`` or ``verify_dir``
(an ImageFolder whose sub-folders are class names, or a flat folder of images), preprocessed with
:func:`distill.preprocess.preprocess_images` (the one implementation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from distill.data.archive import require_images
from distill.preprocess import (ImageDecodeError, ImageTooLargeError, PreprocessSpec, normalize_uint8,
                                preprocess_images)

from .errors import ExportError
from .postprocess import postprocess

if TYPE_CHECKING:
    from .runtime import Artifact

#: fp32 parity thresholds: max abs difference of the graph's outputs and top-1 agreement vs the torch model.
MAX_ABS_DIFF = 1e-4
MIN_AGREEMENT = 1.0
CHUNK = 64


@dataclass
class VerifyData:
    """Preprocessed real images (uint8 NHWC, resized and cropped), their labels (or None) and where they came from."""

    uint8: np.ndarray
    labels: np.ndarray | None
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return int(self.uint8.shape[0])

    def inputs(self, input_kind: str, spec: PreprocessSpec) -> np.ndarray:
        return self.uint8 if input_kind == "uint8" else normalize_uint8(self.uint8, spec)


# -- image selection -----------------------------------------------------------------------------------
def list_folder(folder: str | Path, class_names: Sequence[str] | None = None) -> tuple[list[Path], list[int] | None]:
    """Images of an ImageFolder (labels by class name when every sub-folder is a known class) or a flat folder."""
    root = Path(folder)
    files = require_images(root, ExportError)
    labels: list[int] | None = None
    if class_names is not None:
        index = {n: i for i, n in enumerate(class_names)}
        if all(p.parent != root and p.relative_to(root).parts[0] in index for p in files):
            labels = [index[p.relative_to(root).parts[0]] for p in files]
    return files, labels


def checkpoint_val(ckpt: dict[str, Any]) -> tuple[list[Path], list[int]] | None:
    """The checkpoint's validation split, or None when it records none or its root is missing here."""
    data = ckpt.get("data") or {}
    root, val = data.get("root"), data.get("val") or []
    if not root or not val or not Path(root).is_dir():
        return None
    paths = [Path(root) / rel for rel, _ in val]
    labels = [int(lab) for _, lab in val]
    keep = [i for i, p in enumerate(paths) if p.is_file()]
    if not keep:
        return None
    return [paths[i] for i in keep], [labels[i] for i in keep]


def select_images(ckpt: dict[str, Any] | None, class_names: Sequence[str] | None, *, folder: str | Path | None = None,
                  fallback: str | Path | None = None) -> tuple[list[Path], list[int] | None, str]:
    """``folder`` if given, else the checkpoint's validation split, else ``fallback`` (``--calib-dir``)."""
    if folder is not None:
        files, labels = list_folder(folder, class_names)
        return files, labels, str(folder)
    val = checkpoint_val(ckpt) if ckpt is not None else None
    if val is not None:
        # the folder the images are really in (a separate --val-dir lies outside data.root, e.g. ../validation)
        where = os.path.normpath(os.path.commonpath([str(p.parent) for p in val[0]]))
        return val[0], val[1], f"checkpoint validation split ({where})"
    if fallback is not None:
        files, labels = list_folder(fallback, class_names)
        return files, labels, str(fallback)
    root = ((ckpt or {}).get("data") or {}).get("root")
    where = f"its validation images are not at {root}" if root else "it records no validation split"
    raise ExportError(f"no real images to verify on: {where}; pass --calib-dir DIR (an ImageFolder or a folder of images)")


def load_images(paths: Sequence[Path], labels: Sequence[int] | None, spec: PreprocessSpec, source: str,
                max_images: int | None = None, seed: int = 0) -> VerifyData:
    """Decode and resize/crop up to ``max_images`` (an evenly spread, seeded subset); undecodable files are skipped."""
    idx = np.arange(len(paths))
    if max_images is not None and len(paths) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(paths), size=max_images, replace=False))
    arrs, labs, skipped = [], [], 0
    for i in idx:
        try:
            arrs.append(preprocess_images([paths[i]], spec, output="uint8")[0])
        except (ImageDecodeError, ImageTooLargeError):
            skipped += 1
            continue
        if labels is not None:
            labs.append(labels[i])
    if not arrs:
        raise ExportError(f"none of the {len(idx)} images from {source} could be decoded")
    return VerifyData(np.stack(arrs), np.asarray(labs, dtype=np.int64) if labels is not None else None, source, skipped)


# -- running -------------------------------------------------------------------------------------------
def run_torch(module: Any, batch: np.ndarray, chunk: int = CHUNK) -> list[np.ndarray]:
    """Outputs of a torch module (tuple or tensor) as float32 numpy arrays, batched."""
    import torch

    outs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for s in range(0, len(batch), chunk):
            o = module(torch.from_numpy(np.ascontiguousarray(batch[s:s + chunk])))
            o = o if isinstance(o, (tuple, list)) else (o,)
            outs.append([t.float().numpy() for t in o])
    return [np.concatenate(col) for col in zip(*outs)]


def run_artifact(art: Artifact, batch: np.ndarray, chunk: int = CHUNK) -> dict[str, np.ndarray]:
    parts = [art.run_raw(batch[s:s + chunk]) for s in range(0, len(batch), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _acc(probs: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float((probs.argmax(1) == labels).mean())


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max() for k in a))


def verify_fp32(art: Artifact, torch_module: Any, data: VerifyData, *,
                reference: tuple[str, np.ndarray] | None = None, extra: dict[str, Any] | None = None,
                scale_tolerance: bool = False) -> dict[str, Any]:
    """Parity of the fp32 artifact with the torch module it came from (same input kind), on real images.

    ``reference``: (description, probabilities) of the model the artifact stands in for (e.g. the two-head
    model with its best blend); its accuracy and the artifact's top-1 agreement with it are reported.
    ``scale_tolerance``: the max-abs-diff threshold is ``MAX_ABS_DIFF * max(1, max |output|)`` (for teachers whose
    logits are large, e.g. CLIP's 100 * cosine); students use the absolute 1e-4.
    """
    meta = art.meta
    x = data.inputs(meta.input_kind, meta.preprocess)
    torch_out = dict(zip(meta.output_names, run_torch(torch_module, x)))
    onnx_out = run_artifact(art, x)
    torch_probs, onnx_probs = postprocess(torch_out, meta, art.labels), postprocess(onnx_out, meta, art.labels)
    tol = MAX_ABS_DIFF
    if scale_tolerance:
        tol = MAX_ABS_DIFF * max(1.0, float(max(np.abs(v).max() for v in torch_out.values())))
    # Dynamic batch: batch 1 and batch 7 through the artifact must match the same rows of the full run.
    dyn = {}
    for n in (1, 7):
        n_eff = min(n, len(data))
        o = art.run_raw(x[:n_eff])
        dyn[f"batch{n}_max_abs_diff"] = _max_diff(o, {k: v[:n_eff] for k, v in torch_out.items()})
        dyn[f"batch{n}_rows"] = int(o[meta.output_names[0]].shape[0])
    fp32 = {
        "compared": "+".join(meta.output_names),
        "max_abs_diff": _max_diff(onnx_out, torch_out),
        "top1_agreement_torch": _agree(onnx_probs, torch_probs),
        "accuracy": _acc(onnx_probs, data.labels),
        "torch_accuracy": _acc(torch_probs, data.labels),
        **dyn,
    }
    report: dict[str, Any] = {
        "images": len(data),
        "source": data.source,
        "skipped": data.skipped,
        "labelled": data.labels is not None,
        "thresholds": {"max_abs_diff": tol, "top1_agreement": MIN_AGREEMENT},
        "fp32": fp32,
    }
    if reference is not None:
        name, ref_probs = reference
        report["reference"] = {"model": name, "accuracy": _acc(ref_probs, data.labels),
                               "top1_agreement": _agree(onnx_probs, ref_probs)}
    if extra:
        report.update(extra)
    problems = parity_problems(fp32["max_abs_diff"], fp32["top1_agreement_torch"], "PyTorch", dyn, tol, len(data))
    report["passed"] = not problems
    report["problems"] = problems
    report["_probs"] = onnx_probs  # for variants; stripped before the report is stored
    return report


def parity_problems(max_abs_diff: float, agreement: float, against: str, dyn: dict[str, Any], tol: float,
                    n_images: int) -> list[str]:
    """The fp32 gate (one rule for every format): max abs diff, 100% top-1 agreement, batch 1 and 7 rows match."""
    problems = []
    if not max_abs_diff <= tol:
        problems.append(f"max abs diff {max_abs_diff:.3g} > {tol:g}")
    if agreement < MIN_AGREEMENT:
        problems.append(f"top-1 agreement with {against} {agreement:.2%} < 100%")
    for n in (1, 7):
        if not dyn[f"batch{n}_max_abs_diff"] <= tol or dyn[f"batch{n}_rows"] != min(n, n_images):
            problems.append(f"batch {n} run differs (dynamic batch broken)")
    return problems


def verify_variant(art: Artifact, fp32_probs: np.ndarray, data: VerifyData) -> dict[str, Any]:
    """Accuracy of a quantised variant and its agreement with the fp32 artifact (informational, never fatal)."""
    x = data.inputs(art.meta.input_kind, art.meta.preprocess)
    probs = np.concatenate([art.run(x[s:s + CHUNK]) for s in range(0, len(x), CHUNK)])
    b1, b7 = art.run(x[:1]), art.run(x[:7])
    return {
        "precision": art.meta.precision,
        "file": art.path.name,
        "accuracy": _acc(probs, data.labels),
        "top1_agreement_fp32": _agree(probs, fp32_probs),
        "max_abs_prob_diff_fp32": float(np.abs(probs - fp32_probs).max()),
        "dynamic_batch_ok": bool(b1.shape[0] == min(1, len(x)) and b7.shape[0] == min(7, len(x))),
    }


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.startswith("_")}


# -- printing ------------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def print_report(report: dict[str, Any], console: Any = None, title: str = "export verification") -> None:
    from rich.table import Table

    from distill.cli_base import console as default_console

    console = console or default_console
    fp32 = report["fp32"]
    t = Table(title=f"{title}: {report['images']} real images from {report['source']}", show_lines=False)
    for col in ("model", "accuracy", "top-1 agreement", "max abs diff", "note"):
        t.add_column(col)
    ref = report.get("reference")
    if ref:
        t.add_row(f"torch {ref['model']}", _pct(ref["accuracy"]), "reference", "-", "what the artifact replaces")
    t.add_row("torch (exported module)", _pct(fp32["torch_accuracy"]), "-", "-", "")
    t.add_row(
        "onnx fp32", _pct(fp32["accuracy"]),
        f"{_pct(fp32['top1_agreement_torch'])} vs torch" + (f", {_pct(ref['top1_agreement'])} vs reference" if ref else ""),
        f"{fp32['max_abs_diff']:.2e} ({fp32['compared']})",
        f"batch 1: {fp32['batch1_max_abs_diff']:.1e}, batch 7: {fp32['batch7_max_abs_diff']:.1e}",
    )
    for name, v in (report.get("variants") or {}).items():
        t.add_row(f"onnx {name}", _pct(v["accuracy"]), f"{_pct(v['top1_agreement_fp32'])} vs fp32",
                  f"{v['max_abs_prob_diff_fp32']:.2e} (probs)", v["file"])
    console.print(t)
    status = "[green]PASSED[/]" if report["passed"] else "[red]FAILED[/]: " + "; ".join(report["problems"])
    tol = report.get("thresholds", {}).get("max_abs_diff", MAX_ABS_DIFF)
    console.print(f"fp32 parity (max abs diff <= {tol:g}, 100% top-1 agreement): {status}")


ProgressFn = Callable[[str], None]
