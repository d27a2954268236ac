"""``export_onnx``: checkpoint -> folded, verified ONNX artifact (+ fp16/int8 variants), written atomically.

Imports torch lazily so ``import export`` (and ``export.runtime``) stays torch-free.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from distill import __version__
from distill.blend import (KINDS, BlendChoice, better_kind, blend_probs, choose_blend, default_blend, recorded_blend,
                           search_blend, softmax)
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
    ``logits``; ``prob``: Linear(d, 2C) + softmax mix, outputs ``probs``; None: the best recorded blend,
    :func:`distill.blend.choose_blend`). Without folding a DHO graph outputs ``logits_ce`` and ``logits_kd``.
    Raises :class:`~distill.errors.DistillError` subclasses for bad input and
    :class:`~export.errors.VerificationError` (nothing written) when fp32 parity is broken.
    """
    from distill.cli_base import console

    say = console.print if verbose else (lambda *a, **k: None)
    if blend is not None and blend not in KINDS:
        raise ExportError(f"unknown --blend {blend!r}; choose logit or prob")
    output, opset, precisions, paths = check_output_options(output, opset, quantize, input_kind)

    # Heavy imports only now (torch, the model zoo).
    from .fold import build_module, with_input_kind
    from .onnx_export import example_input, to_onnx
    from .verify import load_images, select_images

    src = _load_source(checkpoint, fold_heads)
    fold_heads = fold_heads and src.labelset is None  # an embedding student has nothing to fold
    files, labels, source = select_images(src.ckpt, src.class_names, folder=verify_dir, fallback=calib_dir)
    data = load_images(files, labels, src.spec, source, max_verify_images)
    blend_choice, reference, extra = (_two_head_blends(src, data, blend, fold_heads) if src.two
                                      else (None, None, {}))

    module, plan = build_module(src.student, fold_heads=fold_heads, blend=blend_choice)
    export_module = with_input_kind(module, input_kind, src.spec)
    if plan.kind == "student" and plan.blend is not None:
        say(f"blend: [bold]{plan.blend.blend}[/] (alpha={plan.blend.alpha:g}, beta={plan.blend.beta:g}): {plan.blend.why}")
    elif plan.kind == "two_head" and plan.blend is not None:
        say(f"unfolded two-head graph; the runtime applies the {plan.blend.blend} blend "
            f"(alpha={plan.blend.alpha:g}, beta={plan.blend.beta:g}): {plan.blend.why}")

    model = to_onnx(export_module, example_input(input_kind, src.spec.size), plan.output_names, opset=opset, slim=slim)
    meta = _artifact_metadata(src, plan, checkpoint, input_kind, opset)
    labels_file = None
    if src.labelset is not None:
        from distill.vl.labelset import labels_path_for

        labels_file = labels_path_for(output)
        check_writable(labels_file)
        meta = meta.model_copy(update={
            "embed_dim": src.labelset.embed_dim, "labels_file": labels_file.name,
            "teacher": (meta.teacher or {}) | {"embedding_space": src.labelset.teacher.get("identity")}})
        say(f"embedding student: {src.labelset.embed_dim}-d output; classifier = label set {labels_file.name} "
            f"({len(src.labelset)} classes, tau={src.labelset.tau:g})")
    calib = None
    if needs_calibration(precisions):
        calib = _calibration_inputs(src.ckpt, src.class_names, src.spec, input_kind, calib_dir, verify_dir, data,
                                    max_calib_images)
    report = write_verified(model, meta, paths, export_module, data, reference=reference, extra=extra,
                            calib=calib, say=say, verbose=verbose, labels=src.labelset)
    if src.labelset is not None and labels_file is not None:
        paths["labels"] = src.labelset.save(labels_file)
    for name, p in paths.items():
        say(f"wrote {name} artifact: {p}")
    return ExportResult(
        output=output, paths=paths, metadata=meta.model_copy(update={"verification": report}), report=report,
        blend=meta.blend, alpha=meta.alpha, beta=meta.beta, blend_reason=plan.blend.why if plan.blend else None,
    )


@dataclass
class _Source:
    """A loaded student checkpoint and what the export needs from it."""

    ckpt: dict[str, Any]
    student: Any
    spec: Any
    class_names: list[str]
    labelset: Any = None

    @property
    def two(self) -> bool:
        heads = tuple(self.student.heads.keys())
        return "ce" in heads and "kd" in heads


def _load_source(checkpoint: str | Path, fold_heads: bool) -> _Source:
    """Load the checkpoint and check that its heads, preprocessing and class names can be exported as asked."""
    from distill.checkpoint import load_checkpoint, preprocess_from_checkpoint, student_from_checkpoint
    from distill.errors import CheckpointError

    ckpt = load_checkpoint(checkpoint)
    student, _ = student_from_checkpoint(ckpt)
    heads = tuple(student.heads.keys())
    labelset = None
    if ckpt.get("embedding") is not None:  # an open-vocabulary student: its classifier ships as a label set
        from distill.vl.labelset import labelset_from_checkpoint

        labelset = labelset_from_checkpoint(ckpt)
        labelset.check_fits(student.num_classes, what="the checkpoint's student")
    elif fold_heads and not ("ce" in heads and "kd" in heads):
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
    return _Source(ckpt, student, spec, class_names, labelset)


def _two_head_blends(src: _Source, data: Any, requested: str | None,
                     fold_heads: bool) -> tuple[BlendChoice, tuple[str, np.ndarray], dict[str, Any]]:
    """The blend to export, and the two-head model with its best blend on the real images (what the artifact replaces).

    The blend is the requested or best recorded one (:func:`distill.blend.choose_blend`); a checkpoint that records
    none gets one searched on the labelled verification images, with the same grid and tie rules.
    """
    from .fold import TwoHead
    from .verify import run_torch

    st = src.student
    h_ce, h_kd = run_torch(TwoHead(st.backbone, st.heads["ce"], st.heads["kd"]).eval(), data.inputs("float", src.spec))
    choice = choose_blend(src.ckpt.get("blend"), requested)
    if choice is None:
        if data.labels is None:
            if fold_heads:
                raise ExportError("the checkpoint records no blend (alpha, beta) and the verification images have "
                                  "no labels to search one; pass --calib-dir with an ImageFolder of known classes")
            choice = default_blend()
        else:
            found = {b: search_blend(h_ce, h_kd, data.labels, b) for b in ([requested] if requested else KINDS)}
            best, _ = better_kind({b: f[2] for b, f in found.items()})
            a, bt, acc = found[best]
            choice = BlendChoice(best, a, bt, f"no blend recorded in the checkpoint; searched alpha/beta on "  # type: ignore[arg-type]
                                 f"{len(data)} verification images (acc {acc:.4f})", acc)
    blends: dict[str, Any] = {}
    for name in ("prob", "logit"):
        e = recorded_blend(src.ckpt.get("blend"), name)
        if e is None and choice.blend != name:
            continue
        a, bt = (float(e["alpha"]), float(e["beta"])) if e is not None else (choice.alpha, choice.beta)
        blends[name] = {"alpha": a, "beta": bt, "val_acc": (e or {}).get("val_acc"),
                        "probs": blend_probs(h_ce, h_kd, name, a, bt)}
    # The two-head model's best blend, by the same rule (and tie rule) as the exported one.
    ref_name, _ = better_kind({n: b["val_acc"] for n, b in blends.items()})
    r = blends[ref_name]
    reference = (f"two-head {ref_name} blend (alpha={r['alpha']:g}, beta={r['beta']:g})", r["probs"])
    acc = (lambda p: None if data.labels is None else float((p.argmax(1) == data.labels).mean()))
    extra = {"heads": {"ce": acc(softmax(h_ce)), "kd": acc(softmax(h_kd))},
             "two_head_blends": {n: {k: v for k, v in b.items() if k != "probs"} | {"accuracy": acc(b["probs"])}
                                 for n, b in blends.items()}}
    return choice, reference, extra


def _artifact_metadata(src: _Source, plan: Any, checkpoint: str | Path, input_kind: str, opset: int) -> ArtifactMetadata:
    b = plan.blend
    return ArtifactMetadata(
        kind=plan.kind, model_name=str((src.ckpt.get("student") or {}).get("arch", "student")),
        class_names=src.class_names, preprocess=src.spec, input_kind=input_kind,  # type: ignore[arg-type]
        output_kind=plan.output_kind, output_names=list(plan.output_names),
        blend=b.blend if b else None, alpha=b.alpha if b else None, beta=b.beta if b else None, precision="fp32",
        opset=opset, checkpoint_sha256=sha256_file(checkpoint), teacher=_teacher_identity(src.ckpt.get("teacher")),
        tool_version=__version__,
    )


def write_verified(model: Any, meta: ArtifactMetadata, paths: dict[str, Path], torch_module: Any, data: Any, *,
                   reference: Any = None, extra: dict[str, Any] | None = None, calib: np.ndarray | None = None,
                   say: Any = print, verbose: bool = True, scale_tolerance: bool = False,
                   labels: Any = None) -> dict[str, Any]:
    """Verify the fp32 model (and build/verify variants) on temporary files; publish all files only if fp32 passes."""
    import onnx

    from .quantize import to_fp16, to_int8, variant_config
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
                vmodel = to_int8(model, inputs, meta.input_name, config=variant_config(q))
                vmeta = meta.model_copy(update={"precision": "int8", "quantization": variant_config(q)})
            onnx.save(write_metadata(vmodel, vmeta), tmp[q])
            vart = load_artifact(tmp[q], providers=cpu, labels=labels)
            report["variants"][q] = verify_variant(vart, fp32_probs, data) | {"file": paths[q].name}
            variants[q] = (vmodel, vmeta)
        final = public_report(report)
        onnx.save(write_metadata(model, meta.model_copy(update={"verification": final})), tmp["fp32"])
        for q, (vmodel, vmeta) in variants.items():
            onnx.save(write_metadata(vmodel, vmeta.model_copy(update={"verification": final})), tmp[q])
    if verbose:
        print_report(final)
    return final


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
