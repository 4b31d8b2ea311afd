"""The names the eventlib spec puts in ``eventlib.core``."""

from __future__ import annotations

from .registry import MethodHandlerView, default_registry

#: ``HANDLER_REGISTRY[EventClass]``: that class's method handlers in declaration order.
HANDLER_REGISTRY = MethodHandlerView()

__all__ = ["HANDLER_REGISTRY", "default_registry"]
