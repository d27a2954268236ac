"""HTTP errors with a status, a human-readable detail and (for classify) the per-image problems."""

from __future__ import annotations

from typing import Optional, Sequence

from .schemas import ImageError


class ApiError(Exception):
    """Raised by routes; rendered as :class:`serve.schemas.ErrorResponse` with the request id."""

    def __init__(self, status: int, detail: str, *, errors: Sequence[ImageError] = (),
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}


class BodyTooLarge(Exception):
    """The request body grew past ``max_request_bytes`` while it was being received."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit
