"""The Open Inference Protocol v2 (KServe v2, Triton's HTTP/REST API) beside ``/v1/classify``.

Routes: ``GET /v2`` (server metadata), ``/v2/health/{live,ready}``, ``GET /v2/models/{name}[/versions/{v}]``
(model metadata), ``.../ready``, ``.../config`` and ``POST .../infer``. Extensions: **binary tensor data**
(``Inference-Header-Content-Length``; request and response), **classification** (an output's
``"parameters": {"classification": k}`` returns the top k as ``"score:index:label"`` BYTES, scores at full
float32 precision) and the model repository (:mod:`serve.repository`).

Inputs (send exactly one):

* the graph's own tensor input (``input``: FP32 ``[-1, 3, H, W]`` normalised, or UINT8 ``[-1, H, W, 3]`` for a
  ``--input uint8`` artifact), accepted as is, exactly as Triton would take it;
* ``image``: BYTES ``[-1]`` (or ``[-1, 1]``), each element an encoded image (JPEG, PNG, ...), decoded and
  preprocessed by the artifact's one preprocessing path (:meth:`export.runtime.Artifact.prepare`), as /v1 does.

Outputs: ``probs`` (FP32 ``[-1, C]``, the probabilities ``/v1/classify`` returns) and the graph's raw outputs
(``logits``, ...: what Triton returns for the same model). Every request is micro-batched with the others.
Errors are ``{"error": "<reason>"}`` with a 4xx status (unknown model or version: 404; malformed tensors: 400;
too large: 413); 503 + ``Retry-After`` only while a model is not ready or the queue is full.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from typing import Any, Optional

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from distill.preprocess import ImageDecodeError, ImageTooLargeError

from .batching import BatcherClosed, QueueFull
from .errors import BodyTooLarge
from .settings import ServeSettings
from .version import server_version
from .v2_models import (IMAGE_INPUT, NP_TO_V2, LoadedModel, ModelNotFound, ModelSet,
                        ModelUnavailable)
from .v2_schemas import (InferenceRequest, InferenceResponse, ModelMetadata, RequestInput, ResponseOutput,
                         ServerMetadata, TensorMetadata, V2Error)

router = APIRouter(prefix="/v2", tags=["v2"])

HEADER_LENGTH = "inference-header-content-length"
V2_TO_NP = {"FP32": np.float32, "UINT8": np.uint8, "FP16": np.float16, "FP64": np.float64, "INT8": np.int8,
            "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT16": np.uint16, "UINT32": np.uint32,
            "UINT64": np.uint64, "BOOL": np.bool_}
_ERR: dict[int | str, dict[str, Any]] = {
    s: {"model": V2Error, "description": d} for s, d in (
        (400, "Malformed request or tensor (name, data type, shape, byte length, data)."),
        (404, "Unknown model or version."), (413, "Request, tensor or image too large."),
        (503, "Model not ready, or the queue is full (see Retry-After)."))}


class ProtocolError(Exception):
    """Rendered as the protocol's error body ``{"error": detail}`` with ``status``."""

    def __init__(self, status: int, detail: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def install(app: FastAPI, models: ModelSet) -> None:
    """Serve the v2 routes of ``models`` on ``app`` (``app.state.v2_models``)."""
    app.state.v2_models = models
    app.include_router(router)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, exc: ProtocolError) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status, headers=exc.headers)


def _models(request: Request) -> ModelSet:
    return request.app.state.v2_models


def _settings(request: Request) -> ServeSettings:
    return request.app.state.serve_settings if hasattr(request.app.state, "serve_settings") \
        else request.app.state.serve.settings


def _get(request: Request, name: str, version: Optional[str]) -> LoadedModel:
    try:
        return _models(request).get(name, version)
    except ModelNotFound as e:
        raise ProtocolError(404, str(e)) from None
    except ModelUnavailable as e:
        raise ProtocolError(503, str(e), {"Retry-After": str(_settings(request).retry_after_s)}) from None


# -- health and metadata -------------------------------------------------------------------------------
@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="distill-serve", version=server_version(), extensions=list(_models(request).extensions))


_EMPTY = {"description": "Yes (empty body).", "content": {}}
_NOT = {"description": "No (empty body; Retry-After).", "content": {}}


@router.get("/health/live", summary="Server live", response_class=Response, responses={200: _EMPTY})
async def server_live(request: Request) -> Response:
    return Response(status_code=200 if _models(request).live() else 503)


@router.get("/health/ready", summary="Server ready (every model it serves is ready)", response_class=Response,
            responses={200: _EMPTY, 503: _NOT})
async def server_ready(request: Request) -> Response:
    if _models(request).ready():
        return Response(status_code=200)
    return Response(status_code=503, headers={"Retry-After": str(_settings(request).retry_after_s)})


def _metadata(request: Request, name: str, version: Optional[str]) -> ModelMetadata:
    m = _get(request, name, version)
    art = m.artifact
    inputs = [TensorMetadata(name=m.input_name, datatype=NP_TO_V2[m.input_dtype], shape=[-1, *art.input_shape]),
              TensorMetadata(name=IMAGE_INPUT, datatype="BYTES", shape=[-1],
                             parameters={"content": "encoded image (JPEG, PNG, WebP, ...), preprocessed by the server"})]
    outputs = [TensorMetadata(name=o.name, datatype="FP32", shape=[-1, o.width]) for o in m.outputs]
    return ModelMetadata(name=m.name, versions=_models(request).versions(name), platform="onnxruntime_onnx",
                         inputs=inputs, outputs=outputs,
                         parameters={"version": m.version, "sha256": m.sha256, "classes": m.labels,
                                     "preprocess": art.meta.preprocess.model_dump(mode="json")})


@router.get("/models/{name}", response_model=ModelMetadata, responses=_ERR, summary="Model metadata")
async def model_metadata(request: Request, name: str) -> ModelMetadata:
    return _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=_ERR,
            summary="Model version metadata")
async def model_version_metadata(request: Request, name: str, version: str) -> ModelMetadata:
    return _metadata(request, name, version)


async def _ready(request: Request, name: str, version: Optional[str]) -> Response:
    _get(request, name, version)  # 404 unknown, 503 not ready
    return Response(status_code=200)


@router.get("/models/{name}/ready", responses={200: _EMPTY, **_ERR}, summary="Model ready", response_class=Response)
async def model_ready(request: Request, name: str) -> Response:
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", responses={200: _EMPTY, **_ERR}, summary="Model version ready",
            response_class=Response)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return await _ready(request, name, version)


def _config(request: Request, name: str, version: Optional[str]) -> dict[str, Any]:
    m = _get(request, name, version)
    s = _settings(request)
    return {"name": m.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime", "max_batch_size": s.max_batch,
            "input": [{"name": m.input_name, "data_type": f"TYPE_{NP_TO_V2[m.input_dtype]}",
                       "dims": list(m.artifact.input_shape)}],
            "output": [{"name": o.name, "data_type": "TYPE_FP32", "dims": [o.width]} for o in m.outputs],
            "dynamic_batching": {"max_queue_delay_microseconds": int(s.max_wait_ms * 1000)}}


@router.get("/models/{name}/config", responses=_ERR, summary="Model configuration (Triton's JSON form)")
async def model_config(request: Request, name: str) -> dict[str, Any]:
    return _config(request, name, None)


@router.get("/models/{name}/versions/{version}/config", responses=_ERR, summary="Model version configuration")
async def model_version_config(request: Request, name: str, version: str) -> dict[str, Any]:
    return _config(request, name, version)


# -- infer ---------------------------------------------------------------------------------------------
def _inline_schema(model: type) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined (the OpenAPI document has no ``$defs`` to point to)."""
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


INFER_DESCRIPTION = __doc__.split("Inputs (send exactly one):", 1)[1] if __doc__ else ""
_INFER_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inline_schema(InferenceRequest)},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                            "description": "Binary tensor data extension: the JSON header "
                                            "(Inference-Header-Content-Length bytes), then the tensors."}}}}}


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(400, f"unsupported Content-Encoding {encoding!r} (gzip, deflate)")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise ProtocolError(400, f"cannot decompress the {encoding} body: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ProtocolError(413, f"decompressed body exceeds the limit of {limit} bytes")
    if not d.eof:
        raise ProtocolError(400, f"cannot decompress the {encoding} body: it is truncated")
    return out


def parse_request(body: bytes, header_length: Optional[str]) -> tuple[InferenceRequest, dict[str, bytes]]:
    """JSON header (+ binary tensors when ``Inference-Header-Content-Length`` is given) -> request, blobs by name."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(400, f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 < n <= len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length {n} is outside 1..{len(body)} (the body size)")
        head, rest = body[:n], body[n:]
    else:
        head, rest = body, b""
    try:
        raw = json.loads(head)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProtocolError(400, f"the inference request is not valid JSON: {type(e).__name__}: "
                            f"{str(e)[:200]}") from None
    try:
        req = InferenceRequest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ProtocolError(400, f"invalid inference request at {where}: {first['msg']}") from None
    blobs: dict[str, bytes] = {}
    pos = 0
    for inp in req.inputs:
        size = (inp.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(400, f"input {inp.name!r}: binary_data_size must be a non-negative integer")
        if pos + size > len(rest):
            raise ProtocolError(400, f"input {inp.name!r}: binary_data_size {size} runs past the end of the body "
                                f"({len(rest) - pos} bytes left)")
        blobs[inp.name] = rest[pos:pos + size]
        pos += size
    if pos != len(rest):
        raise ProtocolError(400, f"{len(rest) - pos} bytes of binary data follow the tensors the header declares")
    return req, blobs


def _batch_size(inp: RequestInput, settings: ServeSettings) -> int:
    if not inp.shape or any((not isinstance(d, int)) or d < 0 for d in inp.shape):
        raise ProtocolError(400, f"input {inp.name!r}: shape {inp.shape} must be non-negative integers, batch first")
    n = inp.shape[0]
    if n < 1:
        raise ProtocolError(400, f"input {inp.name!r}: batch size must be at least 1, got shape {inp.shape}")
    if n > settings.max_images_per_request:
        raise ProtocolError(413, f"input {inp.name!r}: batch of {n} exceeds the limit of "
                            f"{settings.max_images_per_request} per request")
    return n


def decode_tensor(inp: RequestInput, blob: Optional[bytes], m: LoadedModel, settings: ServeSettings) -> np.ndarray:
    """The graph's input, accepted as is: data type, shape, byte length and values are checked."""
    want_type = NP_TO_V2[m.input_dtype]
    if inp.datatype != want_type:
        raise ProtocolError(400, f"input {inp.name!r}: datatype {inp.datatype!r}, this model takes {want_type}")
    n = _batch_size(inp, settings)
    per = tuple(m.artifact.input_shape)
    if tuple(inp.shape[1:]) != per:
        raise ProtocolError(400, f"input {inp.name!r}: shape {inp.shape}, this model takes [-1, "
                            f"{', '.join(map(str, per))}]")
    count = n * int(np.prod(per))
    if blob is not None:
        want = count * m.input_dtype.itemsize
        if len(blob) != want:
            raise ProtocolError(400, f"input {inp.name!r}: {len(blob)} bytes of binary data, shape {inp.shape} "
                                f"{want_type} needs {want}")
        x = np.frombuffer(blob, dtype=m.input_dtype.newbyteorder("<")).astype(m.input_dtype)
    else:
        if inp.data is None:
            raise ProtocolError(400, f"input {inp.name!r} has neither data nor binary_data_size")
        x = _json_array(inp, m.input_dtype)
        if x.size != count:
            raise ProtocolError(400, f"input {inp.name!r}: {x.size} values, shape {inp.shape} needs {count}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ProtocolError(400, f"input {inp.name!r} contains NaN or infinite values")
    return x.reshape(n, *per)


def _json_array(inp: RequestInput, dtype: np.dtype) -> np.ndarray:
    def bad() -> ProtocolError:
        return ProtocolError(400, f"input {inp.name!r}: data must be a (flat or nested) list of "
                             f"{NP_TO_V2.get(dtype, dtype.name)} numbers")

    if not isinstance(inp.data, list):
        raise bad()
    try:
        a = np.asarray(inp.data, dtype=object).ravel()  # nested lists flatten row-major; ragged ones fail below
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a):
            raise bad()
        x = np.asarray(a.tolist(), dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise bad() from None
    if dtype.kind == "u":
        info = np.iinfo(dtype)
        if not (np.isfinite(x).all() and (x == np.round(x)).all() and x.min(initial=0) >= info.min
                and x.max(initial=0) <= info.max):
            raise ProtocolError(400, f"input {inp.name!r}: {NP_TO_V2.get(dtype)} values must be integers in "
                                f"{info.min}..{info.max}")
    return x.astype(dtype)


def deserialize_bytes(blob: bytes, what: str) -> list[bytes]:
    """The protocol's BYTES encoding: each element a 4-byte little-endian length, then its bytes."""
    items, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ProtocolError(400, f"{what}: truncated BYTES element length at byte {pos}")
        (n,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if pos + n > len(blob):
            raise ProtocolError(400, f"{what}: BYTES element of {n} bytes runs past the end of the tensor")
        items.append(blob[pos:pos + n])
        pos += n
    return items


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def decode_images(inp: RequestInput, blob: Optional[bytes], m: LoadedModel, settings: ServeSettings) -> list[bytes]:
    if inp.datatype != "BYTES":
        raise ProtocolError(400, f"input {IMAGE_INPUT!r} carries encoded images: datatype must be BYTES, "
                            f"got {inp.datatype!r}")
    n = _batch_size(inp, settings)
    if inp.shape not in ([n], [n, 1]):
        raise ProtocolError(400, f"input {IMAGE_INPUT!r}: shape {inp.shape}, expected [N] or [N, 1]")
    if blob is not None:
        items = deserialize_bytes(blob, f"input {IMAGE_INPUT!r}")
    elif isinstance(inp.data, list) and all(isinstance(v, str) for v in np.asarray(inp.data, dtype=object).ravel()):
        items = [v.encode("utf-8", "surrogateescape") for v in np.asarray(inp.data, dtype=object).ravel()]
    else:
        raise ProtocolError(400, f"input {IMAGE_INPUT!r}: send the images as binary data (binary_data_size) or a "
                            "list of strings")
    if len(items) != n:
        raise ProtocolError(400, f"input {IMAGE_INPUT!r}: {len(items)} elements, shape {inp.shape} needs {n}")
    for i, b in enumerate(items):
        if not b:
            raise ProtocolError(400, f"input {IMAGE_INPUT!r}[{i}]: empty image")
        if len(b) > settings.max_upload_bytes:
            raise ProtocolError(413, f"input {IMAGE_INPUT!r}[{i}]: {len(b)} bytes is larger than "
                                f"{settings.max_upload_bytes} bytes")
    return items


def prepare_images(items: list[bytes], m: LoadedModel, settings: ServeSettings) -> np.ndarray:
    """Decode + preprocess through the artifact's one path (runs in a worker thread)."""
    arrays = []
    for i, b in enumerate(items):
        try:
            arrays.append(m.artifact.prepare([b], max_pixels=settings.max_pixels))
        except ImageTooLargeError as e:
            raise ProtocolError(413, f"input {IMAGE_INPUT!r}[{i}]: image too large: {e}") from None
        except ImageDecodeError as e:
            raise ProtocolError(400, f"input {IMAGE_INPUT!r}[{i}]: cannot decode image: {e}") from None
        except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is the client's 400
            raise ProtocolError(400, f"input {IMAGE_INPUT!r}[{i}]: cannot decode image: {type(e).__name__}") from None
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)


def _wants_binary(params: Optional[dict[str, Any]], default: bool) -> bool:
    v = (params or {}).get("binary_data", default)
    if not isinstance(v, bool):
        raise ProtocolError(400, f"parameter binary_data must be true or false, got {v!r}")
    return v


def _classification(name: str, params: Optional[dict[str, Any]], width: int) -> int:
    k = (params or {}).get("classification", 0)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= width:
        raise ProtocolError(400, f"output {name!r}: classification must be an integer 0..{width}, got {k!r}")
    return k


def build_outputs(req: InferenceRequest, m: LoadedModel, values: dict[str, np.ndarray]
                  ) -> tuple[list[ResponseOutput], list[bytes]]:
    """The requested outputs (default: all), JSON or binary, plain or as classifications."""
    default_binary = (req.parameters or {}).get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise ProtocolError(400, f"parameter binary_data_output must be true or false, got {default_binary!r}")
    specs = {o.name: o for o in m.outputs}
    if req.outputs is None:
        plan = [(o.name, None) for o in m.outputs]
    else:
        plan = [(o.name, o.parameters) for o in req.outputs]
        unknown = [n for n, _ in plan if n not in specs]
        if unknown:
            raise ProtocolError(400, f"unknown output {unknown[0]!r}; this model has {', '.join(specs)}")
        if len({n for n, _ in plan}) != len(plan):
            raise ProtocolError(400, "an output is requested twice")
    outs: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for name, params in plan:
        spec, arr = specs[name], values[name]
        binary = _wants_binary(params, default_binary)
        k = _classification(name, params, spec.width)
        n = int(arr.shape[0])
        if k:
            names = m.labels if spec.labelled else [""] * spec.width
            rows = m.artifact.top_k(arr, k, names=names)  # the one top-k (stable order) /v1 uses too
            strings = [f"{p.score!r}:{p.index}:{p.label}" if spec.labelled else f"{p.score!r}:{p.index}"
                       for row in rows for p in row]
            out = ResponseOutput(name=name, shape=[n, k], datatype="BYTES")
            if binary:
                blob = serialize_bytes([s.encode() for s in strings])
            else:
                out.data = strings
        else:
            out = ResponseOutput(name=name, shape=[n, spec.width], datatype="FP32")
            if binary:
                blob = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            else:
                out.data = [float(v) for v in np.asarray(arr, np.float32).ravel()]
        if binary:
            out.parameters = {"binary_data_size": len(blob)}
            blobs.append(blob)
        outs.append(out)
    return outs, blobs


async def _infer(request: Request, name: str, version: Optional[str]) -> Response:
    started = time.perf_counter()
    settings = _settings(request)
    m = _get(request, name, version)
    with m.acquire():  # this version is not retired before the answer is out
        with m.batcher.incoming() as arrival:
            try:
                body = await request.body()
            except BodyTooLarge as e:
                raise ProtocolError(413, f"request body exceeds the limit of {e.limit} bytes",
                                    {"Connection": "close"}) from None
            body = _decompress(body, request.headers.get("content-encoding", ""), settings.max_request_bytes)
            req, blobs = parse_request(body, request.headers.get(HEADER_LENGTH))
            if len(req.inputs) != 1:
                raise ProtocolError(400, f"send exactly one input: {m.input_name!r} (the model's tensor) or "
                                    f"{IMAGE_INPUT!r} (BYTES encoded images); got {len(req.inputs)}")
            inp = req.inputs[0]
            if inp.name == m.input_name:
                x = decode_tensor(inp, blobs.get(inp.name), m, settings)
            elif inp.name == IMAGE_INPUT:
                items = decode_images(inp, blobs.get(inp.name), m, settings)
                x = await anyio.to_thread.run_sync(prepare_images, items, m, settings)
            else:
                raise ProtocolError(400, f"unknown input {inp.name!r}; this model takes {m.input_name!r} "
                                    f"({NP_TO_V2[m.input_dtype]} [-1, {', '.join(map(str, m.artifact.input_shape))}]) "
                                    f"or {IMAGE_INPUT!r} (BYTES [-1])")
            try:
                res = await m.batcher.submit(x, arrival)
            except (QueueFull, BatcherClosed) as e:
                raise ProtocolError(503, f"server busy: {e}", {"Retry-After": str(settings.retry_after_s)}) from None
        outs, out_blobs = build_outputs(req, m, m.split(res.output))
    resp = InferenceResponse(model_name=m.name, model_version=m.version, id=req.id, outputs=outs, parameters={
        "queue_ms": round(res.queue_ms, 3), "inference_ms": round(res.inference_ms, 3), "batch_size": res.batch_size,
        "total_ms": round((time.perf_counter() - started) * 1e3, 3)})
    head = resp.model_dump_json(exclude_none=True).encode()
    if not out_blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(out_blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON, or with binary outputs the JSON header then the tensors.",
          "content": {"application/json": {"schema": _inline_schema(InferenceResponse)},
                      "application/octet-stream": {}}},
    **_ERR}


@router.post("/models/{name}/infer", summary="Inference", description=INFER_DESCRIPTION,
             responses=_INFER_RESPONSES, openapi_extra=_INFER_BODY, response_class=Response)
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference on one version",
             description=INFER_DESCRIPTION, responses=_INFER_RESPONSES, openapi_extra=_INFER_BODY,
             response_class=Response)
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


__all__ = ["ProtocolError", "build_outputs", "decode_tensor", "deserialize_bytes", "install", "parse_request",
           "router", "serialize_bytes"]
