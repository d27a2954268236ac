"""``distill export triton``: write a Triton Inference Server model repository from a verified ONNX artifact.

Layout (what Triton and KServe's Triton runtime load, and what ``distill serve --model-repository`` serves)::

    <repository>/<name>/config.pbtxt        # read from the ONNX graph itself: names, data types, dims
    <repository>/<name>/labels.txt          # class names, one a line (Triton's classification extension)
    <repository>/<name>/<version>/model.onnx  # the artifact, byte for byte: our metadata stays in it

Why the config is derived from the graph: a ``config.pbtxt`` whose names or dims do not match the model only
fails when Triton loads it. Triton also rejects a model whose batch axis is fixed when ``max_batch_size > 0``,
so such an artifact is refused here, with one line, instead of at load time in a cluster.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from distill.io import atomic_path, atomic_write_text, sha256_file

from .errors import ArtifactError, ExportError
from .metadata import ArtifactMetadata

InstanceKind = Literal["auto", "cpu", "gpu"]

#: ONNX TensorProto element type -> Triton ``DataType`` enum name (model_config.proto).
ONNX_TO_TRITON: dict[int, str] = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
    13: "TYPE_UINT64", 16: "TYPE_BF16",
}
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def v2_datatype(triton_type: str) -> str:
    """Triton config type -> Open Inference Protocol v2 datatype (``TYPE_FP32`` -> ``FP32``, STRING -> BYTES)."""
    t = triton_type.removeprefix("TYPE_")
    return "BYTES" if t == "STRING" else t


@dataclass(frozen=True)
class TensorSpec:
    """One graph input/output as Triton sees it: ``dims`` without the batch axis (-1: variable)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class TritonExport:
    """What ``export_triton`` wrote."""

    model_dir: Path
    config: Path
    model: Path
    labels: Optional[Path]
    version: int
    config_text: str
    sha256: str


class Enum(str):
    """A protobuf enum value: written bare (``KIND_CPU``), not quoted."""


def graph_spec(onnx_path: Path) -> GraphSpec:
    """Read inputs/outputs from the ONNX graph; refuse a fixed (or missing) batch axis. Raises ExportError."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - DecodeError, OSError, ...
        raise ArtifactError(f"{onnx_path} is not a readable ONNX model ({type(e).__name__})") from None
    init = {i.name for i in model.graph.initializer}

    def spec(v: Any, what: str) -> TensorSpec:
        t = v.type.tensor_type
        if t.elem_type not in ONNX_TO_TRITON:
            raise ExportError(f"{onnx_path.name}: {what} {v.name!r} has ONNX element type {t.elem_type}, which Triton "
                              "has no data type for")
        dims = list(t.shape.dim)
        if not dims:
            raise ExportError(f"{onnx_path.name}: {what} {v.name!r} has no batch axis (scalar); Triton needs one")
        batch = dims[0]
        if batch.HasField("dim_value") and batch.dim_value > 0:
            raise ExportError(
                f"{onnx_path.name}: {what} {v.name!r} has a fixed batch axis of {batch.dim_value}; Triton's dynamic "
                "batcher needs a dynamic one (re-export with 'distill export onnx', which writes a dynamic batch axis)")
        rest = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims[1:])
        return TensorSpec(v.name, ONNX_TO_TRITON[t.elem_type], rest)

    inputs = tuple(spec(v, "input") for v in model.graph.input if v.name not in init)
    outputs = tuple(spec(v, "output") for v in model.graph.output)
    if not inputs or not outputs:
        raise ExportError(f"{onnx_path.name}: the graph has no inputs or no outputs")
    return GraphSpec(inputs, outputs)


def external_data_files(onnx_path: Path) -> list[str]:
    """Relative paths of the tensors a large ONNX model keeps outside its file (they are copied beside it)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    files: set[str] = set()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            files |= {e.value for e in t.external_data if e.key == "location"}
    return sorted(files)


def build_config(name: str, graph: GraphSpec, meta: ArtifactMetadata, *, max_batch_size: int = 32,
                 preferred_batch_sizes: Sequence[int] = (), max_queue_delay_us: int = 500, instances: int = 1,
                 kind: InstanceKind = "auto", tensorrt_fp16: bool = False, warmup: bool = True,
                 labels: bool = True) -> dict[str, Any]:
    """The model configuration as data (rendered by :func:`render_pbtxt`); every tensor comes from ``graph``."""
    if max_batch_size < 1:
        raise ExportError(f"max batch size must be >= 1, got {max_batch_size}")
    preferred = sorted(set(preferred_batch_sizes)) or [n for n in (4, 8, 16, 32, 64) if n <= max_batch_size]
    bad = [n for n in preferred if not 1 <= n <= max_batch_size]
    if bad:
        raise ExportError(f"preferred batch sizes {bad} are outside 1..{max_batch_size} (the max batch size)")
    if instances < 1:
        raise ExportError(f"instance count must be >= 1, got {instances}")
    if tensorrt_fp16 and kind == "cpu":
        raise ExportError("the TensorRT accelerator runs on a GPU: drop --tensorrt-fp16 or use --kind gpu/auto")
    n_classes = meta.num_classes

    def out(t: TensorSpec) -> dict[str, Any]:
        d: dict[str, Any] = {"name": t.name, "data_type": Enum(t.data_type), "dims": list(t.dims)}
        if labels and t.dims and t.dims[-1] == n_classes:
            d["label_filename"] = LABELS_FILE
        return d

    cfg: dict[str, Any] = {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": max_batch_size,
        "input": [{"name": t.name, "data_type": Enum(t.data_type), "dims": list(t.dims)} for t in graph.inputs],
        "output": [out(t) for t in graph.outputs],
        "version_policy": {"latest": {"num_versions": 1}},
        "dynamic_batching": {"preferred_batch_size": preferred, "max_queue_delay_microseconds": max_queue_delay_us},
        "instance_group": [{"count": instances, "kind": Enum({"auto": "KIND_AUTO", "cpu": "KIND_CPU",
                                                             "gpu": "KIND_GPU"}[kind])}],
    }
    if warmup:
        cfg["model_warmup"] = [{
            "name": f"zeros_batch_{n}", "batch_size": n,
            "inputs": [{"key": t.name, "value": {"data_type": Enum(t.data_type),
                                                  "dims": [d if d > 0 else 1 for d in t.dims], "zero_data": True}}
                       for t in graph.inputs],
        } for n in sorted({1, max_batch_size})]
    if tensorrt_fp16:
        cfg["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [{
            "name": "tensorrt",
            "parameters": [{"key": "precision_mode", "value": "FP16"},
                           {"key": "max_workspace_size_bytes", "value": str(1 << 30)},
                           {"key": "trt_engine_cache_enable", "value": "1"}],
        }]}}
    return cfg


def render_pbtxt(cfg: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a nested dict: dicts are messages, lists of dicts repeated messages (map entries
    are ``{"key", "value"}`` dicts), lists of scalars packed ``[a, b]``, :class:`Enum` bare, strings quoted."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in cfg.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", render_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for v in value:
                lines += [f"{pad}{key} {{", render_pbtxt(v, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(v: Any) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string literal is a valid text-format string literal


def next_version(model_dir: Path) -> int:
    """One past the highest numeric version folder (1 for a new model)."""
    nums = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(nums, default=0) + 1


def export_triton(artifact: str | Path, repository: str | Path, *, name: Optional[str] = None,
                  version: Optional[int] = None, max_batch_size: int = 32, preferred_batch_sizes: Sequence[int] = (),
                  max_queue_delay_us: int = 500, instances: int = 1, kind: InstanceKind = "auto",
                  tensorrt_fp16: bool = False, warmup: bool = True, allow_unverified: bool = False) -> TritonExport:
    """Add ``artifact`` to the Triton model repository ``repository`` as ``name``/``version``.

    A new version of an existing model goes next to the old ones (``version`` default: the next number), so a
    server polling the repository (Triton, or ``distill serve --model-repository``) can swap to it.
    Raises ArtifactError/ExportError with one line for an unusable artifact or option.
    """
    from .metadata import read_metadata

    src = Path(artifact)
    if not src.is_file():
        raise ArtifactError(f"artifact not found: {src}")
    if src.suffix != ".onnx":
        raise ExportError(f"{src.name}: Triton's onnxruntime backend takes an .onnx artifact (a TensorRT engine is "
                          "tied to one GPU and TensorRT version; export the ONNX and use --tensorrt-fp16 instead)")
    meta = read_metadata(src)
    if meta.verification is None and not allow_unverified:
        raise ExportError(f"{src.name} carries no verification report; export it with 'distill export onnx' "
                          "(or pass --allow-unverified)")
    graph = graph_spec(src)
    name = name or meta.model_name or src.stem
    if not _NAME_OK.match(name):
        raise ExportError(f"model name {name!r} is not a valid repository folder name (letters, digits, _ . -)")
    repo = Path(repository)
    if repo.exists() and not repo.is_dir():
        raise ExportError(f"model repository {repo} exists and is not a directory")
    model_dir = repo / name
    version = next_version(model_dir) if version is None else version
    if version < 1:
        raise ExportError(f"version must be >= 1 (Triton's versions are positive integers), got {version}")
    version_dir = model_dir / str(version)
    if (version_dir / MODEL_FILE).exists():
        raise ExportError(f"{version_dir / MODEL_FILE} already exists: pass another --version or remove it")
    has_labels = meta.output_kind != "embedding" and bool(meta.class_names)
    cfg = build_config(name, graph, meta, max_batch_size=max_batch_size, preferred_batch_sizes=preferred_batch_sizes,
                       max_queue_delay_us=max_queue_delay_us, instances=instances, kind=kind,
                       tensorrt_fp16=tensorrt_fp16, warmup=warmup, labels=has_labels)
    text = render_pbtxt(cfg) + "\n"
    extra = external_data_files(src)

    version_dir.mkdir(parents=True, exist_ok=True)
    for rel in extra:  # external tensors first: a model.onnx must never be visible without its data
        with atomic_path(version_dir / rel) as tmp:
            shutil.copyfile(src.parent / rel, tmp)
    labels_path = None
    if has_labels:
        labels_path = model_dir / LABELS_FILE
        atomic_write_text(labels_path, "".join(f"{c}\n" for c in meta.class_names))
    atomic_write_text(model_dir / "config.pbtxt", text)
    model_path = version_dir / MODEL_FILE
    with atomic_path(model_path) as tmp:  # last: a poller sees a version only once it is complete
        shutil.copyfile(src, tmp)
    digest = sha256_file(model_path)
    if digest != sha256_file(src):
        raise ArtifactError(f"copy of {src} to {model_path} does not match its checksum")
    return TritonExport(model_dir, model_dir / "config.pbtxt", model_path, labels_path, version, text, digest)


__all__ = ["GraphSpec", "ONNX_TO_TRITON", "TensorSpec", "TritonExport", "build_config", "export_triton",
           "graph_spec", "next_version", "render_pbtxt", "v2_datatype"]
