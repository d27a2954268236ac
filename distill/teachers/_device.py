"""Device selection for teacher passes (one implementation: :func:`distill.device.pick_device`)."""

from __future__ import annotations

from ..device import pick_device as resolve_device

__all__ = ["resolve_device"]
