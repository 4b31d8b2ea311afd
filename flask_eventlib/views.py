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
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.datastructures import ImmutableMultiDict, MultiDict
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import config
from .exceptions import ConfigurationError, EventNotFound, ValidationError
from .extension import get_dispatcher
from .script import SCRIPT_PATH as SCRIPT_PATH
from .script import eventlib_script, serve_script

logger = logging.getLogger("flask_eventlib")

#: The extension's blueprint; its endpoint is ``eventlib.log``. Pass it to ``csrf.exempt()`` or
#: to your own Flask-Limiter's ``limiter.exempt()``.
blueprint = Blueprint("eventlib", __name__)

#: Where :func:`init_http` keeps an app's ingest settings.
HTTP_EXTENSION_KEY = "eventlib_http"
#: The deepest nesting of objects and arrays accepted in a JSON body.
MAX_DEPTH = 32
#: Parameters of the query-string and form bodies that are not data.
EVENT_PARAM = "__event__"
ID_PARAM = "__id__"

_ENDPOINT = "eventlib.log"
_JSON_TYPES = frozenset({"application/json", "text/plain"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_EVENT_KEYS = frozenset({"event", "data", "id"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
}
_SHAPE_HINT = 'Send {"event": "app.EventName", "data": {...}} or {"events": [...]}.'


@dataclass(frozen=True)
class HttpSettings:
    """An app's ingest settings, read once by :func:`init_http`."""

    max_batch: int
    max_content_length: int
    #: Normalised origins (``scheme://host[:port]``) allowed besides the app's own.
    allowed_origins: frozenset[str]
    #: The rate limit of this endpoint; ``None`` when unlimited.
    limiter: RateLimit | None


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


class Refused(HTTPException):
    """A refusal of the whole request; the blueprint's error handler renders it as JSON."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(description=message)
        self.code = status
        self.problem = Problem(status, code, message)
        #: Seconds a client should wait before trying again (sent as ``Retry-After``).
        self.retry_after = retry_after


class RateLimit:
    """Fixed-window counters per client address, kept by the ``limits`` library (Flask-Limiter's
    engine) in memory or in a shared storage such as Redis.

    Used directly rather than through Flask-Limiter, whose hooks run on every request of the app
    (about 20 us each, and 100 us on this endpoint): this checks the endpoint's requests alone.
    If the storage fails, counting falls back to this process's memory for a minute at a time.

    :param rate: e.g. ``"120/minute"`` or ``"10/second;500/hour"``.
    :param storage_url: ``memory://`` or e.g. ``redis://host:6379/0``.
    """

    _NAMESPACE = "flask-eventlib"
    _RETRY_STORAGE_AFTER = 60.0

    def __init__(self, rate: str, storage_url: str) -> None:
        self.rate = rate
        self.items: list[RateLimitItem] = parse_many(rate)
        self.storage = cast(Storage, storage_from_string(storage_url))
        self._limiter = FixedWindowRateLimiter(self.storage)
        self._fallback = FixedWindowRateLimiter(MemoryStorage())
        self._storage_down_until = 0.0

    def hit(self, client: str) -> int | None:
        """Count a request of ``client``; ``None`` if allowed, else the seconds until it may retry."""
        if time.monotonic() >= self._storage_down_until:
            try:
                return self._hit(self._limiter, client)
            except Exception as exc:
                logger.warning("The rate limit's storage failed (%s); counting in memory for a minute", exc)
                self._storage_down_until = time.monotonic() + self._RETRY_STORAGE_AFTER
        return self._hit(self._fallback, client)

    def _hit(self, limiter: FixedWindowRateLimiter, client: str) -> int | None:
        for item in self.items:
            if not limiter.hit(item, self._NAMESPACE, client):
                reset_at, _ = limiter.get_window_stats(item, self._NAMESPACE, client)
                return max(1, math.ceil(reset_at - time.time()))
        return None


@dataclass
class _Item:
    """One event as the client sent it, shape-checked but not yet looked up."""

    index: int
    name: str
    data: dict[str, Any]
    id: str | None


# -- set-up ---------------------------------------------------------------------------------------


def init_http(app: Flask) -> None:
    """Register the blueprint on ``app`` and set up its rate limit; called by ``EventLib.init_app``.

    :raises ConfigurationError: for an invalid prefix, origin, limit or storage URL.
    """
    conf = app.config
    prefix = conf[config.URL_PREFIX] or ""
    if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
        raise ConfigurationError(f"{config.URL_PREFIX} must be a path starting with '/', e.g. '/event', not {prefix!r}")
    origins = conf[config.ALLOWED_ORIGINS] or []
    if not isinstance(origins, list | tuple | set | frozenset) or not all(isinstance(o, str) for o in origins):
        raise ConfigurationError(
            f"{config.ALLOWED_ORIGINS} must be a list of origins, e.g. ['https://www.example.com'], not {origins!r}"
        )
    allowed = set()
    for origin in origins:
        normalised = _normalise_origin(origin, strict=True)
        if normalised is None:
            raise ConfigurationError(
                f"{origin!r} in {config.ALLOWED_ORIGINS} is not an origin: write scheme://host[:port] "
                "with no path and no wildcard, e.g. 'https://www.example.com' (list each origin)"
            )
        allowed.add(normalised)
    app.extensions[HTTP_EXTENSION_KEY] = HttpSettings(
        max_batch=_positive(conf, config.MAX_BATCH),
        max_content_length=_positive(conf, config.MAX_CONTENT_LENGTH),
        allowed_origins=frozenset(allowed),
        limiter=_create_limiter(app),
    )
    app.register_blueprint(blueprint, url_prefix=prefix)
    app.add_template_global(eventlib_script)


def _positive(conf: Any, key: str) -> int:
    value = conf[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be a positive integer, not {value!r}")
    return value


def _create_limiter(app: Flask) -> RateLimit | None:
    """The endpoint's rate limit, or ``None`` when ``EVENTLIB_RATE_LIMIT`` is off."""
    rate = app.config[config.RATE_LIMIT]
    if not rate:
        return None
    url = app.config[config.RATE_LIMIT_STORAGE_URL] or "memory://"
    try:
        parse_many(rate)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{config.RATE_LIMIT}={rate!r} is not a rate limit: write e.g. '120/minute' or '10/second;500/hour', "
            "or None for no limit."
        ) from exc
    try:
        return RateLimit(rate, url)
    except (LimitsConfigurationError, ValueError) as exc:
        raise ConfigurationError(
            f"{config.RATE_LIMIT_STORAGE_URL}={url!r} cannot hold the rate limit: {exc}. Use 'memory://' "
            "or 'redis://host:6379/0'."
        ) from exc


# -- request hooks --------------------------------------------------------------------------------


@blueprint.url_value_preprocessor
def _limit_body_size(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # URL value preprocessors run before every before_request hook, so no hook of the app can
    # read an unlimited body of this endpoint first.
    request.max_content_length = _settings().max_content_length


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


# -- the view -------------------------------------------------------------------------------------


@blueprint.route("/log", endpoint="log", methods=["POST"], provide_automatic_options=False)
def log_event() -> Response:
    """Log the events of a browser's request; see the module docstring for the response."""
    settings = _settings()
    if len(request.query_string) > settings.max_content_length:
        raise Refused(413, "payload_too_large", f"The query string is longer than {settings.max_content_length} bytes.")
    _check_origin(settings)
    if settings.limiter is not None:
        # After the origin check, so a foreign page cannot use up a visitor's budget; before the
        # body is read, so the limit also caps the work of reading bodies. request.remote_addr:
        # behind a proxy, wrap the app in ProxyFix (never a raw X-Forwarded-For).
        retry_after = settings.limiter.hit(request.remote_addr or "unknown")
        if retry_after is not None:
            raise Refused(
                429,
                "rate_limited",
                f"Too many requests from this client (at most {settings.limiter.rate}); "
                "retry after Retry-After seconds.",
                retry_after=retry_after,
            )
    items, problems = _read_events(settings)
    accepted, refused = _log(items)
    problems = sorted([*problems, *refused], key=lambda p: -1 if p.index is None else p.index)
    if accepted:
        status = 202
    else:
        statuses = {problem.status for problem in problems}
        status = statuses.pop() if len(statuses) == 1 else 400
    return _respond(status, accepted, problems)


def _settings() -> HttpSettings:
    try:
        return current_app.extensions[HTTP_EXTENSION_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise ConfigurationError(
            "The eventlib blueprint is registered by EventLib.init_app() (EVENTLIB_HTTP_ENABLED), "
            "not by hand; set EVENTLIB_URL_PREFIX to move it."
        ) from None


def _check_origin(settings: HttpSettings) -> None:
    """Refuse a browser request from a foreign page (CSRF); requests without both headers pass."""
    environ = request.environ  # read directly: Werkzeug's header views cost more than the check
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None:
        source, candidate = "Origin", _normalise_origin(origin)
    else:
        referer = environ.get("HTTP_REFERER")
        if referer is None:
            return  # not sent by a browser (curl, another server): nothing to forge
        source, candidate = "Referer", _normalise_origin(referer)
    if candidate is not None and (candidate == _own_origin() or candidate in settings.allowed_origins):
        return
    raise Refused(
        403,
        "origin_refused",
        f"The request's {source} is neither this site nor one of {config.ALLOWED_ORIGINS}.",
    )


def _own_origin() -> str | None:
    return _normalise_origin(request.host_url)


def _normalise_origin(value: str, *, strict: bool = False) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; ``None`` if not an origin.

    :param strict: refuse a path, query or credentials (for configured origins; a ``Referer``
        has a path).
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    scheme = parts.scheme.lower()
    if not scheme or not host:
        return None
    if strict and (parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc or "*" in host):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@blueprint.get("/schema.json", endpoint="schema")
def event_schema() -> Response:
    """The JSON Schema of the public events' data, as ``flask eventlib schema`` prints it."""
    from flask import jsonify

    from .schemas import json_schema

    return jsonify(json_schema(get_dispatcher().registry.events()))


blueprint.add_url_rule("/eventlib.js", "script", serve_script, methods=["GET"])


# -- reading the body -----------------------------------------------------------------------------


_NO_PARAMS: MultiDict[str, str] = ImmutableMultiDict()


def _read_events(settings: HttpSettings) -> tuple[list[_Item], list[Problem]]:
    """The events of the request, and the refusals of events whose shape is wrong.

    :raises Refused: when the request as a whole cannot be read.
    """
    mimetype = request.mimetype
    query = request.args if request.query_string else _NO_PARAMS
    if mimetype in _JSON_TYPES:
        body = request.get_data(cache=True)
        if body and query:
            raise Refused(400, "invalid_request", "Send the event in the query string or in the body, not both.")
        if body:
            return _from_json(body, settings)
        return _from_params(query)
    if mimetype in _FORM_TYPES:
        form, files = request.form, request.files
        if files:
            raise Refused(400, "invalid_request", "Files are not accepted; send the event's data as fields.")
        if form and query:
            raise Refused(400, "invalid_request", "Send the event in the query string or in the body, not both.")
        return _from_params(form or query)
    if mimetype:
        raise Refused(
            415,
            "unsupported_media_type",
            "Send application/json, text/plain (holding JSON), application/x-www-form-urlencoded or "
            "multipart/form-data.",
        )
    if request.get_data(cache=True):
        raise Refused(415, "unsupported_media_type", "A body needs a Content-Type, e.g. application/json.")
    return _from_params(query)


def _from_params(params: MultiDict[str, str]) -> tuple[list[_Item], list[Problem]]:
    """The spec's form: ``__event__`` names the event, every other parameter is data (a string)."""
    if not params:
        raise Refused(
            400, "invalid_request", f"No event: name it with {EVENT_PARAM} in the query string, or send JSON."
        )
    for key, values in params.lists():
        if len(values) > 1:
            raise Refused(400, "invalid_request", f"The parameter {_clip(key)!r} is repeated; send it once.")
    name = params.get(EVENT_PARAM)
    if not name:
        raise Refused(400, "invalid_request", f"The event name is missing: send it as {EVENT_PARAM}.")
    data = {key: value for key, value in params.items() if key not in (EVENT_PARAM, ID_PARAM)}
    item = _item(0, name, data, params.get(ID_PARAM))
    return ([item], []) if isinstance(item, _Item) else ([], [item])


def _from_json(body: bytes, settings: HttpSettings) -> tuple[list[_Item], list[Problem]]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, "invalid_json", f"The body is not valid JSON (UTF-8): {exc}") from None
    # Counting brackets is C-fast; only a body with enough of them can nest too deeply.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(document):
        raise Refused(400, "invalid_json", f"The body nests objects and arrays deeper than {MAX_DEPTH} levels.")
    if not isinstance(document, dict):
        raise Refused(400, "invalid_request", f"The body must be a JSON object. {_SHAPE_HINT}")
    if "events" not in document:
        item = _event_from_json(0, document)
        return ([item], []) if isinstance(item, _Item) else ([], [item])
    if set(document) != {"events"}:
        raise Refused(400, "invalid_request", f"A batch has only the key 'events'. {_SHAPE_HINT}")
    events = document["events"]
    if not isinstance(events, list) or not events:
        raise Refused(400, "invalid_request", "'events' must be a non-empty array of events.")
    if len(events) > settings.max_batch:
        raise Refused(
            413,
            "too_many_events",
            f"The batch holds {len(events)} events; send at most {settings.max_batch} ({config.MAX_BATCH}).",
        )
    items: list[_Item] = []
    problems: list[Problem] = []
    for index, entry in enumerate(events):
        found = _event_from_json(index, entry)
        if isinstance(found, _Item):
            items.append(found)
        else:
            problems.append(found)
    return items, problems


def _event_from_json(index: int, entry: Any) -> _Item | Problem:
    if not isinstance(entry, dict):
        return Problem(400, "invalid_event", f"An event must be a JSON object. {_SHAPE_HINT}", index=index)
    name = entry.get("event")
    event = _clip(name) if isinstance(name, str) else None
    unexpected = sorted(set(entry) - _EVENT_KEYS)
    if unexpected:
        keys = ", ".join(repr(_clip(key)) for key in unexpected[:5])
        return Problem(
            400, "invalid_event", f"Unexpected keys {keys}; an event has only event, data and id.", index, event
        )
    if not isinstance(name, str) or not name:
        return Problem(400, "invalid_event", "The event name is missing or not a string: send 'event'.", index)
    data = entry.get("data", {})
    if not isinstance(data, dict):
        return Problem(400, "invalid_event", "The event's 'data' must be a JSON object.", index, event)
    return _item(index, name, data, entry.get("id", None))


def _item(index: int, name: str, data: dict[str, Any], event_id: Any) -> _Item | Problem:
    if event_id is None:
        return _Item(index, name, data, None)
    if not isinstance(event_id, str) or not _UUID.fullmatch(event_id):
        shown = _clip(event_id) if isinstance(event_id, str) else None
        return Problem(
            400,
            "invalid_id",
            "An event id must be a UUID like 2f1c0f6e-8b1a-4c5e-9f0a-3d2b1c4e5f6a.",
            index,
            name,
            shown,
        )
    return _Item(index, name, data, event_id.lower())


def _too_deep(document: Any) -> bool:
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth >= MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# -- logging the events ---------------------------------------------------------------------------


def _log(items: list[_Item]) -> tuple[list[str], list[Problem]]:
    """Log each public event through the dispatcher; return the accepted ids and the refusals."""
    dispatcher = get_dispatcher()
    context = {
        "received_at": dt.datetime.now(dt.UTC),
        "remote_addr": request.remote_addr,
        "user_agent": request.environ.get("HTTP_USER_AGENT"),
    }
    accepted: list[str] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for item in items:
        event = _clip(item.name)
        if item.id is not None and item.id in seen:
            problems.append(
                Problem(400, "invalid_id", "Two events of the batch have this id.", item.index, event, item.id)
            )
            continue
        try:
            cls = dispatcher.registry.find(item.name)
            if getattr(cls, "public", False) is not True:
                problems.append(
                    Problem(
                        403,
                        "private_event",
                        f"The event {event} is not public: browsers may only log events whose class sets "
                        "public = True.",
                        item.index,
                        event,
                        item.id,
                    )
                )
                continue
            event_id = dispatcher.log(item.name, item.data, id=item.id, context=dict(context))
        except EventNotFound as exc:
            problems.append(Problem(404, "unknown_event", _clip(str(exc)), item.index, event, item.id))
            continue
        except ValidationError as exc:
            message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else f"The data of {event} is invalid."
            problems.append(
                Problem(400, "validation_error", _clip(message), item.index, event, item.id, _jsonable(exc.messages))
            )
            continue
        if item.id is not None:
            seen.add(item.id)
        accepted.append(event_id)
    return accepted, problems


# -- responses ------------------------------------------------------------------------------------


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    """Every HTTP error of the endpoint (ours, Werkzeug's 413, an app limiter's 429) in the one shape."""
    if isinstance(exc, Refused):
        problem = exc.problem
    else:
        status = exc.code or 500
        problem = Problem(status, _CODES.get(status, "http_error"), _http_message(exc, status))
    response = _respond(problem.status, [], [problem])
    if problem.status == 429:
        response.headers["Retry-After"] = str(_retry_after(exc))
    return response


def _retry_after(exc: HTTPException) -> int:
    """Seconds until the client may try again (a minute when the refusal does not say)."""
    retry_after = getattr(exc, "retry_after", None)
    return retry_after if isinstance(retry_after, int) else 60


def _http_message(exc: HTTPException, status: int) -> str:
    if status == 413:
        return f"The request body is larger than {_settings().max_content_length} bytes."
    if status == 429:
        return f"Too many requests from this client ({exc.description}); retry after Retry-After seconds."
    if status >= 500:
        return "The server failed to log the events; the error is in its log."
    return str(exc.description or exc.name)


def _respond(status: int, accepted: list[str], problems: list[Problem]) -> Response:
    body = orjson.dumps({"accepted": accepted, "errors": [problem.as_json() for problem in problems]})
    # Headers as a list: Werkzeug's header-set helpers (response.vary) cost more than the view.
    headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), ("Vary", "Origin")]
    origin = request.environ.get("HTTP_ORIGIN")
    if origin:
        normalised = _normalise_origin(origin)
        settings = current_app.extensions.get(HTTP_EXTENSION_KEY)
        if normalised is not None and settings is not None and normalised in settings.allowed_origins:
            # Lets a page of an allowed origin read the answer of a CORS-safe fetch (no preflight).
            headers.append(("Access-Control-Allow-Origin", normalised))
            headers.append(("Access-Control-Expose-Headers", "Retry-After"))  # the JS client's backoff reads it
    return current_app.response_class(body, status=status, headers=headers, mimetype="application/json")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _jsonable(value: Any) -> Any:
    """Validation messages as JSON: string keys, and ``str()`` for what JSON cannot hold."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
