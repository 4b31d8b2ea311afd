"""The browser's front door: ``POST /event/log``, a hardened ingest for public events.

A request is checked as a whole first (method 405, size 413, origin 403, rate 429, content type
415, body shape 400), then each event on its own (unknown 404, not public 403, refused by its
``clean()`` 400). The events go through the same steps as server-side ``log()`` (find, build,
``clean()``, encode), in one :class:`~flask_eventlib.dispatch.Batch` per request, with
server-side ``context`` the client cannot set; the accepted ones are handed on together. Every
response is JSON of one shape::

    {"accepted": ["<event id>", ...],
     "errors": [{"status": 400, "code": "validation_error", "message": "...",
                 "index": 0, "event": "app.EventName", "id": null, "details": {...}}]}

In a batch each event gets its own result: valid events are logged even when a neighbour is
refused. The status is 202 when at least one event was accepted; otherwise the status the refusals
share (400 when they differ).

The only module of :mod:`flask_eventlib.ingest` that imports Flask: the body is parsed by
:mod:`.parser`, the origin and the rate are checked by :mod:`.guards`, and the library's core is
reached through :func:`_core` alone.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import orjson
from flask import Blueprint, Flask, Request, Response, current_app, request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..exceptions import ConfigurationError, EventNotFound, EventNotPublic, ValidationError
from ..script import eventlib_script, serve_script
from ..state import EXTENSION_KEY, EventLibState
from .errors import CODES, Problem, Refused, clip, jsonable
from .guards import check_origin, normalise_origin
from .parser import FORM_TYPES, JSON_TYPES, Item, read_events
from .settings import HttpSettings

#: The extension's blueprint; its endpoint is ``eventlib.log``. Pass it to ``csrf.exempt()`` or
#: to your own Flask-Limiter's ``limiter.exempt()``.
blueprint = Blueprint("eventlib", __name__)

_ENDPOINT = "eventlib.log"


# -- the core, as the ingest sees it --------------------------------------------------------------


def _core(app: Flask | None = None) -> tuple[EventLibState, HttpSettings]:
    """The state and ingest settings of ``app`` (default: the current app): the one place the
    ingest reaches the core.

    :raises ConfigurationError: when ``EventLib.init_app`` did not set up the app's ingest.
    """
    state = (current_app if app is None else app).extensions.get(EXTENSION_KEY)
    if state is None or state.http is None:
        raise ConfigurationError(
            "The eventlib blueprint is registered by EventLib.init_app() (EVENTLIB_HTTP_ENABLED), "
            "not by hand; set EVENTLIB_URL_PREFIX to move it."
        )
    return state, state.http


# -- set-up ---------------------------------------------------------------------------------------


def register_http(app: Flask, settings: HttpSettings) -> None:
    """Register the blueprint on ``app`` where ``settings`` say; called by ``EventLib.init_app``
    once the app's state (which holds ``settings``) is in place."""
    app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
    app.add_template_global(eventlib_script)


# -- request hooks --------------------------------------------------------------------------------


@blueprint.url_value_preprocessor
def _limit_body_size(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # URL value preprocessors run before every before_request hook, so no hook of the app can
    # read an unlimited body of this endpoint first.
    req = request._get_current_object()  # type: ignore[attr-defined]  # one look through the proxy
    limit = _core(current_app._get_current_object())[1].max_content_length  # type: ignore[attr-defined]
    req.max_content_length = limit
    environ = req.environ
    if (_chunked(environ) or environ.get("CONTENT_LENGTH") is None) and environ.get("wsgi.input_terminated"):
        # A body without a length (chunked, which also overrides a Content-Length): Werkzeug
        # would cut it at the limit and go on with what it read. Read one byte past the limit
        # instead, refuse the body if it is there, and hand Werkzeug the body with its length.
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            raise Refused(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ.pop("wsgi.input_terminated", None)


@blueprint.before_app_request
def _refuse_other_methods() -> Response | None:
    """Answer any method but POST on the endpoint with the JSON 405 (routing would answer in HTML)."""
    if not isinstance(request.routing_exception, MethodNotAllowed):
        return None
    adapter = current_app.create_url_adapter(request)
    if adapter is None:
        return None
    try:
        endpoint, _ = adapter.match(method="POST")
    except HTTPException:
        return None
    if endpoint != _ENDPOINT:
        return None
    response = _respond(405, [], [Problem(405, "method_not_allowed", "Only POST is allowed on this endpoint.")])
    response.headers["Allow"] = "POST"
    return response


# -- the views ------------------------------------------------------------------------------------


@blueprint.route("/log", endpoint="log", methods=["POST"], provide_automatic_options=False)
def log_event() -> Response:
    """Log the events of a browser's request; see the module docstring for the response."""
    # The request and the app looked up once: each look through Flask's proxies costs about half
    # a microsecond, and this view used to make twenty of them.
    req = request._get_current_object()  # type: ignore[attr-defined]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state, settings = _core(app)
    environ = req.environ  # read directly: Werkzeug's header views cost more than the check
    query_string = environ.get("QUERY_STRING", "")
    if len(query_string) > settings.max_content_length:
        raise Refused(413, "payload_too_large", f"The query string is longer than {settings.max_content_length} bytes.")
    origin = environ.get("HTTP_ORIGIN")
    referer = environ.get("HTTP_REFERER") if origin is None else None
    if origin is not None or referer is not None:  # else not from a browser, and host_url costs
        check_origin(origin, referer, req.host_url, settings.allowed_origins)
    if settings.limiter is not None:
        # After the origin check, so a foreign page cannot use up a visitor's budget; before the
        # body is read, so the limit also caps the work of reading bodies. REMOTE_ADDR, as
        # request.remote_addr reads it: behind a proxy, wrap the app in ProxyFix (never a raw
        # X-Forwarded-For).
        settings.limiter.check(environ.get("REMOTE_ADDR") or "unknown")
    items, problems = _read_events(req, environ, bool(query_string), settings)
    accepted, refused = _log(state, items, environ)
    if problems or refused:
        problems = sorted([*problems, *refused], key=lambda p: -1 if p.index is None else p.index)
    if accepted:
        status = 202
    else:
        statuses = {problem.status for problem in problems}
        status = statuses.pop() if len(statuses) == 1 else 400
    return _respond(status, accepted, problems, settings.allowed_origins, environ, app.response_class)


@blueprint.get("/schema.json", endpoint="schema")
def event_schema() -> Response:
    """The JSON Schema of the public events' data, as ``flask eventlib schema`` prints it."""
    from flask import jsonify

    from ..jsonschema import json_schema

    return jsonify(json_schema(_core()[0].registry.events()))


blueprint.add_url_rule("/eventlib.js", "script", serve_script, methods=["GET"])


def _read_events(
    req: Request, environ: dict[str, Any], has_query: bool, settings: HttpSettings
) -> tuple[list[Item], list[Problem]]:
    """Hand the parser what the request's content type needs, read once."""
    mimetype = _mimetype(environ.get("CONTENT_TYPE"))
    query = req.args if has_query else None  # parsing even an empty one costs
    if mimetype in FORM_TYPES:
        # Werkzeug parses the form from the stream: the body is not read as bytes too.
        form = req.form
        return read_events(mimetype, b"", query, form, has_files=bool(req.files), max_batch=settings.max_batch)
    # The body of another type is refused unread: a 415, however large it is.
    body = _body(req, environ, settings.max_content_length) if not mimetype or mimetype in JSON_TYPES else b""
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


def _body(req: Request, environ: dict[str, Any], limit: int) -> bytes:
    """The body of a request with a plain ``Content-Length`` within ``limit``, read straight from
    the server's stream, which a WSGI server ends at that length (Werkzeug's wrapped stream cost
    more than the rest of reading an event); the stream is then a copy of the body, so the app can
    still read ``request.data``. Any other request (a length out of bounds or not a number, a
    chunked body, a body the app's hooks read first) is Werkzeug's, with its 413 and 400."""
    length = environ.get("CONTENT_LENGTH")
    if not length:
        return b""
    size = int(length) if length.isdigit() and length.isascii() else -1
    if not 0 <= size <= limit or _chunked(environ) or "stream" in req.__dict__:
        # The last: a hook of the app read the body already (request.stream is a cached property,
        # kept in the request's __dict__), so what it read is Werkzeug's to give again.
        return req.get_data(cache=True)
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


# -- responses ------------------------------------------------------------------------------------


@blueprint.errorhandler(Refused)
def _refused(exc: Refused) -> Response:
    """A refusal of the whole request by the parser or a guard."""
    return _error_response(exc.problem, exc.retry_after)


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    """Every HTTP error of the endpoint (Werkzeug's 413, an app limiter's 429) in the one shape."""
    status = exc.code or 500
    problem = Problem(status, CODES.get(status, "http_error"), _http_message(exc, status))
    return _error_response(problem, getattr(exc, "retry_after", None))


def _error_response(problem: Problem, retry_after: Any) -> Response:
    response = _respond(problem.status, [], [problem])
    if problem.status == 429:
        # Seconds until the client may try again (a minute when the refusal does not say).
        response.headers["Retry-After"] = str(retry_after if isinstance(retry_after, int) else 60)
    return response


def _http_message(exc: HTTPException, status: int) -> str:
    if status == 413:
        return f"The request body is larger than {_core()[1].max_content_length} bytes."
    if status == 429:
        return f"Too many requests from this client ({exc.description}); retry after Retry-After seconds."
    if status >= 500:
        return "The server failed to log the events; the error is in its log."
    return str(exc.description or exc.name)


def _respond(
    status: int,
    accepted: list[str],
    problems: list[Problem],
    allowed_origins: frozenset[str] | None = None,
    environ: dict[str, Any] | None = None,
    response_class: type[Response] | None = None,
) -> Response:
    """The one JSON shape; ``allowed_origins`` defaults to the app's (none when it has no ingest
    set up), ``environ`` to the current request's, ``response_class`` to the current app's."""
    body = orjson.dumps({"accepted": accepted, "errors": [problem.as_json() for problem in problems]})
    headers = [*_HEADERS]
    origin = (request.environ if environ is None else environ).get("HTTP_ORIGIN")
    if origin:
        normalised = normalise_origin(origin)
        if allowed_origins is None:
            allowed_origins = _allowed_origins()
        if normalised is not None and normalised in allowed_origins:
            # Lets a page of an allowed origin read the answer of a CORS-safe fetch (no preflight).
            # normalise_origin() gave scheme://host[:port] of a header Werkzeug already read, so
            # it holds no line break.
            headers.append(("Access-Control-Allow-Origin", normalised))
            headers.append(("Access-Control-Expose-Headers", "Retry-After"))  # the JS client's backoff reads it
    if response_class is None:
        response_class = current_app.response_class
    return response_class(body, status=status, headers=_checked(headers))


#: The headers of every answer. Constants, so they need none of the checks Werkzeug's ``Headers``
#: makes of each value it is given: those checks took about 10 of the view's 65 µs a request in a
#: gunicorn worker (py-spy).
_HEADERS = (
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Vary", "Origin"),
)


def _checked(pairs: list[tuple[str, str]]) -> Headers:
    """``Headers`` holding ``pairs`` as they are: each one a constant or an origin already
    normalised, so there is nothing for Werkzeug to check. A ``Headers`` keeps its pairs in
    ``_list``; the tests check every answer's headers, so a Werkzeug that changes it fails them."""
    headers = Headers()
    headers._list = pairs
    return headers


def _allowed_origins() -> frozenset[str]:
    try:
        return _core()[1].allowed_origins
    except ConfigurationError:  # the blueprint registered by hand, on an app without the ingest
        return frozenset()
