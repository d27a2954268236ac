"""``distill export`` / ``python -m export``: ``onnx`` (student or teacher), ``tensorrt``, ``triton`` and ``openvino``.

Heavy imports (torch, onnx tooling, TensorRT) happen inside the commands so ``--help`` stays fast and torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from distill.cli_base import DistillTyper, console

from .errors import ExportError

app = DistillTyper(help="Fold the DHO heads and export verified ONNX (fp32/fp16/int8) and TensorRT artifacts.")


def _split(values: Optional[List[str]]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out += [s.strip() for s in v.split(",") if s.strip()]
    return tuple(out)


@app.command("onnx")
def onnx_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Output .onnx file (variants go next to it: NAME.fp16.onnx, NAME.int8.onnx)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Student checkpoint (best.pt) to export."),
    fold_heads: bool = typer.Option(False, "--fold-heads/--no-fold-heads", help="Fold a DHO checkpoint's two heads into one (see --blend). Without it a DHO graph outputs logits_ce and logits_kd."),
    blend: Optional[str] = typer.Option(None, "--blend", help="logit (exactly one Linear layer, outputs logits) or prob (the paper's probability blend, Linear(d,2C) + softmax mix, outputs probs). Default: the better recorded validation accuracy."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset, 17..21 (default 18; int8 needs <= 20)."),
    input_kind: str = typer.Option("float", "--input", help="float: normalised NCHW float32 input; uint8: NHWC uint8 (resized/cropped by the caller), normalisation inside the graph."),
    calib_dir: Optional[Path] = typer.Option(None, "--calib-dir", help="Real images (ImageFolder or flat folder) for int8 calibration, and for verification when the checkpoint's validation images are not here."),
    verify_dir: Optional[Path] = typer.Option(None, "--verify-dir", help="Verify on these images instead of the checkpoint's validation split."),
    max_verify_images: int = typer.Option(1000, "--max-verify-images", min=1, help="At most this many verification images."),
    quantize: Optional[List[str]] = typer.Option(None, "--quantize", "-q", help="Extra variants: fp16, int8 (tuned for onnxruntime CPUs), int8-trt (for TensorRT) (repeat or comma-separate)."),
    slim: bool = typer.Option(True, "--slim/--no-slim", help="Clean the graph with onnxslim."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Export a teacher instead: cifar_resnet56, a timm name, an open_clip name or config .json."),
    teacher_kind: str = typer.Option("auto", "--teacher-kind", help="auto, cifar_resnet, timm or open_clip."),
    teacher_weights: Optional[str] = typer.Option(None, "--teacher-weights", help="Teacher weights file (open_clip: pretrained tag or file; none = random weights)."),
    class_names: Optional[str] = typer.Option(None, "--class-names", help="Teacher classes: a file (one name a line) or a comma-separated list."),
    templates: str = typer.Option("simple", "--templates", help="open_clip prompt templates: single, simple (7), openai (80) or a file."),
    json_out: bool = typer.Option(False, "--json", help="Print the result (paths, blend, verification report) as JSON on stdout."),
    mlflow: bool = typer.Option(False, "--mlflow", help="Log the verified artifact(s) to the MLflow run of the checkpoint's run directory (distill train --mlflow-uri)."),
) -> None:
    """Export a student checkpoint (or, with --teacher, a teacher) to a verified ONNX artifact."""
    from distill.data.archive import resolve_images_arg

    calib_dir, verify_dir = resolve_images_arg(calib_dir), resolve_images_arg(verify_dir)
    if (checkpoint is None) == (teacher is None):
        from distill.errors import ConfigError

        raise ConfigError("pass exactly one of --checkpoint (a student) or --teacher (a teacher model)")
    if teacher is not None:
        from .teacher import export_teacher_onnx

        result = export_teacher_onnx(
            teacher, output, teacher_kind=teacher_kind, teacher_weights=teacher_weights, class_names=class_names,
            templates=templates, opset=opset, input_kind=input_kind, calib_dir=calib_dir, verify_dir=verify_dir,
            quantize=_split(quantize), slim=slim, max_verify_images=max_verify_images,
        )
    else:
        from .pipeline import export_onnx

        result = export_onnx(
            checkpoint, output, fold_heads=fold_heads, blend=blend, opset=opset, input_kind=input_kind,  # type: ignore[arg-type]
            calib_dir=calib_dir, quantize=_split(quantize), slim=slim, verify_dir=verify_dir,
            max_verify_images=max_verify_images,
        )
    if mlflow:  # only verified files exist at this point: a parity failure raised before anything was written
        from distill.errors import ConfigError
        from distill.train.tracking import log_to_run

        run_dir = checkpoint.parent if checkpoint is not None else output.parent
        if log_to_run(run_dir, result.paths.values()) is None:
            raise ConfigError(f"--mlflow: {run_dir} has no mlflow.json (train it with --mlflow-uri URI)")
    if json_out:
        typer.echo(json.dumps({
            "paths": {k: str(v) for k, v in result.paths.items()}, "blend": result.blend, "alpha": result.alpha,
            "beta": result.beta, "blend_reason": result.blend_reason, "report": result.report,
        }, indent=2, default=str))


@app.command("labels")
def labels_cmd(
    labels: Path = typer.Option(..., "--labels", help="Class names, one per line (no empty lines, no repeats)."),
    output: Path = typer.Option(..., "--output", "-o", help="Label set to write, e.g. model.labels.npz next to model.onnx (replaces the shipped one)."),
    teacher: str = typer.Option(..., "--teacher", help="The teacher the model was distilled from: an open_clip name or config .json (text tower), or a classifier (cifar_resnet56) whose rows are the class embeddings."),
    teacher_kind: str = typer.Option("auto", "--teacher-kind", help="auto, cifar_resnet, timm or open_clip."),
    teacher_weights: Optional[str] = typer.Option(None, "--teacher-weights", help="Teacher weights file (open_clip: pretrained tag or file)."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="YAML/JSON class -> description: prompts become 'a photo of a {name}. {description}' (open_clip)."),
    templates: str = typer.Option("single", "--templates", help="open_clip prompt templates: single, simple (7), openai (80) or a file; use the training run's for its classes."),
    class_names_file: Optional[Path] = typer.Option(None, "--class-names-file", help="A classifier teacher's output names (cifar_resnet: CIFAR-10 by default)."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", help="Check the label set fits this embedding artifact (embedding size, teacher) and take its tau."),
    tau: Optional[float] = typer.Option(None, "--tau", help="Softmax temperature of cos similarities (default: the artifact's, else 0.07)."),
) -> None:
    """Compute class embeddings for a new label list with the teacher: a replaceable classifier for an embedding model."""
    from distill.io import check_writable
    from distill.teachers import TeacherConfig
    from distill.vl import read_labels_file
    from distill.vl.build_labels import build_labelset

    names = read_labels_file(labels)
    check_writable(output)
    dim, space = None, None
    if artifact is not None:
        from .metadata import read_metadata

        meta = read_metadata(artifact)
        if meta.output_kind != "embedding":
            raise ExportError(f"{artifact} is a classifier artifact with fixed classes, not an embedding model")
        dim, space = meta.embed_dim, (meta.teacher or {}).get("embedding_space")
        if tau is None:
            from .runtime import default_labels_path

            shipped = default_labels_path(Path(artifact), meta)
            if shipped.is_file():
                from distill.vl.labelset import LabelSet

                tau = LabelSet.load(shipped).tau
    cfg = TeacherConfig(kind=teacher_kind, name=teacher, weights=teacher_weights, templates=templates,  # type: ignore[arg-type]
                        class_names_file=class_names_file, descriptions=descriptions)
    ls = build_labelset(cfg, names, descriptions, tau=0.07 if tau is None else tau)
    if dim is not None:
        ls.check_fits(dim, space, what=f"artifact {Path(artifact).name}")  # type: ignore[arg-type]
    ls.save(output)
    console.print(f"wrote label set {output}: {len(ls)} classes, {ls.embed_dim}-d, tau={ls.tau:g}, "
                  f"teacher {ls.teacher.get('name')} ({ls.teacher.get('adapter')})")
    typer.echo(str(output))


@app.command("tensorrt")
def tensorrt_cmd(
    onnx_path: Path = typer.Option(..., "--onnx", help="An artifact from 'distill export onnx' (for TensorRT 11 pick the fp16/int8 variant for that precision)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output engine file (model.engine); a sidecar model.engine.json is written next to it."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8."),
    min_batch: int = typer.Option(1, "--min-batch", min=1),
    opt_batch: int = typer.Option(8, "--opt-batch", min=1),
    max_batch: int = typer.Option(32, "--max-batch", min=1),
    workspace_gb: float = typer.Option(2.0, "--workspace-gb", min=0.1, help="Builder workspace memory limit."),
) -> None:
    """Build a TensorRT engine (dynamic batch profile min/opt/max) from an exported ONNX artifact."""
    from .tensorrt import build_engine

    info = build_engine(onnx_path, output, precision=precision, min_batch=min_batch, opt_batch=opt_batch,
                        max_batch=max_batch, workspace_gb=workspace_gb)
    console.print(f"wrote TensorRT engine {output} ({info['build_path']}); sidecar {info['sidecar']}")


@app.command("triton")
def triton_cmd(
    artifact: Path = typer.Option(..., "--artifact", "-a", help="A verified .onnx artifact from 'distill export onnx' (use --input uint8 there to let clients send raw pixels)."),
    repository: Path = typer.Option(..., "--repository", "-r", help="Triton model repository folder (created if missing); the model goes to REPOSITORY/NAME/VERSION/model.onnx."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (folder) [the artifact's model name]."),
    version: Optional[int] = typer.Option(None, "--version", help="Version folder [one past the highest present, 1 for a new model]."),
    max_batch_size: int = typer.Option(32, "--max-batch-size", help="Triton max_batch_size (the graph's batch axis must be dynamic)."),
    preferred_batch_size: Optional[List[str]] = typer.Option(None, "--preferred-batch-size", help="Dynamic batcher preferred sizes (repeat or comma-separate) [4, 8, 16, 32 up to --max-batch-size]."),
    max_queue_delay_us: int = typer.Option(500, "--max-queue-delay-us", min=0, help="Dynamic batcher: longest wait for a batch to fill, microseconds."),
    instances: int = typer.Option(1, "--instances", help="Model instances (instance_group count)."),
    kind: str = typer.Option("auto", "--kind", help="instance_group kind: auto, cpu or gpu."),
    tensorrt_fp16: bool = typer.Option(False, "--tensorrt-fp16", help="GPU: run through the TensorRT accelerator of the onnxruntime backend in fp16."),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup", help="model_warmup with zero inputs at batch 1 and --max-batch-size."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help="Accept an artifact without a verification report."),
) -> None:
    """Write a Triton model repository (config.pbtxt read from the ONNX graph, labels.txt, VERSION/model.onnx)."""
    if kind not in ("auto", "cpu", "gpu"):
        raise ExportError(f"--kind must be auto, cpu or gpu, got {kind!r}")
    try:
        sizes = tuple(int(s) for s in _split(preferred_batch_size))
    except ValueError:
        raise ExportError(f"--preferred-batch-size takes integers, got {preferred_batch_size}") from None
    from .triton import export_triton

    res = export_triton(artifact, repository, name=name, version=version, max_batch_size=max_batch_size,
                        preferred_batch_sizes=sizes, max_queue_delay_us=max_queue_delay_us, instances=instances,
                        kind=kind, tensorrt_fp16=tensorrt_fp16, warmup=warmup,  # type: ignore[arg-type]
                        allow_unverified=allow_unverified)
    console.print(f"wrote Triton model {res.model_dir.name} version {res.version}: {res.model} "
                  f"(sha256 {res.sha256[:12]}), {res.config}" + (f", {res.labels}" if res.labels else ""))
    typer.echo(str(res.model_dir))


@app.command("openvino")
def openvino_cmd(
    onnx_path: Path = typer.Option(..., "--onnx", help="A verified fp32 artifact from 'distill export onnx'."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output IR model.xml (+ model.bin; variants go next to it: NAME.fp16.xml, NAME.int8.xml, NAME.bf16.xml). Default: the ONNX path with .xml."),
    variants: Optional[List[str]] = typer.Option(None, "--variant", "-q", help="Extra variants: fp16 (fp16-compressed weights), int8, bf16 (compiled for bf16; its own label) (repeat or comma-separate). fp32 is always written."),
    verify_dir: Optional[Path] = typer.Option(None, "--verify-dir", help="Real images (ImageFolder or flat folder) to verify on; default --calib-dir, else the folder the ONNX artifact was verified on."),
    calib_dir: Optional[Path] = typer.Option(None, "--calib-dir", help="Real images for int8 calibration (default: the verification images)."),
    max_verify_images: int = typer.Option(1000, "--max-verify-images", min=1, help="At most this many verification images."),
    int8_source: Optional[str] = typer.Option(None, "--int8", help="qdq (our calibrated Q/DQ graph, the configuration measured best for this CPU's ISA) or nncf (NNCF post-training quantisation)."),
    int8_config: Optional[str] = typer.Option(None, "--int8-config", help="With --int8 qdq: an export.quantize configuration name instead of the ISA's default."),
    json_out: bool = typer.Option(False, "--json", help="Print the paths and the verification report as JSON on stdout."),
) -> None:
    """Convert a verified ONNX artifact to OpenVINO IR (fp32 pinned to f32; fp16, int8, bf16 variants), verified."""
    from .openvino import export_openvino

    result = export_openvino(onnx_path, output, variants=_split(variants), verify_dir=verify_dir, calib_dir=calib_dir,
                             max_verify_images=max_verify_images, int8_source=int8_source, int8_config=int8_config,
                             verbose=not json_out)
    if json_out:
        typer.echo(json.dumps({"paths": {k: str(v) for k, v in result.paths.items()}, "report": result.report},
                              indent=2, default=str))


def main() -> None:
    app(prog_name="python -m export")
