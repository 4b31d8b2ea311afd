"""The ingest's error model: why a request, or one event of it, was refused, in one JSON shape.

Flask-free: the parser and the guards raise :class:`Refused`; the view renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import EventlibError

#: The ``code`` of an HTTP error the ingest did not raise itself (Werkzeug's 413, a limiter's 429).
CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
}


@dataclass
class Problem:
    """Why a request, or one event of it, was refused; rendered as an item of ``errors``."""

    status: int
    code: str
    message: str
    index: int | None = None
    event: str | None = None
    id: str | None = None
    details: Any = None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "index": self.index,
            "event": self.event,
            "id": self.id,
            "details": self.details,
        }


class Refused(EventlibError):
    """A refusal of the whole request; the blueprint's error handler renders it as JSON.

    Not a Werkzeug ``HTTPException``, so that the parser and the guards raise it without Flask.

    :param status: the response's HTTP status.
    :param code: the error's ``code``, e.g. ``"invalid_json"``.
    :param message: a sentence for the client, saying what to send instead.
    :param retry_after: seconds a client should wait before trying again (sent as ``Retry-After``).
    """

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = Problem(status, code, message)
        #: Seconds a client should wait before trying again (sent as ``Retry-After``).
        self.retry_after = retry_after


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters: a client's names and ids come back in messages."""
    return text if len(text) <= limit else text[:limit] + "..."


def jsonable(value: Any) -> Any:
    """Validation messages as JSON: string keys, and ``str()`` for what JSON cannot hold."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
