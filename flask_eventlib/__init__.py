"""flask-eventlib: log events anywhere in a Flask app; Celery workers run their handlers."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .events import BaseEvent, EventData
from .exceptions import (
    ConfigurationError,
    DontRetry,
    EventlibError,
    EventNotFound,
    EventNotPublic,
    SerializationError,
    ValidationError,
    WorkerDied,
)
from .extension import EventLib, flush, log
from .handlers import external_handler, handler
from .registry import Registry
from .serialization import Codec, register_type
from .state import EventLibState

try:
    __version__ = version("flask-eventlib")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BaseEvent",
    "Codec",
    "ConfigurationError",
    "DontRetry",
    "EventData",
    "EventLib",
    "EventLibState",
    "EventNotFound",
    "EventNotPublic",
    "EventlibError",
    "Registry",
    "SerializationError",
    "ValidationError",
    "WorkerDied",
    "external_handler",
    "flush",
    "handler",
    "log",
    "register_type",
]
