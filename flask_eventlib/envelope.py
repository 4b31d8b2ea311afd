"""The envelope: what travels for one event between ``log()`` and the handlers.

On the wire an envelope is one JSON object (the codec's tagged JSON)::

    {"v": 1, "id": "<uuid>", "name": "app.EventName", "data": {...}, "context": {...},
     "logged_at": "2026-12-02T06:29:11.123456+00:00", "trace": {"traceparent": "00-..."}}

``trace`` is optional (``EVENTLIB_TRACING``): the W3C trace context of the code that logged the
event, strings by name. An envelope without it decodes as before, and a decoder that predates it
ignores it, so it needs no new format version.

``id`` is required and made once (by ``log()`` or the JS client); it is the same in every
delivery and retry, so dedup and handlers can rely on it. Decoding checks every field on its own,
so a crafted or damaged envelope is refused with an error that names the field, and never reaches
a handler.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson

from .exceptions import SerializationError
from .serialization import Codec

#: Version of the envelope format, checked on decode.
FORMAT_VERSION = 1


@dataclass(slots=True)
class Envelope:
    """One event as it travels.

    :param id: the event id (required).
    :param name: the event's name, ``"app.EventName"``.
    :param data: the event's data, as ``clean()`` left it.
    :param context: server-side facts (e.g. the client address), not data.
    :param logged_at: when ``log()`` accepted it (aware, UTC).
    :param trace: the trace context of the code that logged it (``traceparent``, ``tracestate``).
    """

    id: str
    name: str
    data: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    logged_at: dt.datetime | None = None
    trace: dict[str, str] | None = None


def encode(envelope: Envelope, codec: Codec) -> str:
    """The envelope as a JSON string.

    :raises SerializationError: (a ``TypeError``) naming the key that cannot be serialized.
    """
    return encode_fields(
        codec, envelope.id, envelope.name, envelope.data, envelope.context, envelope.logged_at, trace=envelope.trace
    )


def encode_fields(
    codec: Codec,
    id: str,
    name: str,
    data: dict[str, Any],
    context: dict[str, Any],
    logged_at: dt.datetime | None,
    trace: dict[str, str] | None = None,
    *,
    encoded_context: dict[str, Any] | None = None,
) -> str:
    """:func:`encode` from the fields themselves: ``log()``'s path, which has them at hand and
    need not build an :class:`Envelope` for each event.

    :param encoded_context: ``context`` already encoded by ``codec`` (events that share one).
    """
    # The flat dict of most events in one call; encode() for the rest, and to name what fails.
    encoded = codec.encode_flat(data)
    if encoded_context is None:
        encoded_context = codec.encode(context, root=f"{name} context") if context else {}
    document = {
        "v": FORMAT_VERSION,
        "id": id,
        "name": name,
        "data": codec.encode(data, root=f"{name} data") if encoded is None else encoded,
        "context": encoded_context,
        # orjson writes an aware datetime as ISO 8601 itself, faster than isoformat().
        "logged_at": logged_at,
    }
    if trace:
        document["trace"] = trace
    try:
        return orjson.dumps(document).decode()
    except orjson.JSONEncodeError:  # the codec's own serialize names the string at fault
        return codec.serialize(document, root=f"the {name} envelope")


def decode(message: str | bytes, codec: Codec) -> Envelope:
    """The envelope an encoded message holds, each field checked.

    :raises SerializationError: naming the field that is missing or of the wrong type.
    """
    document = codec.loads(message)
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
        raise SerializationError(f"Not a flask-eventlib event envelope of format {FORMAT_VERSION}: {_shown(message)}")
    event_id = document.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise SerializationError(f"The envelope's 'id' must be a non-empty string, not {_kind(event_id)}")
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise SerializationError(f"The envelope {event_id}'s 'name' must be a non-empty string, not {_kind(name)}")
    data = document.get("data", {})
    if not isinstance(data, dict):
        raise SerializationError(f"The envelope {event_id}'s 'data' must be an object, not {_kind(data)}")
    context = document.get("context") or {}
    if not isinstance(context, dict):
        raise SerializationError(f"The envelope {event_id}'s 'context' must be an object, not {_kind(context)}")
    logged_at = document.get("logged_at")
    if logged_at is not None:
        if not isinstance(logged_at, str):
            raise SerializationError(f"The envelope {event_id}'s 'logged_at' must be a string, not {_kind(logged_at)}")
        try:
            logged_at = dt.datetime.fromisoformat(logged_at)
        except ValueError:
            raise SerializationError(f"The envelope {event_id}'s 'logged_at' is not an ISO 8601 time") from None
    trace = document.get("trace")
    if trace is not None and not (isinstance(trace, dict) and all(isinstance(v, str) for v in trace.values())):
        raise SerializationError(f"The envelope {event_id}'s 'trace' must be an object of strings, not {_kind(trace)}")
    return Envelope(event_id, name, data, context, logged_at, trace or None)


def _kind(value: Any) -> str:
    return "missing" if value is None else type(value).__name__


def _shown(message: str | bytes) -> str:
    return repr(str(message)[:80])
