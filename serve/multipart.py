"""``multipart/form-data`` for the classify hot path: the whole body (already bounded by the server's body limit)
split into parts with ``bytes.find``.

Why not Starlette's ``request.form()``: it streams every chunk through python-multipart's byte-level callbacks
and spools each file into a ``SpooledTemporaryFile`` that the route then reads back; for one photo that was
about as much event-loop time as everything else in the request (docs/results.md section 9), and the route needs
the bytes in memory anyway. The semantics are the ones Starlette's parser gives: a part with a ``filename``
parameter is a file, any other part a plain field (at most ``max_field_bytes``); header parameters are parsed
by python-multipart's own ``parse_options_header`` (quoting, RFC 2231 ``filename*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from python_multipart.multipart import parse_options_header


class MultipartError(ValueError):
    """The body is not valid multipart/form-data (answer 400)."""


class TooManyFiles(MultipartError):
    """More file parts than allowed (answer 413)."""


@dataclass(frozen=True)
class Part:
    name: str
    filename: Optional[str]  # None: a plain field
    content_type: str
    data: bytes

    @property
    def is_file(self) -> bool:
        return self.filename is not None


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` content type."""
    _, opts = parse_options_header(content_type)
    boundary = opts.get(b"boundary")
    if not boundary:
        raise MultipartError("missing boundary in multipart content type")
    return boundary


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_form(body: bytes, boundary: bytes, *, max_files: int, max_fields: int,
               max_field_bytes: int) -> list[Part]:
    """The parts of ``body`` in order. Raises :class:`TooManyFiles` or :class:`MultipartError`."""
    delim = b"--" + boundary
    sep = b"\r\n" + delim
    if body.startswith(delim):
        pos = len(delim)
    else:  # a preamble before the first boundary is allowed and ignored
        first = body.find(sep)
        if first < 0:
            raise MultipartError("no multipart boundary found in the body")
        pos = first + len(sep)
    parts: list[Part] = []
    files = fields = 0
    while True:
        if body.startswith(b"--", pos):
            return parts  # the closing delimiter (an epilogue after it is ignored)
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("malformed multipart boundary line")
        start = eol + 2
        if body.startswith(b"\r\n", start):  # a part without headers
            block, content = b"", start + 2
        else:
            end_headers = body.find(b"\r\n\r\n", start)
            if end_headers < 0:
                raise MultipartError("the body ends inside a part's headers")
            block, content = body[start:end_headers], end_headers + 4
        end = body.find(sep, content)
        if end < 0:
            raise MultipartError("the body ends inside a part (no closing boundary)")
        disposition, ctype = None, ""
        for line in block.split(b"\r\n") if block else ():
            key, colon, value = line.partition(b":")
            if not colon:
                raise MultipartError("malformed part header line")
            key = key.strip().lower()
            if key == b"content-disposition":
                disposition = value.strip()
            elif key == b"content-type":
                ctype = value.strip().decode("latin-1")
        if disposition is None:
            raise MultipartError("a part has no Content-Disposition header")
        _, opts = parse_options_header(disposition)
        raw_filename = opts.get(b"filename")
        data = body[content:end]
        if raw_filename is not None:
            files += 1
            if files > max_files:
                raise TooManyFiles(f"too many files (at most {max_files})")
        else:
            fields += 1
            if fields > max_fields:
                raise MultipartError(f"too many fields (at most {max_fields})")
            if len(data) > max_field_bytes:
                raise MultipartError(f"a field part is larger than {max_field_bytes} bytes")
        parts.append(Part(_text(opts.get(b"name", b"")), None if raw_filename is None else _text(raw_filename),
                          ctype, data))
        pos = end + len(sep)
