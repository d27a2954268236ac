"""``export_onnx``: checkpoint -> folded, verified ONNX artifact (+ fp16/int8 variants), written atomically.

Imports torch lazily so ``import export`` (and ``export.runtime``) stays torch-free.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from distill import __version__
from distill.io import atomic_path, check_writable, sha256_file

from .errors import ExportError, VerificationError
from .metadata import ArtifactMetadata, write_metadata
from .onnx_export import check_opset
from .quantize import check_quantize, needs_calibration

INPUT_KINDS = ("float", "uint8")
DEFAULT_MAX_CALIB_IMAGES = 256


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and why."""

    output: Path
    paths: dict[str, Path]                 # variant -> file ("fp32", "fp16", "int8", "int8-trt")
    metadata: ArtifactMetadata             # the fp32 artifact's metadata (verification included)
    report: dict[str, Any]                 # the verification report stored in every artifact
    blend: str | None = None
    alpha: float | None = None
    beta: float | None = None
    blend_reason: str | None = None
    messages: list[str] = field(default_factory=list)


def variant_path(output: str | Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx`` / ``model.int8.onnx`` / ``model.int8-trt.onnx`` (next to the fp32 file)."""
    out = Path(output)
    suffix = out.suffix or ".onnx"
    return out.with_name(f"{out.stem if out.suffix else out.name}.{precision}{suffix}")


def check_output_options(output: str | Path, opset: int | None, quantize: str | Iterable[str] | None,
                         input_kind: str) -> tuple[Path, int, tuple[str, ...], dict[str, Path]]:
    """Validate the options every exporter shares before any heavy work; returns (output, opset, precisions, paths)."""
    output = Path(output)
    opset = check_opset(opset)
    precisions = check_quantize(_as_tuple(quantize), opset)
    if input_kind not in INPUT_KINDS:
        raise ExportError(f"unknown --input {input_kind!r}; choose float or uint8")
    if output.suffix.lower() != ".onnx":
        raise ExportError(f"output {output} should end in .onnx")
    paths = {"fp32": output, **{q: variant_path(output, q) for q in precisions}}
    for p in paths.values():
        check_writable(p)
    return output, opset, precisions, paths


def _as_tuple(q: str | Iterable[str] | None) -> tuple[str, ...]:
    if q is None:
        return ()
    if isinstance(q, str):
        return tuple(s.strip() for s in q.split(",") if s.strip())
    return tuple(q)


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    fold_heads: bool = True,
    blend: str | None = None,
    opset: int | None = None,
    input_kind: str = "float",
    calib_dir: str | Path | None = None,
    quantize: Sequence[str] | str = (),
    slim: bool = True,
    verify_dir: str | Path | None = None,
    max_verify_images: int = 1000,
    max_calib_images: int = DEFAULT_MAX_CALIB_IMAGES,
    verbose: bool = True,
) -> ExportResult:
    """Export a student checkpoint to a verified ONNX artifact; see docs/architecture.md.

    ``fold_heads``: fold a DHO checkpoint's ``ce``/``kd`` heads with ``blend`` (``logit``: one Linear, outputs
    ``logits``; ``prob``: Linear(d, 2C) + softmax mix, outputs ``probs``; None: the blend with the better recorded
    validation accuracy). Without folding a DHO graph outputs ``logits_ce`` and ``logits_kd``.
    Raises :class:`~distill.errors.DistillError` subclasses for bad input and
    :class:`~export.errors.VerificationError` (nothing written) when fp32 parity is broken.
    """
    from distill.cli_base import console

    say = console.print if verbose else (lambda *a, **k: None)
    if blend is not None and blend not in ("logit", "prob"):
        raise ExportError(f"unknown --blend {blend!r}; choose logit or prob")
    output, opset, precisions, paths = check_output_options(output, opset, quantize, input_kind)

    # Heavy imports only now (torch, the model zoo).
    from distill.checkpoint import load_checkpoint, preprocess_from_checkpoint, student_from_checkpoint
    from distill.errors import CheckpointError

    from .fold import BlendChoice, TwoHead, build_module, choose_blend, search_blend, with_input_kind
    from .onnx_export import example_input, to_onnx
    from .verify import load_images, run_torch, select_images

    ckpt = load_checkpoint(checkpoint)
    student, _ = student_from_checkpoint(ckpt)
    heads = tuple(student.heads.keys())
    two = "ce" in heads and "kd" in heads
    labelset = None
    if ckpt.get("embedding") is not None:  # an open-vocabulary student: its classifier ships as a label set
        from distill.vl.labelset import labelset_from_checkpoint

        labelset = labelset_from_checkpoint(ckpt)
        labelset.check_fits(student.num_classes, what="the checkpoint's student")
        fold_heads = False  # nothing to fold: one embedding head
    if fold_heads and not two:
        raise ExportError(f"--fold-heads needs a DHO checkpoint with two heads (ce and kd); "
                          f"{Path(checkpoint).name} has {', '.join(heads)} (method {ckpt.get('method')})")
    try:
        spec = preprocess_from_checkpoint(ckpt)
        class_names = [str(c) for c in ckpt["class_names"]]
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint preprocessing spec or class names are invalid: {str(e).splitlines()[0]}") from None
    if labelset is not None:
        class_names = list(labelset.names)
    elif len(class_names) != student.num_classes:
        raise CheckpointError(f"checkpoint has {len(class_names)} class names for a {student.num_classes}-class student")

    files, labels, source = select_images(ckpt, class_names, folder=verify_dir, fallback=calib_dir)
    data = load_images(files, labels, spec, source, max_verify_images)
    x_float = data.inputs("float", spec)

    # The two-head model on the real images: blend search fallback and the reference the folded model replaces.
    blend_choice: BlendChoice | None = None
    extra: dict[str, Any] = {}
    reference = None
    if two:
        from .runtime import blend_probs, softmax

        h_ce, h_kd = run_torch(TwoHead(student.backbone, student.heads["ce"], student.heads["kd"]).eval(), x_float)
        blend_choice = choose_blend(ckpt, blend)
        if blend_choice is None:
            if data.labels is None:
                if fold_heads:
                    raise ExportError("the checkpoint records no blend (alpha, beta) and the verification images have "
                                      "no labels to search one; pass --calib-dir with an ImageFolder of known classes")
                blend_choice = BlendChoice("prob", 0.5, 1.0, "no blend recorded; DHO default alpha=0.5, beta=1")
            else:
                cands = [blend] if blend else ["logit", "prob"]
                found = {b: search_blend(h_ce, h_kd, data.labels, b) for b in cands}  # type: ignore[arg-type]
                best = max(cands, key=lambda b: (found[b][2], b == "logit"))
                a, bt, acc = found[best]
                blend_choice = BlendChoice(best, a, bt, f"no blend recorded in the checkpoint; searched alpha/beta on "  # type: ignore[arg-type]
                                           f"{len(data)} verification images (acc {acc:.4f})", acc)
        blends: dict[str, Any] = {}
        rec = ckpt.get("blend") or {}
        for name in ("prob", "logit"):
            e = rec.get(name) if isinstance(rec, dict) else None
            if isinstance(e, dict) and "alpha" in e and "beta" in e:
                a, bt = float(e["alpha"]), float(e["beta"])
            elif blend_choice.blend == name:
                a, bt = blend_choice.alpha, blend_choice.beta
            else:
                continue
            p = blend_probs(h_ce, h_kd, name, a, bt)
            blends[name] = {"alpha": a, "beta": bt, "val_acc": (e or {}).get("val_acc") if isinstance(e, dict) else None,
                            "probs": p}
        # The two-head model's best blend: better recorded val acc (ties: the paper's probability blend).
        ref_name = max(blends, key=lambda n: (blends[n]["val_acc"] or -1.0, n == "prob"))
        r = blends[ref_name]
        reference = (f"two-head {ref_name} blend (alpha={r['alpha']:g}, beta={r['beta']:g})", r["probs"])
        acc = (lambda p: None if data.labels is None else float((p.argmax(1) == data.labels).mean()))
        extra["heads"] = {"ce": acc(softmax(h_ce)), "kd": acc(softmax(h_kd))}
        extra["two_head_blends"] = {n: {k: v for k, v in b.items() if k != "probs"} | {"accuracy": acc(b["probs"])}
                                    for n, b in blends.items()}

    module, plan = build_module(student, fold_heads=fold_heads, blend=blend_choice)
    export_module = with_input_kind(module, input_kind, spec)
    if plan.kind == "student" and plan.blend is not None:
        say(f"blend: [bold]{plan.blend.blend}[/] (alpha={plan.blend.alpha:g}, beta={plan.blend.beta:g}): {plan.blend.why}")
    elif plan.kind == "two_head" and plan.blend is not None:
        say(f"unfolded two-head graph; the runtime applies the {plan.blend.blend} blend "
            f"(alpha={plan.blend.alpha:g}, beta={plan.blend.beta:g}): {plan.blend.why}")

    model = to_onnx(export_module, example_input(input_kind, spec.size), plan.output_names, opset=opset, slim=slim)
    arch = (ckpt.get("student") or {}).get("arch", "student")
    meta = ArtifactMetadata(
        kind=plan.kind, model_name=str(arch), class_names=class_names, preprocess=spec, input_kind=input_kind,  # type: ignore[arg-type]
        output_kind=plan.output_kind, output_names=list(plan.output_names),
        blend=plan.blend.blend if plan.blend else None, alpha=plan.blend.alpha if plan.blend else None,
        beta=plan.blend.beta if plan.blend else None, precision="fp32", opset=opset,
        checkpoint_sha256=sha256_file(checkpoint), teacher=_teacher_identity(ckpt.get("teacher")),
        tool_version=__version__,
    )
    if labelset is not None:
        from distill.vl.labelset import labels_path_for

        labels_file = labels_path_for(output)
        check_writable(labels_file)
        meta = meta.model_copy(update={
            "embed_dim": labelset.embed_dim, "labels_file": labels_file.name,
            "teacher": (meta.teacher or {}) | {"embedding_space": labelset.teacher.get("identity")}})
        say(f"embedding student: {labelset.embed_dim}-d output; classifier = label set {labels_file.name} "
            f"({len(labelset)} classes, tau={labelset.tau:g})")
    calib = None
    if needs_calibration(precisions):
        calib = _calibration_inputs(ckpt, class_names, spec, input_kind, calib_dir, verify_dir, data, max_calib_images)
    report = write_verified(model, meta, paths, export_module, data, reference=reference, extra=extra,
                            calib=calib, say=say, verbose=verbose, labels=labelset)
    if labelset is not None:
        paths["labels"] = labelset.save(labels_file)
        readable_by_all(labels_file)
    for name, p in paths.items():
        say(f"wrote {name} artifact: {p}")
    return ExportResult(
        output=output, paths=paths, metadata=meta.model_copy(update={"verification": report}), report=report,
        blend=meta.blend, alpha=meta.alpha, beta=meta.beta, blend_reason=plan.blend.why if plan.blend else None,
    )


def write_verified(model: Any, meta: ArtifactMetadata, paths: dict[str, Path], torch_module: Any, data: Any, *,
                   reference: Any = None, extra: dict[str, Any] | None = None, calib: np.ndarray | None = None,
                   say: Any = print, verbose: bool = True, scale_tolerance: bool = False,
                   labels: Any = None) -> dict[str, Any]:
    """Verify the fp32 model (and build/verify variants) on temporary files; publish all files only if fp32 passes."""
    import onnx

    from .quantize import INT8_VARIANTS, to_fp16, to_int8
    from .runtime import load_artifact
    from .verify import print_report, public_report, verify_fp32, verify_variant

    cpu = ["CPUExecutionProvider"]
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in paths.items()}
        onnx.save(write_metadata(model, meta), tmp["fp32"])
        art = load_artifact(tmp["fp32"], providers=cpu, labels=labels)
        report = verify_fp32(art, torch_module, data, reference=reference, extra=extra, scale_tolerance=scale_tolerance)
        if not report["passed"]:
            if verbose:
                print_report(public_report(report))
            raise VerificationError(f"fp32 parity broken ({'; '.join(report['problems'])}); nothing was written")
        fp32_probs = report["_probs"]
        variants: dict[str, tuple[Any, ArtifactMetadata]] = {}
        if len(paths) > 1:
            report["variants"] = {}
        for q in [k for k in paths if k != "fp32"]:
            say(f"building {q} variant ...")
            if q == "fp16":
                vmodel, vmeta = to_fp16(model), meta.model_copy(update={"precision": "fp16"})
            else:
                inputs = calib if calib is not None else data.inputs(meta.input_kind, meta.preprocess)
                vmodel = to_int8(model, inputs, meta.input_name, config=INT8_VARIANTS[q])
                vmeta = meta.model_copy(update={"precision": "int8", "quantization": INT8_VARIANTS[q]})
            onnx.save(write_metadata(vmodel, vmeta), tmp[q])
            vart = load_artifact(tmp[q], providers=cpu, labels=labels)
            report["variants"][q] = verify_variant(vart, fp32_probs, data) | {"file": paths[q].name}
            variants[q] = (vmodel, vmeta)
        final = public_report(report)
        onnx.save(write_metadata(model, meta.model_copy(update={"verification": final})), tmp["fp32"])
        for q, (vmodel, vmeta) in variants.items():
            onnx.save(write_metadata(vmodel, vmeta.model_copy(update={"verification": final})), tmp[q])
        for t in tmp.values():
            readable_by_all(t)
    if verbose:
        print_report(final)
    return final


def readable_by_all(path: Path) -> None:
    """atomic_path's temp files are created 0600 (mkstemp); an artifact is meant to be read by a serving user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _teacher_identity(teacher: Any) -> dict[str, Any] | None:
    if teacher is None:
        return None
    if isinstance(teacher, dict):
        return {str(k): _json_value(v) for k, v in teacher.items()}
    return {"identity": str(teacher)}


def _json_value(v: Any) -> Any:
    """Plain JSON values stay structured (a teacher's preprocess dict is not flattened to a Python repr)."""
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return str(v)


def _calibration_inputs(ckpt: dict[str, Any], class_names: list[str], spec: Any, input_kind: str,
                        calib_dir: Any, verify_dir: Any, data: Any, max_images: int) -> np.ndarray:
    """int8 calibration batch: --calib-dir, else the checkpoint's validation split, else the verification images."""
    from .verify import load_images, select_images

    if calib_dir is None and verify_dir is not None:
        return data.inputs(input_kind, spec)[:max_images]
    files, labels, source = select_images(ckpt, class_names, folder=calib_dir)
    return load_images(files, None, spec, source, max_images, seed=1).inputs(input_kind, spec)
