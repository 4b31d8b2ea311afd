"""Reading the events of a request to ``POST /event/log``: the hostile-input code, Flask-free.

The view passes what it read of the request (the body's bytes, the parsed form, the query
parameters), so this module is fuzzed directly, without an app or a test client. It checks the
shape of the request and of each event; whether an event exists, is public and is valid is the
view's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .. import config
from .errors import Problem, Refused, clip

#: The deepest nesting of objects and arrays accepted in a JSON body.
MAX_DEPTH = 32
#: Parameters of the query-string and form bodies that are not data.
EVENT_PARAM = "__event__"
ID_PARAM = "__id__"
#: Content types whose body is JSON (``text/plain`` needs no CORS preflight).
JSON_TYPES = frozenset({"application/json", "text/plain"})
#: Content types whose body is a form of parameters, like the query string.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

_EVENT_KEYS = frozenset({"event", "data", "id"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_SHAPE_HINT = 'Send {"event": "app.EventName", "data": {...}} or {"events": [...]}.'
_BOTH = "Send the event in the query string or in the body, not both."


class Params(Protocol):
    """Request parameters with all the values of each key, as Werkzeug's ``MultiDict`` has them.

    Every key has at least one value; a plain ``{key: [value, ...]}`` dict needs only a
    ``lists()`` that returns its ``items()``.
    """

    def __len__(self) -> int: ...

    def lists(self) -> Iterable[tuple[str, list[str]]]: ...


@dataclass
class Item:
    """One event as the client sent it, shape-checked but not yet looked up."""

    #: Its position in the batch (0 for a single event).
    index: int
    name: str
    data: dict[str, Any]
    #: The client's id for the event, in lower case; ``None`` when the server makes one.
    id: str | None


def read_events(
    mimetype: str,
    body: bytes = b"",
    query: Params | None = None,
    form: Params | None = None,
    *,
    has_files: bool = False,
    max_batch: int,
    max_depth: int = MAX_DEPTH,
) -> tuple[list[Item], list[Problem]]:
    """The events of a request, and the refusals of the events whose shape is wrong.

    :param mimetype: the content type without its parameters, in lower case; ``""`` for none.
    :param body: the raw body, read for :data:`JSON_TYPES` and for a request without a type; not
        needed for other types (a form is parsed by the caller, other types are refused unread).
    :param query: the query string's parameters; ``None`` for an empty query string.
    :param form: the parsed form of a :data:`FORM_TYPES` body.
    :param has_files: whether that form carried files.
    :param max_batch: the most events in one request (``EVENTLIB_MAX_BATCH``).
    :param max_depth: the deepest nesting of objects and arrays in a JSON body.
    :raises Refused: when the request as a whole cannot be read.
    """
    if mimetype in JSON_TYPES:
        if body and query:
            raise Refused(400, "invalid_request", _BOTH)
        if body:
            return _from_json(body, max_batch, max_depth)
        return _from_params(query)
    if mimetype in FORM_TYPES:
        if has_files:
            raise Refused(400, "invalid_request", "Files are not accepted; send the event's data as fields.")
        if form and query:
            raise Refused(400, "invalid_request", _BOTH)
        return _from_params(form or query)
    if mimetype:
        raise Refused(
            415,
            "unsupported_media_type",
            "Send application/json, text/plain (holding JSON), application/x-www-form-urlencoded or "
            "multipart/form-data.",
        )
    if body:
        raise Refused(415, "unsupported_media_type", "A body needs a Content-Type, e.g. application/json.")
    return _from_params(query)


def _from_params(params: Params | None) -> tuple[list[Item], list[Problem]]:
    """The spec's form: ``__event__`` names the event, every other parameter is data (a string)."""
    if not params:
        raise Refused(
            400, "invalid_request", f"No event: name it with {EVENT_PARAM} in the query string, or send JSON."
        )
    data: dict[str, Any] = {}
    for key, values in params.lists():
        if len(values) > 1:
            raise Refused(400, "invalid_request", f"The parameter {clip(key)!r} is repeated; send it once.")
        data[key] = values[0]
    name = data.pop(EVENT_PARAM, None)
    if not name:
        raise Refused(400, "invalid_request", f"The event name is missing: send it as {EVENT_PARAM}.")
    item = _item(0, name, data, data.pop(ID_PARAM, None))
    return ([item], []) if isinstance(item, Item) else ([], [item])


def _from_json(body: bytes, max_batch: int, max_depth: int) -> tuple[list[Item], list[Problem]]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, "invalid_json", f"The body is not valid JSON (UTF-8): {exc}") from None
    # Counting brackets is C-fast; only a body with enough of them can nest too deeply.
    if body.count(b"[") + body.count(b"{") > max_depth and _too_deep(document, max_depth):
        raise Refused(400, "invalid_json", f"The body nests objects and arrays deeper than {max_depth} levels.")
    if not isinstance(document, dict):
        raise Refused(400, "invalid_request", f"The body must be a JSON object. {_SHAPE_HINT}")
    if "events" not in document:
        item = _event_from_json(0, document)
        return ([item], []) if isinstance(item, Item) else ([], [item])
    if set(document) != {"events"}:
        raise Refused(400, "invalid_request", f"A batch has only the key 'events'. {_SHAPE_HINT}")
    events = document["events"]
    if not isinstance(events, list) or not events:
        raise Refused(400, "invalid_request", "'events' must be a non-empty array of events.")
    if len(events) > max_batch:
        raise Refused(
            413,
            "too_many_events",
            f"The batch holds {len(events)} events; send at most {max_batch} ({config.MAX_BATCH}).",
        )
    items: list[Item] = []
    problems: list[Problem] = []
    for index, entry in enumerate(events):
        found = _event_from_json(index, entry)
        if isinstance(found, Item):
            items.append(found)
        else:
            problems.append(found)
    return items, problems


def _event_from_json(index: int, entry: Any) -> Item | Problem:
    if not isinstance(entry, dict):
        return Problem(400, "invalid_event", f"An event must be a JSON object. {_SHAPE_HINT}", index=index)
    name = entry.get("event")
    event = clip(name) if isinstance(name, str) else None
    if not _EVENT_KEYS.issuperset(entry):
        unexpected = sorted(set(entry) - _EVENT_KEYS)
        keys = ", ".join(repr(clip(key)) for key in unexpected[:5])
        return Problem(
            400, "invalid_event", f"Unexpected keys {keys}; an event has only event, data and id.", index, event
        )
    if not isinstance(name, str) or not name:
        return Problem(400, "invalid_event", "The event name is missing or not a string: send 'event'.", index)
    data = entry.get("data", {})
    if not isinstance(data, dict):
        return Problem(400, "invalid_event", "The event's 'data' must be a JSON object.", index, event)
    return _item(index, name, data, entry.get("id", None))


def _item(index: int, name: str, data: dict[str, Any], event_id: Any) -> Item | Problem:
    if event_id is None:
        return Item(index, name, data, None)
    if not isinstance(event_id, str) or not _UUID.fullmatch(event_id):
        shown = clip(event_id) if isinstance(event_id, str) else None
        return Problem(
            400,
            "invalid_id",
            "An event id must be a UUID like 2f1c0f6e-8b1a-4c5e-9f0a-3d2b1c4e5f6a.",
            index,
            name,
            shown,
        )
    return Item(index, name, data, event_id.lower())


def _too_deep(document: Any, max_depth: int) -> bool:
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth >= max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
