"""The names the eventlib spec puts in ``eventlib.core``."""

from __future__ import annotations

from .registry import MethodHandlerView

#: ``HANDLER_REGISTRY[EventClass]``: that class's method handlers in declaration order. Method
#: handlers belong to the class, so this is the same in every app; an app's function handlers are
#: in its registry (``app.extensions["eventlib"].registry``).
HANDLER_REGISTRY = MethodHandlerView()

__all__ = ["HANDLER_REGISTRY"]
