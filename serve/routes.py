"""HTTP routes: classify, health, model metadata, metrics."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Optional

import anyio
import numpy as np
from PIL import Image
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile

from distill.preprocess import ImageDecodeError, ImageTooLargeError

from .batching import Arrival, BatcherClosed, MicroBatcher, QueueFull
from .errors import ApiError
from .metrics import CONTENT_TYPE_LATEST
from .multipart import MultipartError, TooManyFiles, boundary_of, parse_form
from .schemas import (ClassifyResponse, ErrorResponse, Health, ImageError, LabelsInfo, ModelInfo)
from .state import ServeState, get_state

router = APIRouter()

FILE_FIELDS = ("file", "files")
ACCEPTED_TYPES = "image/* (JPEG, PNG incl. 16-bit, WebP, GIF, BMP, TIFF), application/octet-stream"

CLASSIFY_DESCRIPTION = f"""
Classify one or several images sent as `multipart/form-data`, each as a file part named `file` or `files`
(both names may be repeated and mixed; results come back in upload order).

* `top_k` (query parameter, or a form field when the query has none): how many classes to return per image,
  1..number of classes (default from the server settings, 5); out of range: **422**.
* Each file part's content type must be `image/*` or `application/octet-stream` (or absent): otherwise **415**.
  The body must be `multipart/form-data`: otherwise **415**.
* A file over `max_upload_bytes` or a request body over `max_request_bytes`: **413**. More images than
  `max_images_per_request`: **413**. No file part: **422**.
* An image with more than `max_pixels` decoded pixels (decompression-bomb guard): **413**.
  Bytes that do not decode as an image: **400**.
* Grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and WebP images are converted to RGB and
  EXIF orientation is applied before preprocessing, exactly as at training/export time.

**Multi-image policy: all or nothing.** Every image is checked before any inference runs; if one or more
images are bad the whole request is rejected with the status of the first bad image (in upload order) and
`errors` lists every bad image with its `index`, `filename`, own `status` and reason; no predictions are
returned for the good ones (resend them without the bad file).

* The model not loaded/warmed up yet, shutting down, or the queue full: **503** with `Retry-After`.

Concurrent requests are coalesced into shared inference calls (dynamic micro-batching); `timing` reports the
time spent waiting for and in the shared call and `batch_size` the images in it.
"""

_MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "An image."},
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                  "description": "Several images."},
                        "top_k": {"type": "integer", "minimum": 1,
                                  "description": "Used when the query string has no top_k."},
                    },
                }
            }
        },
    }
}

_BYTESIO = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")
_ERR = {"model": ErrorResponse}
_CLASSIFY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ERR, "description": "An image (or the multipart body) could not be decoded."},
    413: {**_ERR, "description": "File, body, image pixels or image count over the limit."},
    415: {**_ERR, "description": "Not multipart/form-data, or a file part that is not an image type."},
    422: {"description": "Bad top_k, or no file part."},
    503: {**_ERR, "description": "Not ready, shutting down or queue full (see Retry-After)."},
}


@dataclass
class _Upload:
    index: int
    filename: Optional[str]
    content_type: str
    data: Optional[bytes]


def _top_k_error(value: Any, limit: int, where: str) -> RequestValidationError:
    return RequestValidationError([{
        "type": "int_range", "loc": (where, "top_k"), "input": value,
        "msg": f"top_k must be an integer between 1 and {limit} (the number of classes)",
        "ctx": {"ge": 1, "le": limit},
    }])


def _clean(e: Exception) -> str:
    return _BYTESIO.sub("the upload", str(e))


def _content_type_ok(ct: str) -> bool:
    ct = ct.split(";", 1)[0].strip().lower()
    return ct in ("", "application/octet-stream") or ct.startswith("image/")


async def _read_uploads(request: Request, state: ServeState) -> tuple[list[_Upload], Optional[str]]:
    """Parse the multipart body into uploads (bytes) and the form's top_k, enforcing the count/size limits.

    The body is read whole (the middleware bounds it by ``max_request_bytes``) and split by
    :func:`serve.multipart.parse_form`: the route needs every upload's bytes in memory anyway."""
    s = state.settings
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise ApiError(415, f"expected a multipart/form-data body with image file parts, got {ctype or 'no content type'!r}")
    try:
        parts = parse_form(await request.body(), boundary_of(ctype), max_files=s.max_images_per_request * 4 + 4,
                           max_fields=64, max_field_bytes=64 * 1024)
    except TooManyFiles:
        raise ApiError(413, f"too many images: at most {s.max_images_per_request} per request") from None
    except MultipartError as e:
        raise ApiError(400, f"malformed multipart body: {e}") from None
    uploads: list[_Upload] = []
    top_k_field: Optional[str] = None
    for part in parts:
        if part.name == "top_k" and not part.is_file:
            top_k_field = part.data.decode("utf-8", "replace")
        if part.name not in FILE_FIELDS:
            continue
        if not part.is_file:
            raise ApiError(422, f"form field {part.name!r} must be a file upload, got a plain value")
        if len(uploads) >= s.max_images_per_request:
            raise ApiError(413, f"too many images: at most {s.max_images_per_request} per request")
        too_big = len(part.data) > s.max_upload_bytes
        uploads.append(_Upload(len(uploads), part.filename, part.content_type,
                               None if too_big else part.data))  # None: over max_upload_bytes
    return uploads, top_k_field


_INLINE_MAX_PIXELS = 1_000_000


def _cheap_to_decode(uploads: list[_Upload], max_bytes: int) -> bool:
    """Few bytes *and* few pixels (header peek: a small file can still claim a huge canvas)."""
    if sum(len(u.data or b"") for u in uploads) > max_bytes:
        return False
    for u in uploads:
        if not u.data:
            continue
        try:
            with Image.open(io.BytesIO(u.data)) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - undecodable: _decode_all reports it, cheaply
            continue
        if w * h > _INLINE_MAX_PIXELS:
            return False
    return True


def _decode_all(state: ServeState, uploads: list[_Upload]) -> tuple[Optional[np.ndarray], list[ImageError]]:
    """Check and preprocess every upload (runs in a worker thread). Returns the batch or the problems."""
    s = state.settings
    art = state.artifact
    assert art is not None
    arrays: list[np.ndarray] = []
    errors: list[ImageError] = []

    def bad(u: _Upload, status: int, msg: str) -> None:
        errors.append(ImageError(index=u.index, filename=u.filename, status=status, error=msg))

    for u in uploads:
        if not _content_type_ok(u.content_type):
            bad(u, 415, f"unsupported content type {u.content_type!r}; send {ACCEPTED_TYPES}")
            continue
        if u.data is None:
            bad(u, 413, f"file larger than {s.max_upload_bytes} bytes")
            continue
        if len(u.data) > s.max_upload_bytes:
            bad(u, 413, f"file of {len(u.data)} bytes is larger than {s.max_upload_bytes} bytes")
            continue
        if not u.data:
            bad(u, 400, "empty file")
            continue
        try:
            arrays.append(art.prepare([u.data], max_pixels=s.max_pixels))
        except ImageTooLargeError as e:
            bad(u, 413, f"image too large: {e}")
        except ImageDecodeError as e:
            bad(u, 400, f"cannot decode image: {_clean(e)}")
        except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is the client's 400
            bad(u, 400, f"cannot decode image: {type(e).__name__}: {_clean(e)}")
    if errors:
        return None, errors
    return (arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)), []


def _arrival(request: Request, batcher: MicroBatcher) -> Arrival:
    arrival = getattr(request.state, "arrival", None)
    return arrival if arrival is not None else batcher.announce()


async def classify(
    request: Request,
    top_k: Optional[int] = Query(None, ge=1, description="Classes per image (1..number of classes)."),
    state: ServeState = Depends(get_state),
) -> Response:
    started = time.perf_counter()
    art, batcher, info = state.require_ready()
    labels = art.labels  # embedding models: one label set per request, even if POST /v1/labels swaps it meanwhile
    # announced by the middleware before the body was read (a bare router without it: announce now)
    with contextlib.closing(_arrival(request, batcher)) as arrival:
        uploads, top_k_field = await _read_uploads(request, state)
        n_classes = len(labels) if labels is not None else info.num_classes
        if top_k is None and top_k_field is not None:
            try:
                top_k = int(top_k_field)
            except ValueError:
                raise _top_k_error(top_k_field, n_classes, "body") from None
            if top_k < 1:
                raise _top_k_error(top_k_field, n_classes, "body")
        k = state.settings.default_top_k if top_k is None else top_k
        if top_k is not None and k > n_classes:
            raise _top_k_error(top_k, n_classes, "query")
        k = min(k, n_classes)
        if not uploads:
            raise ApiError(422, "no image: send one or more file parts named 'file' or 'files'")
        t0 = time.perf_counter()
        decoder = state.decoder
        assert decoder is not None
        if decoder.pending == 0 and _cheap_to_decode(uploads, state.settings.inline_decode_bytes):
            # a few small images and nobody waiting for a decode (FIFO: never overtake queued uploads):
            # microseconds on the loop, no thread hop
            x, errors = _decode_all(state, uploads)
        else:
            try:
                x, errors = await decoder.run(_decode_all, state, uploads)
            except QueueFull as e:
                raise ApiError(503, f"server busy: {e}",
                               headers={"Retry-After": str(state.settings.retry_after_s)}) from None
        preprocess_ms = (time.perf_counter() - t0) * 1e3
        if errors:
            for e in errors:
                state.metrics.image_errors.labels(str(e.status)).inc()
            first = errors[0]
            what = "image" if len(uploads) == 1 else f"{len(errors)} of {len(uploads)} images"
            raise ApiError(first.status, f"{what} rejected; first: #{first.index} "
                           f"({first.filename or 'unnamed'}): {first.error}", errors=errors)
        assert x is not None
        try:
            res = await batcher.submit(x, arrival)
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}", headers={"Retry-After": str(state.settings.retry_after_s)}) from None
        except BatcherClosed as e:
            raise ApiError(503, str(e), headers={"Retry-After": str(state.settings.retry_after_s)}) from None
    if labels is not None:
        preds = art.top_k(labels.probs(res.output), k, names=labels.names)
    else:
        preds = art.top_k(res.output, k)
    # The body is built as plain JSON here: ClassifyResponse (the route's response_model) stays the documented
    # contract, but building the pydantic models and having FastAPI validate and serialize them again cost about
    # as much loop time as the multipart parse (docs/results.md section 9). tests/serve/test_api.py checks that the
    # body validates against ClassifyResponse.
    body = {
        "request_id": request.state.request_id,
        "model": {"name": info.name, "version": info.version},
        "top_k": k,
        "results": [{"index": u.index, "filename": u.filename,
                     "predictions": [{"index": p.index, "label": p.label, "score": p.score} for p in row]}
                    for u, row in zip(uploads, preds)],
        "timing": {"preprocess_ms": round(preprocess_ms, 3), "queue_ms": round(res.queue_ms, 3),
                   "inference_ms": round(res.inference_ms, 3),
                   "total_ms": round((time.perf_counter() - started) * 1e3, 3), "batch_size": res.batch_size},
    }
    return Response(_dumps(body), media_type="application/json")


def _dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON, as FastAPI's own serializer writes it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


for _path, _name, _summary in (("/v1/classify", "classify_v1", "Classify images"),
                               ("/classify", "classify", "Classify images (alias of /v1/classify)")):
    router.add_api_route(
        _path, classify, methods=["POST"], response_model=ClassifyResponse, name=_name, operation_id=_name,
        summary=_summary, description=CLASSIFY_DESCRIPTION, responses=_CLASSIFY_RESPONSES, tags=["inference"],
        openapi_extra=_MULTIPART_BODY,
    )


LABELS_DESCRIPTION = """
Replace the label set of an **embedding** (open-vocabulary, `vl-distill`) model without re-exporting or restarting:
send a `.labels.npz` made by `distill export labels` as a multipart file part named `file` (or as the raw
`application/octet-stream` body). Needs `Authorization: Bearer <DISTILL_SERVE_ADMIN_TOKEN>`; without a configured
token the endpoint answers **403**. A wrong token: **401**. Not a label set: **400**. A classifier model (fixed
classes): **409**. Embedding size or teacher not matching the model: **422**. Requests already in flight finish
with the label set they started with; later ones use the new one. The swap lives in memory: to keep it over a
restart, replace `model.labels.npz` next to the artifact or set `DISTILL_SERVE_LABELS`.
"""


def _require_admin(request: Request, state: ServeState) -> None:
    import hmac

    token = state.settings.admin_token
    if not token:
        raise ApiError(403, "admin endpoints are disabled: set DISTILL_SERVE_ADMIN_TOKEN to enable them")
    given = request.headers.get("authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
        raise ApiError(401, "missing or wrong admin token (Authorization: Bearer ...)",
                       headers={"WWW-Authenticate": "Bearer"})


@router.post("/v1/labels", response_model=LabelsInfo, tags=["model"], summary="Replace the label set (embedding models)",
             description=LABELS_DESCRIPTION,
             responses={s: {**_ERR, "description": d} for s, d in (
                 (400, "Not a label set."), (401, "Wrong admin token."), (403, "Admin endpoints disabled."),
                 (409, "The model has fixed classes."), (422, "Label set does not fit the model."))})
async def replace_labels(request: Request, state: ServeState = Depends(get_state)) -> LabelsInfo:
    _require_admin(request, state)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise ApiError(422, "no label set: send a file part named 'file'")
        data = await part.read()
    else:
        data = await request.body()
    if not data:
        raise ApiError(422, "no label set: empty body")
    return await anyio.to_thread.run_sync(state.replace_labels, data)


@router.get("/v1/labels", response_model=LabelsInfo, tags=["model"], summary="The label set in use (embedding models)",
            responses={404: {**_ERR, "description": "The model has fixed classes (no label set)."}})
async def labels_info(state: ServeState = Depends(get_state)) -> LabelsInfo:
    if state.labels_info is None:
        raise ApiError(404, "the served model has fixed classes (no label set)")
    return state.labels_info


@router.get("/health/live", response_model=Health, tags=["health"], summary="Liveness: the process serves HTTP")
async def live(state: ServeState = Depends(get_state)) -> Health:
    return Health(status=state.status, ready=state.ready, detail=state.detail)  # type: ignore[arg-type]


@router.get("/health/ready", response_model=Health, tags=["health"],
            summary="Readiness: model loaded and warmed up (503 until then and while draining)",
            responses={503: {"model": Health, "description": "Not ready (loading, draining or failed)."}})
async def ready(response: Response, state: ServeState = Depends(get_state)) -> Health:
    if not state.ready:
        response.status_code = 503
        response.headers["Retry-After"] = str(state.settings.retry_after_s)
    return Health(status=state.status, ready=state.ready, detail=state.detail)  # type: ignore[arg-type]


@router.get("/v1/model", response_model=ModelInfo, tags=["model"],
            summary="The served artifact: classes, input spec, precision, providers in use, fold/verification report",
            responses={503: {"model": ErrorResponse, "description": "Model not loaded yet."}})
async def model_info(state: ServeState = Depends(get_state)) -> ModelInfo:
    if state.model_info is None:
        raise ApiError(503, f"model not loaded ({state.status})",
                       headers={"Retry-After": str(state.settings.retry_after_s)})
    return state.model_info


@router.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(state: ServeState = Depends(get_state)) -> Response:
    state.metrics.queue.set(state.batcher.queue_depth if state.batcher else 0)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
