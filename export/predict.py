"""``distill predict``: top-k classes for images or folders, from an exported artifact or a training checkpoint.

Both go through :func:`distill.preprocess.preprocess_images` with the spec the model carries (the artifact's
metadata, or the checkpoint's ``preprocess``), so predictions match serving and ``distill eval``. A DHO checkpoint
predicts with the blend export would fold (:func:`export.fold.choose_blend`); an artifact applies its own.
Undecodable images get an ``error`` entry instead of stopping the run. Lives in ``export`` (a ``distill.commands``
plugin) because it loads artifacts, which only ``export.runtime`` does.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import typer

from distill.cli_base import DistillTyper
from distill.errors import ConfigError
from distill.preprocess import ImageDecodeError, ImageTooLargeError

app = DistillTyper(help="Top-k predictions for images or folders from an artifact (.onnx/.engine) or a checkpoint (.pt).",
                   no_args_is_help=True, subcommand_metavar="",
                   context_settings={"allow_interspersed_args": True})  # options after the image paths too

ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan")


def image_inputs(items: Sequence[Path]) -> list[Path]:
    """Files as given (a non-image gets an error entry), folders expanded to their images (recursive, sorted)."""
    from distill.data.archive import require_images

    out: list[Path] = []
    for p in items:
        if p.is_dir():
            out += require_images(p, ConfigError)
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"input not found: {p}")
    if not out:
        raise ConfigError("no input images")
    return out


def load_predictor(model: Path, device: str = "cpu") -> tuple[list[str], Callable[[list[Path]], np.ndarray], str]:
    """(class names, images -> probabilities (N, C), what it is) for an artifact or a checkpoint."""
    if not model.exists():
        raise ConfigError(f"model not found: {model}")
    if model.suffix.lower() in ARTIFACT_SUFFIXES:
        from .runtime import load_artifact

        art = load_artifact(model)
        if art.is_embedding and art.labels is None:
            raise ConfigError(f"{model} is an embedding model without a label set")
        return list(art.labels.names if art.is_embedding else art.meta.class_names), art.classify, \
            f"artifact {model.name} ({art.meta.kind}, {art.meta.precision})"
    return _checkpoint_predictor(model, device)


def _checkpoint_predictor(path: Path, device: str) -> tuple[list[str], Callable[[list[Path]], np.ndarray], str]:
    import torch

    from distill.checkpoint import load_checkpoint, preprocess_from_checkpoint, student_from_checkpoint
    from distill.preprocess import preprocess_images
    from distill.train._runtime import pick_device

    from .fold import choose_blend
    from .runtime import blend_probs, softmax

    ckpt = load_checkpoint(path)
    if ckpt.get("embedding") is not None:
        raise ConfigError(f"{path} is an open-vocabulary checkpoint: export it (distill export onnx) and predict "
                          "with the artifact and its label set")
    student, ckpt = student_from_checkpoint(ckpt)
    spec, dev = preprocess_from_checkpoint(ckpt), pick_device(device)
    student.to(dev)
    heads = student.head_names
    choice = choose_blend(ckpt, None) if ("ce" in heads and "kd" in heads) else None

    @torch.no_grad()
    def run(images: list[Path]) -> np.ndarray:
        x = torch.from_numpy(preprocess_images(images, spec)).to(dev)
        out = {k: v.float().cpu().numpy() for k, v in student(x).items()}
        if choice is not None:
            return blend_probs(out["ce"], out["kd"], choice.blend, choice.alpha, choice.beta)
        return softmax(out["ce"] if "ce" in out else next(iter(out.values())))

    what = f"checkpoint {path.name} ({ckpt.get('method')}" + (f", {choice.blend} blend)" if choice else ")")
    return list(ckpt["class_names"]), run, what


def predict_files(files: list[Path], names: list[str], run: Callable[[list[Path]], np.ndarray], top_k: int,
                  batch_size: int = 32) -> list[dict[str, Any]]:
    """One record per file: ``{"path", "predictions": [{"rank", "index", "label", "score"}], "error"}``."""
    k = min(top_k, len(names))
    records: list[dict[str, Any]] = []
    for i in range(0, len(files), batch_size):
        chunk = files[i:i + batch_size]
        try:
            probs: list[np.ndarray | str] = list(run(chunk))
        except (ImageDecodeError, ImageTooLargeError):  # find the bad ones; keep the rest
            probs = []
            for f in chunk:
                try:
                    probs.append(run([f])[0])
                except (ImageDecodeError, ImageTooLargeError) as e:
                    probs.append(str(e))
        for f, p in zip(chunk, probs):
            if isinstance(p, str):
                records.append({"path": str(f), "predictions": [], "error": p})
                continue
            order = np.argsort(-p, kind="stable")[:k]
            records.append({"path": str(f), "error": None, "predictions": [
                {"rank": r + 1, "index": int(j), "label": names[j], "score": float(p[j])} for r, j in enumerate(order)]})
    return records


def to_csv(records: list[dict[str, Any]], top_k: int) -> str:
    """Wide CSV: path, top1_label, top1_score, ..., error."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", *[f"top{r}_{c}" for r in range(1, top_k + 1) for c in ("label", "score")], "error"])
    for rec in records:
        cells: list[Any] = []
        for r in range(top_k):
            p = rec["predictions"][r] if r < len(rec["predictions"]) else None
            cells += [p["label"], f"{p['score']:.6f}"] if p else ["", ""]
        w.writerow([rec["path"], *cells, rec["error"] or ""])
    return buf.getvalue()


@app.callback(invoke_without_command=True)
def predict(
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images."),
    model: Path = typer.Option(..., "--model", "-m", help="Artifact (.onnx/.engine) or training checkpoint (best.pt)."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Classes per image."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write .csv or .json (default: JSON on stdout)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per inference call."),
    device: str = typer.Option("cpu", "--device", help="For checkpoints: auto, cpu, cuda, mps."),
) -> None:
    """Top-k predictions, with the model's own preprocessing (the same path as serving and distill eval)."""
    from distill.cli_base import console
    from distill.io import atomic_write_text, check_writable

    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--out {out}: use a .csv or .json file")
    if out is not None:
        check_writable(out)
    files = image_inputs(inputs)
    names, run, what = load_predictor(model, device)
    records = predict_files(files, names, run, top_k, batch_size)
    k = min(top_k, len(names))
    text = to_csv(records, k) if out is not None and out.suffix.lower() == ".csv" else \
        json.dumps({"model": str(model), "top_k": k, "predictions": records}, indent=2)
    bad = sum(r["error"] is not None for r in records)
    if out is None:
        typer.echo(text)
    else:
        atomic_write_text(out, text)
    console.print(f"{what}: {len(records) - bad} images predicted" + (f", {bad} undecodable" if bad else "")
                  + (f" -> {out}" if out else ""), highlight=False)
