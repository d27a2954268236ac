"""Artifact metadata (torch-free): what every exported model carries in its ONNX ``metadata_props``.

Each field is one ``metadata_props`` entry under its own name (plain strings stay plain, everything else is
JSON), so the values are readable in Netron and by ``onnx``/``onnxruntime`` without this package. A TensorRT
engine carries the same dict in its sidecar JSON (``model.engine.json``, key ``"artifact"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from distill import __version__
from distill.preprocess import PreprocessSpec

from .errors import ArtifactError

METADATA_FORMAT = 1
#: The keys a loader requires; an ONNX file without them was not written by ``distill export``.
REQUIRED_PROPS = ("distill_format", "kind", "class_names", "preprocess", "input_kind", "output_kind")

Kind = Literal["student", "teacher", "two_head", "embedding"]
InputKind = Literal["float", "uint8"]
OutputKind = Literal["logits", "probs", "embedding"]
Precision = Literal["fp32", "fp16", "int8", "bf16"]  # bf16: OpenVINO IRs compiled for bf16 (CPUs with AMX/AVX-512 BF16)
Blend = Literal["logit", "prob"]


class ArtifactMetadata(BaseModel):
    """Everything a consumer needs to use an artifact correctly.

    ``kind``: ``student`` (one output: folded or single-head), ``two_head`` (outputs ``logits_ce`` and
    ``logits_kd``; the runtime applies the recorded blend) or ``teacher``.
    ``output_kind``: ``logits`` (the runtime applies softmax) or ``probs`` (already probabilities, e.g. the
    exact probability blend).  ``blend``/``alpha``/``beta``: the DHO inference blend folded into (``student``)
    or applied to (``two_head``) the graph.
    ``embedding`` (an open-vocabulary ``vl-distill`` student): the graph outputs the L2-normalised ``embedding``
    (``embed_dim`` wide); the classifier is a replaceable label set (``labels_file``, next to the artifact;
    :mod:`distill.vl.labelset`) that the runtime applies as ``softmax(cos / tau)``. ``class_names`` are those of
    the label set shipped at export time.
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    distill_format: int = METADATA_FORMAT
    kind: Kind
    model_name: str = ""
    class_names: list[str]
    preprocess: PreprocessSpec
    input_kind: InputKind = "float"
    input_name: str = "input"
    output_kind: OutputKind = "logits"
    output_names: list[str] = ["logits"]
    blend: Blend | None = None
    alpha: float | None = None
    beta: float | None = None
    precision: Precision = "fp32"
    quantization: str | None = None  # int8 only: the export.quantize configuration ("cpu", "tensorrt")
    opset: int | None = None
    verification: dict[str, Any] | None = None
    checkpoint_sha256: str | None = None
    teacher: dict[str, Any] | None = None
    tool_version: str = __version__
    embed_dim: int | None = None
    labels_file: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- metadata_props <-> model ------------------------------------------------------------------------
    def to_props(self) -> dict[str, str]:
        """Flat ``{key: string}`` for ONNX ``metadata_props`` (None values are left out)."""
        out: dict[str, str] = {}
        for key, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            out[key] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        return out

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str | Path = "artifact") -> "ArtifactMetadata":
        missing = [k for k in REQUIRED_PROPS if k not in props]
        if missing:
            raise ArtifactError(
                f"{source} has no distill metadata (missing {', '.join(missing)}); export it with 'distill export onnx'"
            )
        data: dict[str, Any] = {}
        for key, raw in props.items():
            if key not in cls.model_fields:
                continue
            if _is_plain_string(key):
                data[key] = raw
            else:
                try:
                    data[key] = json.loads(raw)
                except json.JSONDecodeError:
                    raise ArtifactError(f"{source}: metadata entry {key!r} is not valid JSON") from None
        try:
            meta = cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ArtifactError(f"{source}: invalid metadata {loc}: {first['msg']}") from None
        if meta.distill_format > METADATA_FORMAT:
            raise ArtifactError(
                f"{source} has metadata format {meta.distill_format}; this tool reads up to {METADATA_FORMAT}"
            )
        return meta

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_PLAIN_STRING_FIELDS = {"kind", "model_name", "input_kind", "input_name", "output_kind", "blend", "precision",
                        "quantization", "checkpoint_sha256", "tool_version", "labels_file"}


def _is_plain_string(key: str) -> bool:
    return key in _PLAIN_STRING_FIELDS


def write_metadata(model: Any, meta: ArtifactMetadata) -> Any:
    """Replace the distill entries of an ``onnx.ModelProto``'s ``metadata_props`` (others are kept)."""
    props = meta.to_props()
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in props and p.key not in ArtifactMetadata.model_fields]
    del model.metadata_props[:]
    for key, value in [*keep, *props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def read_metadata(source: Any) -> ArtifactMetadata:
    """Metadata from an ``onnx.ModelProto`` or a path to an ``.onnx`` file (reads the graph, not the weights)."""
    import onnx

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ArtifactError(f"artifact not found: {path}")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises several types for garbage
            raise ArtifactError(f"{path} is not a valid ONNX model ({str(e).splitlines()[0][:160]})") from None
        return ArtifactMetadata.from_props({p.key: p.value for p in model.metadata_props}, path)
    return ArtifactMetadata.from_props({p.key: p.value for p in source.metadata_props})
