"""Load an OpenVINO IR artifact (``model.xml`` + ``model.bin``) behind the same :class:`~export.runtime.Artifact`.

Torch-free (openvino, numpy only). ``distill export openvino`` stores the artifact's metadata in the IR's
runtime info: section ``distill`` holds exactly the entries an ONNX artifact keeps in ``metadata_props``
(:meth:`ArtifactMetadata.to_props`), section ``distill_openvino`` what only OpenVINO needs, above all the
``inference_precision`` the model must be compiled with. That matters: OpenVINO compiles for bf16 by default on a
CPU with AMX/AVX-512 BF16 (max abs logit differences of 1e-2 to 1e-1 measured, issue 16), so an fp32 artifact pins
``f32`` and bf16 is its own, labelled variant.

``providers`` select the OpenVINO device: None or ``["CPUExecutionProvider"]`` -> CPU; ``["OpenVINO:GPU"]`` (an
Intel iGPU), ``["OpenVINO:NPU"]``... The providers the artifact reports are ``["OpenVINO:<device>:<precision>"]``
with the precision the compiled model really runs.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ArtifactError
from .metadata import ArtifactMetadata

IR_SUFFIXES = (".xml",)
#: rt_info sections: the portable metadata, and the OpenVINO-only facts (inference precision, source artifact).
RT_META = "distill"
RT_OPENVINO = "distill_openvino"
INSTALL_HINT = "pip install 'distill-toolchain[openvino]'"
#: Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def import_openvino() -> Any:
    """The ``openvino`` module, or an :class:`ArtifactError` that says how to install it (one line)."""
    try:
        import openvino as ov
    except ImportError:
        raise ArtifactError(f"OpenVINO IR artifacts need the openvino package: {INSTALL_HINT}") from None
    return ov


def rt_section(model: Any, section: str) -> dict[str, str]:
    """One rt_info section of an ``openvino.Model`` as plain strings (empty when absent)."""
    rt = model.get_rt_info()
    if section not in list(rt.keys()):
        return {}
    raw = rt[section]
    value = raw.astype(dict) if hasattr(raw, "astype") else raw
    return {str(k): (v.astype(str) if hasattr(v, "astype") else str(v)) for k, v in dict(value).items()}


def write_rt_info(model: Any, meta: ArtifactMetadata, openvino_info: dict[str, Any]) -> Any:
    """Store ``meta`` (as ONNX ``metadata_props`` would hold it) and the OpenVINO facts in the model's rt_info."""
    for key, value in meta.to_props().items():
        model.set_rt_info(value, [RT_META, key])
    for key, value in openvino_info.items():
        if value is not None:
            model.set_rt_info(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")),
                              [RT_OPENVINO, key])
    return model


def openvino_info(model: Any) -> dict[str, Any]:
    """The ``distill_openvino`` section decoded (JSON values parsed, plain strings kept)."""
    out: dict[str, Any] = {}
    for key, raw in rt_section(model, RT_OPENVINO).items():
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def device_from_providers(providers: Sequence[str] | None) -> str:
    if not providers:
        return "CPU"
    first = providers[0]
    if first == "CPUExecutionProvider":
        return "CPU"
    if first.startswith("OpenVINO:"):
        return first.split(":")[1] or "CPU"
    raise ArtifactError(f"provider {first!r} cannot run an OpenVINO IR; use OpenVINO:CPU, OpenVINO:GPU or OpenVINO:NPU")


class OpenVinoSession:
    """A compiled OpenVINO model behind the runtime's session protocol (``input_name``, ``output_names``, ``run``).

    One infer request per calling thread: a request is not thread-safe, the compiled model is.
    """

    def __init__(self, path: Path, device: str = "CPU", threads: int | None = None,
                 inference_precision: str | None = None) -> None:
        ov = import_openvino()
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise ArtifactError(f"{path}: its weights {bin_path.name} are missing (an IR is the .xml and the .bin)")
        core = ov.Core()
        try:
            self.model = core.read_model(str(path))
        except Exception as e:  # noqa: BLE001 - RuntimeError with a long parser message
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ArtifactError(f"{path} is not a loadable OpenVINO IR ({msg[:200]})") from None
        self.props = rt_section(self.model, RT_META)
        self.openvino = openvino_info(self.model)
        want = inference_precision or self.openvino.get("inference_precision") or "f32"
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": want, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if device != "CPU":
            config = {k: v for k, v in config.items() if k != "INFERENCE_NUM_THREADS"}
        try:
            self.compiled = core.compile_model(self.model, device, config)
        except Exception as e:  # noqa: BLE001
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ArtifactError(f"OpenVINO cannot compile {path.name} for {device} ({msg[:200]})") from None
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.device = device
        self.input_name = self.compiled.inputs[0].get_any_name()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.providers = [f"OpenVINO:{device}:{_short(self.inference_precision)}"]
        self._outputs = list(self.compiled.outputs)
        self._local = threading.local()

    def select_outputs(self, names: Sequence[str]) -> None:
        """Return these outputs, in this order (the metadata's), from :meth:`run`."""
        self._outputs = [self.compiled.outputs[self.output_names.index(n)] for n in names]
        self.output_names = list(names)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        res = req.infer({0: batch})
        # the request reuses its output tensors on the next call: copy out
        return [np.array(res[o], dtype=np.float32, copy=True) for o in self._outputs]


def _short(precision: str) -> str:
    """OpenVINO's ``<Type: 'float32'>`` / ``bfloat16`` -> ``f32`` / ``bf16``."""
    p = precision.lower()
    for name, short in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float16", "f16"), ("f16", "f16"),
                        ("float32", "f32"), ("f32", "f32")):
        if name in p:
            return short
    return p


def load_openvino_artifact(path: Path, providers: Sequence[str] | None = None, intra_op_threads: int | None = None,
                           inference_precision: str | None = None) -> Any:
    """An IR as an :class:`~export.runtime.Artifact` (``backend == "openvino"``); ``ArtifactError`` when unusable."""
    from .runtime import Artifact

    session = OpenVinoSession(path, device_from_providers(providers), intra_op_threads, inference_precision)
    meta = ArtifactMetadata.from_props(session.props, path)
    missing = [n for n in meta.output_names if n not in session.output_names]
    if missing:
        raise ArtifactError(f"{path}: IR outputs {session.output_names} do not match its metadata ({meta.output_names})")
    session.select_outputs(meta.output_names)
    return Artifact(path, meta, session, backend="openvino")


__all__ = ["INSTALL_HINT", "IR_SUFFIXES", "OV_PRECISION", "OpenVinoSession", "RT_META", "RT_OPENVINO",
           "import_openvino", "load_openvino_artifact", "openvino_info", "rt_section", "write_rt_info"]


def load_ir(path: Path, options: Any) -> Any:
    """The ``.xml`` entry of :func:`export.runtime.register_loader` (``options``: a ``runtime.LoadOptions``)."""
    return load_openvino_artifact(path, options.providers, options.intra_op_threads)
