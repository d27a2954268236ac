"""Typed messages of the Open Inference Protocol v2 (KServe v2 / Triton HTTP/REST), as in the protocol's spec.

Field names are the protocol's; ``extra="allow"`` where the spec lets clients add their own ``parameters``.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES")


class _Msg(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), extra="ignore")


class V2Error(_Msg):
    """Every v2 error: ``{"error": "<reason>"}`` with a 4xx status (503 only while not ready)."""

    error: str


class ServerMetadata(_Msg):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Msg):
    name: str
    datatype: str
    shape: list[int] = Field(..., description="-1: variable size (the batch axis first).")
    parameters: Optional[dict[str, Any]] = None


class ModelMetadata(_Msg):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Optional[dict[str, Any]] = None


class RequestInput(_Msg):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: Optional[Any] = Field(None, description="Row-major flat (or nested) list; absent with binary_data_size.")


class RequestOutput(_Msg):
    name: str
    parameters: Optional[dict[str, Any]] = Field(
        None, description='{"classification": k}: top-k as "score:index:label" BYTES; {"binary_data": true}: raw bytes.')


class InferenceRequest(_Msg):
    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    inputs: list[RequestInput] = Field(..., min_length=1)
    outputs: Optional[list[RequestOutput]] = None


class ResponseOutput(_Msg):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: Optional[list[Any]] = None


class InferenceResponse(_Msg):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    outputs: list[ResponseOutput]


class RepositoryIndexEntry(_Msg):
    name: str
    version: Optional[str] = None
    state: Optional[str] = Field(None, description="READY, LOADING, UNAVAILABLE")
    reason: Optional[str] = None


class RepositoryIndexRequest(_Msg):
    ready: Optional[bool] = Field(None, description="true: only the models that are ready.")
