"""The hot-path multipart parser: the same parts as Starlette's own parser, and malformed bodies refused."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.datastructures import UploadFile
from starlette.requests import Request

from serve.multipart import MultipartError, TooManyFiles, boundary_of, parse_form

LIMITS = dict(max_files=8, max_fields=4, max_field_bytes=64)


def _encode(**kwargs) -> tuple[bytes, str]:
    req = httpx.Request("POST", "http://test/", **kwargs)
    return req.read(), req.headers["content-type"]


def _starlette(body: bytes, ctype: str) -> list[tuple[str, str | None, str, bytes]]:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def main():
        req = Request({"type": "http", "method": "POST", "headers": [(b"content-type", ctype.encode())]}, receive)
        form = await req.form()
        out = []
        for k, v in form.multi_items():
            if isinstance(v, UploadFile):
                out.append((k, v.filename, v.content_type or "", await v.read()))
            else:
                out.append((k, None, "", v.encode()))
        return out

    return asyncio.run(main())


def _ours(body: bytes, ctype: str, **limits) -> list[tuple[str, str | None, str, bytes]]:
    return [(p.name, p.filename, p.content_type, p.data)
            for p in parse_form(body, boundary_of(ctype), **{**LIMITS, **limits})]


@pytest.mark.parametrize("kwargs", [
    dict(files={"file": ("a.jpg", b"\xff\xd8jpeg\r\n--not-the-boundary\r\n\r\nbytes", "image/jpeg")}),
    dict(files=[("files", ("a.png", b"png", "image/png")), ("file", ("b b.jpg", b"", "image/jpeg")),
                ("files", ("c", b"x" * 5000, "application/octet-stream"))], data={"top_k": "3"}),
    dict(files={"file": ("caf\u00e9.jpg", b"\x00\x01", "image/jpeg")}, data={"note": "gr\u00fc\u00df"}),
])
def test_the_same_parts_as_starlettes_parser(kwargs):
    body, ctype = _encode(**kwargs)
    assert _ours(body, ctype) == _starlette(body, ctype)


def test_preamble_epilogue_quoted_boundary_and_a_part_without_content_type():
    body = (b"preamble\r\n--b\"x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nDATA"
            b"\r\n--b\"x--\r\nepilogue")
    parts = parse_form(body, boundary_of('multipart/form-data; boundary="b\\"x"'), **LIMITS)
    assert [(p.name, p.filename, p.content_type, p.data) for p in parts] == [("file", "a", "", b"DATA")]


@pytest.mark.parametrize("body, why", [
    (b"", "no multipart boundary"),
    (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nDATA", "no closing boundary"),
    (b"--B\r\nContent-Disposition: form-data; name=\"f\"", "inside a part's headers"),
    (b"--B\r\nno colon here\r\n\r\nx\r\n--B--", "header line"),
    (b"--B\r\nContent-Type: image/png\r\n\r\nx\r\n--B--", "Content-Disposition"),
    (b"--Bjunk\r\n\r\nx\r\n--B--", "boundary line"),
])
def test_malformed_bodies_are_refused(body, why):
    with pytest.raises(MultipartError, match=why):
        parse_form(body, b"B", **LIMITS)


def test_limits_on_files_fields_and_field_size():
    body, ctype = _encode(files=[("file", (f"{i}", b"x", "image/png")) for i in range(3)])
    with pytest.raises(TooManyFiles):
        _ours(body, ctype, max_files=2)
    body, ctype = _encode(data={"a": "1", "b": "2", "c": "3"}, files={"file": ("a", b"x", "image/png")})
    with pytest.raises(MultipartError, match="too many fields"):
        _ours(body, ctype, max_fields=2)
    body, ctype = _encode(data={"a": "x" * 65}, files={"file": ("a", b"y" * 1000, "image/png")})
    with pytest.raises(MultipartError, match="larger than 64 bytes"):
        _ours(body, ctype)  # a field over the limit; a file part of any size is fine
    with pytest.raises(MultipartError, match="missing boundary"):
        boundary_of("multipart/form-data")
