"""Teacher artifacts for latency tables when ``distill export onnx --teacher`` is not available.

``export_teacher_artifact`` exports (a) an open_clip image tower (e.g. ViT-B-32) with RANDOM weights plus a
random linear head over the class names (latency only: its accuracy is meaningless and is labelled so), or
(b) a CIFAR ResNet teacher with the shared weights, with ``torch.onnx`` (batch dimension dynamic, traced with
batch 2) and writes export's metadata (``export.metadata.write_metadata``), so ``export.runtime.load_artifact``
loads the result like any artifact. Parity with PyTorch is checked on a random batch and recorded.
Prefer export's own teacher export when it exists; this helper only keeps the benchmark unblocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from distill.errors import ConfigError, ModelError

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _build(kind: str, name: str, weights: str | None, class_names: Sequence[str]) -> tuple[Any, Any, dict[str, Any]]:
    import torch
    from torch import nn

    from distill.preprocess import PreprocessSpec

    if kind == "open_clip":
        import open_clip

        if name not in open_clip.list_models():
            raise ModelError(f"unknown open_clip model {name!r}")
        model = open_clip.create_model(name, pretrained=weights)  # weights None -> random initialisation
        visual = model.visual.eval()
        size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else int(visual.image_size)
        torch.manual_seed(0)
        dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None else 512

        class Tower(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.visual = visual
                self.head = nn.Linear(dim, len(class_names), bias=False)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                z = self.visual(x)
                z = z / z.norm(dim=-1, keepdim=True)
                return 100.0 * self.head(z)

        mean = tuple(float(v) for v in getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
        std = tuple(float(v) for v in getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
        spec = PreprocessSpec(size=size, resize_size=size, interpolation="bicubic", mean=mean, std=std)  # type: ignore[arg-type]
        note = ("random weights (pretrained=None): latency only, accuracy meaningless" if not weights
                else f"weights {weights}; zero-shot head NOT built (random linear head): latency only")
        return Tower().eval(), spec, {"kind": "open_clip", "name": name, "identity": note}
    if kind == "cifar_resnet":
        from distill.models import create_cifar_resnet_classifier

        depth = int(name.removeprefix("cifar_resnet").removeprefix("resnet"))
        model = create_cifar_resnet_classifier(depth, num_classes=len(class_names), weights=weights).eval()
        return model, PreprocessSpec(), {"kind": "cifar_resnet", "name": f"cifar_resnet{depth}",
                                         "identity": str(weights) if weights else "random weights"}
    raise ConfigError(f"unknown teacher kind {kind!r}; choose open_clip or cifar_resnet")


def export_teacher_artifact(kind: str, name: str, output: str | Path, *, weights: str | None = None,
                            class_names: Sequence[str] = CIFAR10, opset: int = 18) -> dict[str, Any]:
    """Write ``output`` (.onnx with distill metadata); returns parity and provenance facts."""
    import numpy as np
    import onnx
    import torch

    from distill.io import atomic_path
    from export.metadata import ArtifactMetadata, write_metadata
    from export.runtime import load_artifact

    model, spec, teacher = _build(kind, name, weights, class_names)
    x = torch.randn(2, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        with torch.no_grad():
            try:
                torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                                  dynamo=False)
                exporter = "torchscript"
            except Exception:  # noqa: BLE001 - fall back to the dynamo exporter
                batch = torch.export.Dim("batch", min=1, max=1024)
                torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                                  dynamic_shapes={"x": {0: batch}}, opset_version=opset, dynamo=True,
                                  external_data=False)
                exporter = "dynamo"
        proto = onnx.load(str(tmp))
        meta = ArtifactMetadata(kind="teacher", model_name=teacher["name"], class_names=list(class_names),
                                preprocess=spec, input_kind="float", output_kind="logits", output_names=["logits"],
                                precision="fp32", opset=opset, teacher=teacher,
                                verification={"exported_by": f"edge_bench.teachers ({exporter} torch.onnx)"})
        onnx.save(write_metadata(proto, meta), str(tmp))
    art = load_artifact(output, providers=["CPUExecutionProvider"])
    xb = torch.randn(3, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = torch.softmax(model(xb), -1).numpy()
    got = art.run(xb.numpy())
    diff = float(np.abs(ref - got).max())
    return {"path": str(output), "teacher": teacher, "exporter": exporter, "parity_max_abs_prob_diff": diff,
            "parity_top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
            "params": int(sum(p.numel() for p in model.parameters()))}
