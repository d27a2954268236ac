"""torch module -> checked (and slimmed) ``onnx.ModelProto`` with a dynamic batch dimension.

Exporter path: the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, the default since torch 2.9) for
opset >= 18. Its op implementations start at opset 18 and its down-conversion to 17 fails on these models
("No Adapter To Version 17 for Pad") while silently keeping opset 18, so opset 17 (e.g. older TensorRT / Jetson
stacks) uses the TorchScript exporter (``dynamo=False``), which emits opset 17 natively. Either way the result is
checked to carry exactly the requested opset and a symbolic batch dimension.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Sequence

from .errors import ExportError

if TYPE_CHECKING:  # torch is imported inside functions: pipeline imports check_opset without it
    import torch

DEFAULT_OPSET = 18
SUPPORTED_OPSETS = range(17, 22)  # 17..21
#: Trace with more than one image so the batch dimension is never specialised to 1.
TRACE_BATCH = 2


def check_opset(opset: int | None) -> int:
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"unsupported opset {opset}; choose {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})"
        )
    return opset


def example_input(input_kind: str, size: int, batch: int = TRACE_BATCH) -> "torch.Tensor":
    import torch

    g = torch.Generator().manual_seed(0)
    if input_kind == "uint8":
        return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=g)
    return torch.randn(batch, 3, size, size, generator=g)


def to_onnx(module: torch.nn.Module, example: torch.Tensor, output_names: Sequence[str], *, opset: int | None = None,
            slim: bool = True, input_name: str = "input"):  # -> onnx.ModelProto
    """Export ``module`` (eval mode) with a dynamic batch; run onnx.checker and, by default, onnxslim."""
    import onnx
    import torch

    opset = check_opset(opset)
    if example.shape[0] < 2:
        raise ExportError("trace with a batch of at least 2 so the batch dimension stays dynamic")
    module = module.eval()
    names = list(output_names)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if opset >= 18:
            prog = torch.onnx.export(
                module, (example,), None, dynamo=True, opset_version=opset, input_names=[input_name],
                output_names=names, dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
                verbose=False, optimize=True,
            )
            model = prog.model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(
                module, (example,), buf, dynamo=False, opset_version=opset, input_names=[input_name],
                output_names=names, dynamic_axes={input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                do_constant_folding=True,
            )
            model = onnx.load_from_string(buf.getvalue())
    got = _default_opset(model)
    if got != opset:
        raise ExportError(f"the exporter produced opset {got}, not the requested {opset}")
    if slim:
        model = slim_model(model)
    _name_batch_dims(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"exported graph fails onnx.checker: {str(e).splitlines()[0][:200]}") from None
    _require_dynamic_batch(model)
    return model


def slim_model(model):  # onnx.ModelProto -> onnx.ModelProto
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxslim.slim(model)


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)


def _name_batch_dims(model) -> None:
    """Call the batch dimension 'batch' on every graph input and output (exporters name it s0, batch, ...)."""
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _require_dynamic_batch(model) -> None:
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            raise ExportError(f"input {vi.name} has a fixed batch dimension; the export must keep it dynamic")
