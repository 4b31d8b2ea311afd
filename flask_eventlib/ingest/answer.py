"""One request of ``POST /event/log`` answered, from its WSGI environ: the checks, the events
logged through the core, and the JSON answer. Flask-free.

Both ways in use it: the front door (:mod:`.door`, which answers the endpoint in front of Flask's
dispatch, the default) and the blueprint's view (:mod:`.view`, through Flask, with
``EVENTLIB_HTTP_THROUGH_FLASK``). Each turns an :class:`Answer` into its response.

A request is checked as a whole first (size 413, origin 403, rate 429, content type 415, body
shape 400), then each event on its own (unknown 404, not public 403, refused by its ``clean()``
400). The events go through the same steps as server-side ``log()`` (find, build, ``clean()``,
encode), in one :class:`~flask_eventlib.dispatch.Batch`, with server-side ``context`` the client
cannot set; the accepted ones are handed on together.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from werkzeug.exceptions import HTTPException

from ..exceptions import EventNotFound, EventNotPublic, ValidationError
from .errors import CODES, Problem, Refused, clip, jsonable
from .guards import check_origin, normalise_origin
from .parser import FORM_TYPES, JSON_TYPES, Item, read_events
from .settings import HttpSettings

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

    from ..state import EventLibState


class Answer:
    """A status, the JSON body and the headers (without ``Content-Length``) of one response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


class Incoming:
    """The request as the answer reads it: its WSGI environ, and Werkzeug's request object made
    only when something needs it (the query string, a form, the own URL for the origin check, a
    body Werkzeug must read); a JSON body of plain length is read straight from the environ.

    :param make: builds the request object from the environ (the front door's, in the app's context).
    :param request: the request object already made (the view's).
    """

    __slots__ = ("_made", "_make", "environ")

    def __init__(
        self,
        environ: dict[str, Any],
        make: Callable[[dict[str, Any]], Request] | None = None,
        request: Request | None = None,
    ) -> None:
        self.environ = environ
        self._make = make
        self._made = request

    @property
    def request(self) -> Request:
        if self._made is None:
            assert self._make is not None
            self._made = self._make(self.environ)
        return self._made

    def body_read_already(self) -> bool:
        """Whether something (a hook of the app) opened the body before the endpoint: then what it
        read is Werkzeug's to give again (``request.stream`` is a cached property, kept in the
        request's ``__dict__``)."""
        return self._made is not None and "stream" in self._made.__dict__

    def close(self) -> None:
        """Close the request object, if one was made (the files of a multipart form), as Flask
        does at a request's end."""
        if self._made is not None:
            self._made.close()


# -- the request as a whole -----------------------------------------------------------------------


def limit_body(environ: dict[str, Any], limit: int) -> None:
    """Make a body without a length (chunked, which also overrides a ``Content-Length``) one of
    known length, or refuse it: Werkzeug would cut it at the limit and go on with what it read.
    One byte past the limit is read; if it is there the body is refused whole.

    :raises Refused: 413 for a body larger than ``limit``.
    """
    if (_chunked(environ) or environ.get("CONTENT_LENGTH") is None) and environ.get("wsgi.input_terminated"):
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            raise Refused(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ.pop("wsgi.input_terminated", None)


def answer(state: EventLibState, settings: HttpSettings, incoming: Incoming) -> Answer:
    """Check, read and log the events of one POST; the refusals of the whole request (the
    parser's and the guards' :class:`Refused`, Werkzeug's HTTP errors) are answered too. Any
    other error (a bug in a ``clean()``) is raised, with none of the request's events handed on."""
    environ = incoming.environ
    try:
        return _answer(state, settings, incoming, environ)
    except Refused as exc:
        return refusal(exc.problem, exc.retry_after, settings, environ)
    except HTTPException as exc:
        return http_error(exc, settings, environ)


def _answer(state: EventLibState, settings: HttpSettings, incoming: Incoming, environ: dict[str, Any]) -> Answer:
    query_string = environ.get("QUERY_STRING", "")
    if len(query_string) > settings.max_content_length:
        raise Refused(413, "payload_too_large", f"The query string is longer than {settings.max_content_length} bytes.")
    origin = environ.get("HTTP_ORIGIN")
    referer = environ.get("HTTP_REFERER") if origin is None else None
    if origin is not None or referer is not None:  # else not from a browser, and host_url costs
        check_origin(origin, referer, incoming.request.host_url, settings.allowed_origins)
    if settings.limiter is not None:
        # After the origin check, so a foreign page cannot use up a visitor's budget; before the
        # body is read, so the limit also caps the work of reading bodies. REMOTE_ADDR, as
        # request.remote_addr reads it: behind a proxy, wrap the app in ProxyFix (never a raw
        # X-Forwarded-For).
        settings.limiter.check(environ.get("REMOTE_ADDR") or "unknown")
    items, problems = _read_events(incoming, environ, bool(query_string), settings)
    accepted, refused = _log(state, items, environ)
    if problems or refused:
        problems = sorted([*problems, *refused], key=lambda p: -1 if p.index is None else p.index)
    if accepted:
        status = 202
    else:
        statuses = {problem.status for problem in problems}
        status = statuses.pop() if len(statuses) == 1 else 400
    return respond(status, accepted, problems, settings.allowed_origins, environ)


def _read_events(
    incoming: Incoming, environ: dict[str, Any], has_query: bool, settings: HttpSettings
) -> tuple[list[Item], list[Problem]]:
    """Hand the parser what the request's content type needs, read once."""
    mimetype = _mimetype(environ.get("CONTENT_TYPE"))
    query = incoming.request.args if has_query else None  # parsing even an empty one costs
    if mimetype in FORM_TYPES:
        # Werkzeug parses the form from the stream: the body is not read as bytes too.
        request = incoming.request
        form = request.form
        return read_events(mimetype, b"", query, form, has_files=bool(request.files), max_batch=settings.max_batch)
    # The body of another type is refused unread: a 415, however large it is.
    body = _body(incoming, environ, settings.max_content_length) if not mimetype or mimetype in JSON_TYPES else b""
    return read_events(mimetype, body, query, max_batch=settings.max_batch)


def _mimetype(content_type: str | None) -> str:
    """The content type without its parameters, in lower case, as ``request.mimetype`` has it
    (which parses the parameters too, for nothing here)."""
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def _chunked(environ: dict[str, Any]) -> bool:
    """Whether the body comes chunked (which overrides any ``Content-Length``)."""
    return bool(environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked")


def _body(incoming: Incoming, environ: dict[str, Any], limit: int) -> bytes:
    """The body of a request with a plain ``Content-Length`` within ``limit``, read straight from
    the server's stream, which a WSGI server ends at that length (Werkzeug's wrapped stream cost
    more than the rest of reading an event); the stream is then a copy of the body, so the app can
    still read ``request.data``. Any other request (a length out of bounds or not a number, a
    chunked body, a body the app's hooks read first) is Werkzeug's, with its 413 and 400."""
    length = environ.get("CONTENT_LENGTH")
    if not length:
        return b""
    size = int(length) if length.isdigit() and length.isascii() else -1
    if not 0 <= size <= limit or _chunked(environ) or incoming.body_read_already():
        return incoming.request.get_data(cache=True)
    body = environ["wsgi.input"].read(size) if size else b""
    if len(body) < size:
        raise Refused(400, "invalid_request", f"The request body ended after {len(body)} of its {size} bytes.")
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _log(state: EventLibState, items: list[Item], environ: dict[str, Any]) -> tuple[list[str], list[Problem]]:
    """Log each event through the app's core, public ones only; return the accepted ids and the refusals.

    The events go in one batch: their context is encoded once, and the accepted ones are handed
    on together, in one append to the local log.
    """
    batch = state.batch(
        {
            "received_at": dt.datetime.now(dt.UTC),
            "remote_addr": environ.get("REMOTE_ADDR"),  # what request.remote_addr reads
            "user_agent": environ.get("HTTP_USER_AGENT"),
        },
        public_only=True,
    )
    accepted: list[str] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for item in items:
        event = clip(item.name)
        if item.id is not None and item.id in seen:
            problems.append(
                Problem(400, "invalid_id", "Two events of the batch have this id.", item.index, event, item.id)
            )
            continue
        try:
            # The core refuses an event whose class is not public, before it looks at the data.
            event_id = batch.add(item.name, item.data, item.id)
        except EventNotPublic as exc:
            problems.append(Problem(403, "private_event", clip(str(exc)), item.index, event, item.id))
            continue
        except EventNotFound as exc:
            # The spec's sentence without the hint, which could name events browsers may not log.
            problems.append(Problem(404, "unknown_event", clip(exc.message), item.index, event, item.id))
            continue
        except ValidationError as exc:
            message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else f"The data of {event} is invalid."
            problems.append(
                Problem(400, "validation_error", clip(message), item.index, event, item.id, jsonable(exc.messages))
            )
            continue
        if item.id is not None:
            seen.add(item.id)
        accepted.append(event_id)
    batch.publish()
    return accepted, problems


# -- answers --------------------------------------------------------------------------------------


def respond(
    status: int,
    accepted: list[str],
    problems: list[Problem],
    allowed_origins: frozenset[str],
    environ: dict[str, Any],
) -> Answer:
    """The one JSON shape, with the CORS headers an allowed origin gets."""
    body = orjson.dumps({"accepted": accepted, "errors": [problem.as_json() for problem in problems]})
    headers = [*HEADERS]
    origin = environ.get("HTTP_ORIGIN")
    if origin:
        normalised = normalise_origin(origin)
        if normalised is not None and normalised in allowed_origins:
            # Lets a page of an allowed origin read the answer of a CORS-safe fetch (no preflight).
            # normalise_origin() gave scheme://host[:port] of a header Werkzeug already read, so
            # it holds no line break.
            headers.append(("Access-Control-Allow-Origin", normalised))
            headers.append(("Access-Control-Expose-Headers", "Retry-After"))  # the JS client's backoff reads it
    return Answer(status, body, headers)


def refusal(
    problem: Problem, retry_after: Any, settings: HttpSettings | None, environ: dict[str, Any] | None
) -> Answer:
    """A refusal of the whole request (``settings``: ``None`` on an app without the ingest set up)."""
    result = respond(
        problem.status, [], [problem], settings.allowed_origins if settings else frozenset(), environ or {}
    )
    if problem.status == 429:
        # Seconds until the client may try again (a minute when the refusal does not say).
        result.headers.append(("Retry-After", str(retry_after if isinstance(retry_after, int) else 60)))
    return result


def http_error(exc: HTTPException, settings: HttpSettings | None, environ: dict[str, Any] | None) -> Answer:
    """An HTTP error of the endpoint (Werkzeug's 413, an app limiter's 429, a 500) in the one shape."""
    status = exc.code or 500
    problem = Problem(status, CODES.get(status, "http_error"), _http_message(exc, status, settings))
    return refusal(problem, getattr(exc, "retry_after", None), settings, environ)


def method_not_allowed(settings: HttpSettings | None, environ: dict[str, Any]) -> Answer:
    """The JSON 405 of any method but POST (routing would answer in HTML)."""
    result = refusal(
        Problem(405, "method_not_allowed", "Only POST is allowed on this endpoint."), None, settings, environ
    )
    result.headers.append(("Allow", "POST"))
    return result


def _http_message(exc: HTTPException, status: int, settings: HttpSettings | None) -> str:
    if status == 413 and settings is not None:
        return f"The request body is larger than {settings.max_content_length} bytes."
    if status == 429:
        return f"Too many requests from this client ({exc.description}); retry after Retry-After seconds."
    if status >= 500:
        return "The server failed to log the events; the error is in its log."
    return str(exc.description or exc.name)


#: The headers of every answer. Constants, so they need none of the checks Werkzeug's ``Headers``
#: makes of each value it is given: those checks took about 10 of the view's 65 µs a request in a
#: gunicorn worker (py-spy).
HEADERS = (
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Vary", "Origin"),
)
