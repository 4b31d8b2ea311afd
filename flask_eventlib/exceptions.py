"""The error hierarchy: one base class, each error naming what went wrong and how to fix it."""

from __future__ import annotations

from typing import Any


class EventlibError(Exception):
    """Base class of every error raised by flask-eventlib."""


class ConfigurationError(EventlibError, RuntimeError):
    """The extension, an event or a handler is set up wrongly."""


class EventNotFound(EventlibError, LookupError):
    """No event is registered under the name given to ``log()``.

    Its text is the spec's sentence (``"There is no event named X in the Y app"``), then, when
    there is one, a hint: the nearest event name, or the apps that exist.

    :param hint: what to try instead, e.g. ``"Did you mean 'deals.DealClick'?"``.
    """

    def __init__(self, message: str, *, name: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{message}. {hint}" if hint else message)
        #: The spec's sentence alone, without the hint (what a browser is told: the hint names
        #: events it may not log).
        self.message = message
        #: The name that was looked up.
        self.name = name
        #: What to try instead, or ``None``.
        self.hint = hint


class EventNotPublic(EventlibError, PermissionError):
    """A browser (or other untrusted caller) tried to log an event whose class is not ``public``."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        #: The event's name.
        self.name = name


class ValidationError(EventlibError, ValueError):
    """An event's data was refused by ``clean()``, ``require_data_keys()`` or its schema.

    :param message: a sentence, or a dict / list of messages (as Marshmallow gives them).
    :param messages: the structured messages; defaults to ``message``.
    """

    def __init__(self, message: Any, *, messages: Any = None) -> None:
        super().__init__(message)
        #: The structured messages, e.g. ``{"deal_id": ["Not a valid integer."]}``.
        self.messages: Any = message if messages is None else messages


class SerializationError(EventlibError, TypeError):
    """A value in an event's data cannot be serialized (or a payload cannot be decoded)."""


class DontRetry(EventlibError):
    """Raise from a handler for a failure no retry can fix: it goes to the dead letters at once.

    ``raise DontRetry("customer 7 was deleted") from error`` keeps the original as its cause.
    """


class WorkerDied(EventlibError):
    """What a dead letter records for a handler whose worker process died each time it ran it.

    Never raised: the worker that would catch it is dead. The handler's event is in the dead
    letter; fix the handler (its memory use, a crashing C extension), then replay it.
    """
