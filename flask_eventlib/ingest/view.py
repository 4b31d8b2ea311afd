"""The browser's front door: ``POST /event/log``, a hardened ingest for public events.

A request is checked as a whole first (method 405, size 413, origin 403, rate 429, content type
415, body shape 400), then each event on its own (unknown 404, not public 403, refused by its
``clean()`` 400). Accepted events go through the same :meth:`Dispatcher.log` as server-side
``log()``, with server-side ``context`` the client cannot set. Every response is JSON of one
shape::

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
from flask import Blueprint, Flask, Response, current_app, request
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


def _core() -> tuple[EventLibState, HttpSettings]:
    """The current app's state and ingest settings: the one place the ingest reaches the core.

    :raises ConfigurationError: when ``EventLib.init_app`` did not set up the app's ingest.
    """
    state = current_app.extensions.get(EXTENSION_KEY)
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
    limit = _core()[1].max_content_length
    request.max_content_length = limit
    environ = request.environ
    chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
    if (chunked or environ.get("CONTENT_LENGTH") is None) and environ.get("wsgi.input_terminated"):
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
    state, settings = _core()
    if len(request.query_string) > settings.max_content_length:
        raise Refused(413, "payload_too_large", f"The query string is longer than {settings.max_content_length} bytes.")
    environ = request.environ  # read directly: Werkzeug's header views cost more than the check
    origin = environ.get("HTTP_ORIGIN")
    referer = environ.get("HTTP_REFERER") if origin is None else None
    if origin is not None or referer is not None:  # else not from a browser, and host_url costs
        check_origin(origin, referer, request.host_url, settings.allowed_origins)
    if settings.limiter is not None:
        # After the origin check, so a foreign page cannot use up a visitor's budget; before the
        # body is read, so the limit also caps the work of reading bodies. request.remote_addr:
        # behind a proxy, wrap the app in ProxyFix (never a raw X-Forwarded-For).
        settings.limiter.check(request.remote_addr or "unknown")
    items, problems = _read_events(settings)
    accepted, refused = _log(state, items)
    problems = sorted([*problems, *refused], key=lambda p: -1 if p.index is None else p.index)
    if accepted:
        status = 202
    else:
        statuses = {problem.status for problem in problems}
        status = statuses.pop() if len(statuses) == 1 else 400
    return _respond(status, accepted, problems, settings.allowed_origins)


@blueprint.get("/schema.json", endpoint="schema")
def event_schema() -> Response:
    """The JSON Schema of the public events' data, as ``flask eventlib schema`` prints it."""
    from flask import jsonify

    from ..jsonschema import json_schema

    return jsonify(json_schema(_core()[0].registry.events()))


blueprint.add_url_rule("/eventlib.js", "script", serve_script, methods=["GET"])


def _read_events(settings: HttpSettings) -> tuple[list[Item], list[Problem]]:
    """Hand the parser what the request's content type needs, read once."""
    mimetype = request.mimetype
    query = request.args if request.query_string else None  # parsing even an empty one costs
    if mimetype in FORM_TYPES:
        # Werkzeug parses the form from the stream: the body is not read as bytes too.
        form = request.form
        return read_events(mimetype, b"", query, form, has_files=bool(request.files), max_batch=settings.max_batch)
    # The body of another type is refused unread: a 415, however large it is.
    body = request.get_data(cache=True) if not mimetype or mimetype in JSON_TYPES else b""
    return read_events(mimetype, body, query, max_batch=settings.max_batch)


def _log(state: EventLibState, items: list[Item]) -> tuple[list[str], list[Problem]]:
    """Log each event through the app's core, public ones only; return the accepted ids and the refusals."""
    context = {
        "received_at": dt.datetime.now(dt.UTC),
        "remote_addr": request.remote_addr,
        "user_agent": request.environ.get("HTTP_USER_AGENT"),
    }
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
            event_id = state.log(item.name, item.data, id=item.id, context=dict(context), public_only=True)
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
    status: int, accepted: list[str], problems: list[Problem], allowed_origins: frozenset[str] | None = None
) -> Response:
    """The one JSON shape; ``allowed_origins`` defaults to the app's (none when it has no ingest set up)."""
    body = orjson.dumps({"accepted": accepted, "errors": [problem.as_json() for problem in problems]})
    # Headers as a list: Werkzeug's header-set helpers (response.vary) cost more than the view.
    headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), ("Vary", "Origin")]
    origin = request.environ.get("HTTP_ORIGIN")
    if origin:
        normalised = normalise_origin(origin)
        if allowed_origins is None:
            allowed_origins = _allowed_origins()
        if normalised is not None and normalised in allowed_origins:
            # Lets a page of an allowed origin read the answer of a CORS-safe fetch (no preflight).
            headers.append(("Access-Control-Allow-Origin", normalised))
            headers.append(("Access-Control-Expose-Headers", "Retry-After"))  # the JS client's backoff reads it
    return current_app.response_class(body, status=status, headers=headers, mimetype="application/json")


def _allowed_origins() -> frozenset[str]:
    try:
        return _core()[1].allowed_origins
    except ConfigurationError:  # the blueprint registered by hand, on an app without the ingest
        return frozenset()
