"""Teacher export: the teacher's image tower plus its fixed head, so teacher and student can be benchmarked
side by side through the same runtime.

* open_clip: image encoder -> L2 normalise -> ``100 * z @ T`` where ``T`` (D, C) is the zero-shot text head
  (prompt-ensemble text embeddings, built once by :func:`distill.teachers.create_teacher` and frozen as a matrix).
* cifar_resnet / timm: the classifier as is.

The graph outputs ``logits`` (the runtime softmaxes); the artifact's ``kind`` is ``teacher``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from distill import __version__
from distill.data.archive import list_class_folders
from distill.errors import ConfigError

from .metadata import ArtifactMetadata
from .pipeline import ExportResult, check_output_options, write_verified
from .quantize import needs_calibration

DEFAULT_TEACHER_VERIFY_IMAGES = 200


def resolve_class_names(class_names: str | Sequence[str] | None, folders: Sequence[str | Path | None],
                        kind: str) -> list[str]:
    """``--class-names`` (a file, one name a line, or ``a,b,c``), else an ImageFolder's sub-folders, else CIFAR-10
    for a CIFAR ResNet teacher."""
    if class_names is not None and not isinstance(class_names, str):
        return [str(c) for c in class_names]
    if class_names:
        p = Path(class_names).expanduser()
        if p.is_file():
            from distill.teachers import read_class_names

            return read_class_names(p)
        names = [c.strip() for c in class_names.split(",") if c.strip()]
        if len(names) < 2:
            raise ConfigError(f"--class-names {class_names!r} is neither a file nor a comma-separated list of classes")
        return names
    for folder in folders:
        if folder is not None and Path(folder).is_dir():
            subs = list_class_folders(Path(folder))
            if len(subs) >= 2:
                return subs
    if kind == "cifar_resnet":
        from distill.teachers.classifiers import CIFAR10_CLASSES

        return list(CIFAR10_CLASSES)
    raise ConfigError("the teacher's classes are unknown: pass --class-names FILE|a,b,c (or an ImageFolder --calib-dir)")


def export_teacher_onnx(
    teacher: str,
    output: str | Path,
    *,
    teacher_kind: str = "auto",
    teacher_weights: str | None = None,
    class_names: str | Sequence[str] | None = None,
    templates: str = "simple",
    opset: int | None = None,
    input_kind: str = "float",
    calib_dir: str | Path | None = None,
    verify_dir: str | Path | None = None,
    quantize: Sequence[str] | str = (),
    slim: bool = True,
    max_verify_images: int = DEFAULT_TEACHER_VERIFY_IMAGES,
    verbose: bool = True,
) -> ExportResult:
    """Export a teacher (open_clip zero-shot, CIFAR ResNet or timm classifier) to a verified ONNX artifact."""
    from distill.cli_base import console

    say = console.print if verbose else (lambda *a, **k: None)
    output, opset, precisions, paths = check_output_options(output, opset, quantize, input_kind)

    import torch

    from distill.teachers import TeacherConfig, create_teacher, resolve_kind

    from .fold import with_input_kind
    from .onnx_export import example_input, to_onnx
    from .verify import load_images, select_images

    try:
        cfg = TeacherConfig(kind=teacher_kind, name=teacher, weights=teacher_weights, templates=templates)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 - pydantic ValidationError
        raise ConfigError(f"invalid teacher options: {str(e).splitlines()[-1].strip()}") from None
    kind = resolve_kind(cfg)
    names = resolve_class_names(class_names, [verify_dir, calib_dir], kind)
    files, labels, source = select_images(None, names, folder=verify_dir, fallback=calib_dir)
    say(f"building {kind} teacher {teacher} for {len(names)} classes ...")
    model = create_teacher(cfg, names)
    spec = model.preprocess
    data = load_images(files, labels, spec, source, max_verify_images)

    class TeacherLogits(torch.nn.Module):
        def __init__(self, t: Any) -> None:
            super().__init__()
            self.t = t

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.t.logits(x)

    module = with_input_kind(TeacherLogits(model).eval(), input_kind, spec)
    proto = to_onnx(module, example_input(input_kind, spec.size), ["logits"], opset=opset, slim=slim)
    describe = {k: v for k, v in model.describe().items() if k != "preprocess"}
    meta = ArtifactMetadata(
        kind="teacher", model_name=teacher, class_names=list(model.class_names), preprocess=spec,
        input_kind=input_kind, output_kind="logits", output_names=["logits"], precision="fp32", opset=opset,  # type: ignore[arg-type]
        teacher={k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in describe.items()},
        tool_version=__version__,
    )
    calib = None
    if needs_calibration(precisions):
        calib = data.inputs(input_kind, spec)
    # CLIP logits are 100 * cosine (|logit| up to 100): parity is judged relative to the logit scale.
    report = write_verified(proto, meta, paths, module, data, calib=calib, say=say, verbose=verbose,
                            extra={"teacher": describe}, scale_tolerance=True)
    for name, p in paths.items():
        say(f"wrote {name} teacher artifact: {p}")
    return ExportResult(output=output, paths=paths, metadata=meta.model_copy(update={"verification": report}),
                        report=report)
