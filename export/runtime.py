"""Load an exported artifact and classify raw images (torch-free: onnxruntime, numpy, Pillow only).

This is the only loader of artifacts: ``serve`` and ``edge_bench`` use it, so decoding, preprocessing (from the
spec stored in the artifact), the blend of a two-head graph and the softmax live in one place::

    art = load_artifact("model.onnx")           # or "model.engine" (+ model.engine.json)
    probs = art.classify(["cat.jpg", jpeg_bytes])
    art.top_k(probs, 5)

Embedding artifacts (open-vocabulary ``vl-distill`` students, ``meta.output_kind == "embedding"``) output a unit
embedding; their classifier is a label set file (``model.labels.npz``, :mod:`distill.vl.labelset`) loaded with the
artifact and applied here as ``softmax(cos(e, E_c) / tau)``. ``art.set_labels(path)`` swaps it for another class
list without touching the model (an embedding-size or teacher mismatch is an ``ArtifactError``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, Union

import numpy as np

from distill.preprocess import DEFAULT_MAX_PIXELS, ImageSource, preprocess_images

from .errors import ArtifactError, InputError
from .metadata import ArtifactMetadata
from .postprocess import blend_probs, postprocess, softmax

if TYPE_CHECKING:
    from distill.vl.labelset import LabelSet

#: Preference order among the providers onnxruntime has available here.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
#: TensorRT engine files (each with a ``.json`` sidecar).
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float


class _Session(Protocol):
    input_name: str
    output_names: list[str]
    providers: list[str]

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


class Artifact:
    """A loaded model plus its metadata. ``run`` maps a model input batch to probabilities (N, C) float32."""

    def __init__(self, path: Path, meta: ArtifactMetadata, session: _Session, backend: str) -> None:
        self.path = path
        self.meta = meta
        self._session = session
        self.backend = backend
        self.labels = None  # distill.vl.labelset.LabelSet of an embedding artifact

    # -- introspection ---------------------------------------------------------------------------------
    @property
    def providers(self) -> list[str]:
        """Execution providers really in use (onnxruntime's ``get_providers()``; ``["TensorRT"]`` for engines)."""
        return list(self._session.providers)

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-image input shape: (3, H, W) for float input, (H, W, 3) for uint8 input."""
        s = self.meta.preprocess.size
        return (s, s, 3) if self.meta.input_kind == "uint8" else (3, s, s)

    @property
    def input_dtype(self) -> type:
        return np.uint8 if self.meta.input_kind == "uint8" else np.float32

    def __repr__(self) -> str:
        return (f"Artifact({str(self.path)!r}, kind={self.meta.kind}, precision={self.meta.precision}, "
                f"input={self.meta.input_kind}, backend={self.backend}, providers={self.providers})")

    # -- inference -------------------------------------------------------------------------------------
    def prepare(self, images: Sequence[ImageSource], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Decode and preprocess per the artifact's spec: float (N,3,H,W) or uint8 (N,H,W,3).

        Raises ``distill.preprocess.ImageDecodeError`` / ``ImageTooLargeError`` for bad images.
        """
        return preprocess_images(list(images), self.meta.preprocess, output=self.meta.input_kind,
                                 max_pixels=max_pixels)

    def run_raw(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs by name, untouched (logits, or probabilities for ``output_kind == "probs"``)."""
        batch = self._check_batch(batch)
        if batch.shape[0] == 0:
            c = (self.meta.embed_dim or 0) if self.meta.output_kind == "embedding" else self.meta.num_classes
            return {name: np.zeros((0, c), np.float32) for name in self._session.output_names}
        outs = self._session.run(batch)
        return dict(zip(self._session.output_names, outs))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Model input batch -> probabilities (N, C) float32 (softmax / two-head blend applied as recorded)."""
        outs = self.run_raw(batch)
        return postprocess(outs, self.meta, self.labels)

    # -- open-vocabulary (embedding) artifacts ---------------------------------------------------------
    @property
    def is_embedding(self) -> bool:
        return self.meta.output_kind == "embedding"

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Model input batch -> L2-normalised embeddings (N, D) (embedding artifacts only)."""
        if not self.is_embedding:
            raise ArtifactError(f"{self.path.name} is a classifier, not an embedding model")
        return np.asarray(self.run_raw(batch)[self.meta.output_names[0]], dtype=np.float32)

    def set_labels(self, labels: "str | os.PathLike[str] | LabelSet") -> None:
        """Classify with another label set (a ``.labels.npz`` path or a LabelSet); checked against the model."""
        from distill.vl.labelset import LabelSet, LabelSetError

        if not self.is_embedding:
            raise ArtifactError(f"{self.path.name} is a classifier with fixed classes; only embedding artifacts "
                                "take a label set")
        try:
            ls = labels if isinstance(labels, LabelSet) else LabelSet.load(labels)
            space = (self.meta.teacher or {}).get("embedding_space")
            ls.check_fits(int(self.meta.embed_dim or 0), space, what=f"model {self.path.name}")
        except LabelSetError as e:
            raise ArtifactError(str(e)) from None
        self.labels = ls
        self.meta = self.meta.model_copy(update={"class_names": list(ls.names)})

    def classify(self, images: Sequence[ImageSource], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Raw images (paths, bytes or PIL images) -> probabilities (N, C) float32."""
        return self.run(self.prepare(images, max_pixels=max_pixels))

    def top_k(self, probs: np.ndarray, k: int = 5, names: Sequence[str] | None = None) -> list[list[Prediction]]:
        """Best ``k`` classes per row; ``names`` (default: the artifact's) must be the names ``probs`` were made with."""
        probs = np.asarray(probs)
        if probs.ndim == 1:
            probs = probs[None]
        k = max(1, min(int(k), probs.shape[1]))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        names = list(names) if names is not None else self.meta.class_names
        return [[Prediction(int(i), names[int(i)], float(row[int(i)])) for i in idx] for row, idx in zip(probs, order)]

    def end_profiling(self) -> Path:
        """Stop onnxruntime's profiler (``load_artifact(..., profile_prefix=...)``) and return its JSON trace."""
        end = getattr(self._session, "end_profiling", None)
        if end is None:
            raise ArtifactError(f"the {self.backend} backend does not profile")
        return Path(end())

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        want = self.input_shape
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
            raise InputError(f"batch has shape {tuple(batch.shape)}; this artifact expects (N, {', '.join(map(str, want))})")
        if self.meta.input_kind == "uint8":
            if batch.dtype != np.uint8:
                raise InputError(f"this artifact takes uint8 NHWC input, got {batch.dtype}")
        elif batch.dtype != np.float32:
            if not np.issubdtype(batch.dtype, np.floating):
                raise InputError(f"this artifact takes float32 NCHW normalised input, got {batch.dtype}")
            batch = batch.astype(np.float32)
        return np.ascontiguousarray(batch)


# -- loading -------------------------------------------------------------------------------------------
def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Requested providers (each must be available), or the best available in TensorRT > CUDA > CPU order."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ArtifactError(
                f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                f"(available: {', '.join(available)})"
            )
        return list(requested)
    chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    return chosen or list(available)


class _OrtSession:
    def __init__(self, path: Path, providers: Sequence[str] | None, intra_op_threads: int | None,
                 allow_spinning: bool | None = None, profile_prefix: str | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        if profile_prefix:  # onnxruntime's per-node profile; Artifact.end_profiling() returns the file
            opts.enable_profiling = True
            opts.profile_file_prefix = str(profile_prefix)
        if allow_spinning is not None:  # False: idle pool threads sleep instead of busy-waiting for the next call
            for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
                opts.add_session_config_entry(key, "1" if allow_spinning else "0")
        opts.log_severity_level = 3  # silence "falling back" chatter; we expose the providers really used instead
        chosen = choose_providers(providers)
        try:
            self.sess = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        except Exception as e:  # noqa: BLE001 - InvalidProtobuf, Fail, NoSuchFile, ...
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ArtifactError(f"{path} is not a loadable ONNX model ({msg[:200]})") from None
        self.input_name = self.sess.get_inputs()[0].name
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self.providers = list(self.sess.get_providers())
        self.props = dict(self.sess.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.sess.run(self.output_names, {self.input_name: batch}))

    def end_profiling(self) -> str:
        return str(self.sess.end_profiling())


def load_artifact(path: str | os.PathLike[str], providers: Sequence[str] | None = None,
                  intra_op_threads: int | None = None, labels: "str | os.PathLike[str] | LabelSet | None" = None,
                  allow_spinning: bool | None = None, profile_prefix: str | None = None) -> Artifact:
    """Load an ``.onnx`` artifact (onnxruntime) or a TensorRT ``.engine`` (with its ``.engine.json`` sidecar).

    ``labels``: an embedding artifact's label set; default :func:`default_labels_path`.
    ``allow_spinning``: onnxruntime thread-pool spinning (None: ORT's default, on). A server whose event loop
    shares the cores with inference wants ``False``: spinning pool threads burn the CPU the loop needs.
    ``profile_prefix``: onnxruntime profiling into ``<prefix>_<date>.json`` (``art.end_profiling()``), for benchmarks.
    Raises :class:`export.errors.ArtifactError` for a missing, corrupt, foreign or incompatible artifact.
    """
    art = _load(Path(path), LoadOptions(providers, intra_op_threads, allow_spinning, profile_prefix))
    if art.is_embedding:
        art.set_labels(labels if labels is not None else default_labels_path(art.path, art.meta))
    return art


def default_labels_path(path: Path, meta: ArtifactMetadata) -> Path:
    """``<artifact stem>.labels.npz`` when present, else the ``labels_file`` recorded at export (same folder)."""
    from distill.vl.labelset import labels_path_for

    own = labels_path_for(path)
    if own.is_file() or not meta.labels_file:
        return own
    return path.with_name(meta.labels_file)


# -- the loader registry: artifact suffix -> loader ---------------------------------------------------------
@dataclass(frozen=True)
class LoadOptions:
    """What ``load_artifact`` was asked for; each loader uses what applies to its runtime."""

    providers: Sequence[str] | None = None
    intra_op_threads: int | None = None
    allow_spinning: bool | None = None
    profile_prefix: str | None = None


#: A loader turns an existing artifact file into an :class:`Artifact` (or raises :class:`ArtifactError`).
ArtifactLoader = Callable[[Path, LoadOptions], Artifact]
#: Suffix -> loader, or ``"module:function"`` imported on first use (so a runtime's libraries load only when needed).
_LOADERS: dict[str, Union[ArtifactLoader, str]] = {}
#: Files with a suffix nobody registered are tried as ONNX (its error then says why they are not loadable).
FALLBACK_SUFFIX = ".onnx"


def register_loader(suffixes: str | Sequence[str], loader: Union[ArtifactLoader, str]) -> None:
    """Plug a runtime in: ``register_loader(".xml", "export.openvino:load_openvino")`` (lower-case suffixes)."""
    for suffix in [suffixes] if isinstance(suffixes, str) else suffixes:
        _LOADERS[suffix.lower()] = loader


def loader_for(path: Path) -> ArtifactLoader:
    """The registered loader for ``path``'s suffix (the ONNX loader for unknown suffixes)."""
    entry = _LOADERS.get(path.suffix.lower()) or _LOADERS[FALLBACK_SUFFIX]
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(import_module(module), name)
    return entry  # type: ignore[return-value]


def registered_suffixes() -> tuple[str, ...]:
    return tuple(sorted(_LOADERS))


def _load(p: Path, options: LoadOptions) -> Artifact:
    if not p.exists():
        raise ArtifactError(f"artifact not found: {p}")
    if p.is_dir():
        raise ArtifactError(f"artifact path {p} is a directory (pass the .onnx or .engine file)")
    return loader_for(p)(p, options)


def load_onnx(p: Path, options: LoadOptions) -> Artifact:
    """An ONNX artifact through onnxruntime; the metadata is read from the model's properties."""
    session = _OrtSession(p, options.providers, options.intra_op_threads, options.allow_spinning,
                          options.profile_prefix)
    meta = ArtifactMetadata.from_props(session.props, p)
    missing = [n for n in meta.output_names if n not in session.output_names]
    if missing:
        raise ArtifactError(f"{p}: graph outputs {session.output_names} do not match its metadata ({meta.output_names})")
    session.output_names = list(meta.output_names)
    return Artifact(p, meta, session, backend="onnxruntime")


def load_engine(p: Path, options: LoadOptions) -> Artifact:
    """A TensorRT engine with its ``.engine.json`` sidecar (tensorrt and cuda-python imported only now)."""
    from .engine import load_engine_session

    session, meta = load_engine_session(p)
    return Artifact(p, meta, session, backend="tensorrt")


register_loader(".onnx", load_onnx)
register_loader(ENGINE_SUFFIXES, load_engine)
register_loader(".xml", "export.runtime_openvino:load_ir")  # OpenVINO IR (model.xml + model.bin)


__all__ = ["ENGINE_SUFFIXES", "Artifact", "ArtifactLoader", "ArtifactMetadata", "LoadOptions", "Prediction", "blend_probs",
           "choose_providers", "default_labels_path", "load_artifact", "loader_for", "postprocess", "register_loader",
           "registered_suffixes", "softmax"]
