"""The ingest through Flask: the blueprint of ``POST /event/log`` (and of the JS client and the
events' JSON Schema), and the view that answers the endpoint when it goes through Flask's dispatch
(``EVENTLIB_HTTP_THROUGH_FLASK``, or an app whose ``wsgi_app`` was wrapped before
``EventLib.init_app``); otherwise the front door (:mod:`.door`) answers it before Flask sees it.
What is answered, and how, is :mod:`.answer`'s; every response is JSON of one shape::

    {"accepted": ["<event id>", ...],
     "errors": [{"status": 400, "code": "validation_error", "message": "...",
                 "index": 0, "event": "app.EventName", "id": null, "details": {...}}]}

In a batch each event gets its own result: valid events are logged even when a neighbour is
refused. The status is 202 when at least one event was accepted; otherwise the status the refusals
share (400 when they differ).

With :mod:`.door`, the only modules of :mod:`flask_eventlib.ingest` that import Flask: the body is
parsed by :mod:`.parser`, the origin and the rate are checked by :mod:`.guards`, and the library's
core is reached through :func:`_core` alone.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..exceptions import ConfigurationError
from ..script import eventlib_script, serve_script
from ..state import EXTENSION_KEY, EventLibState
from .answer import Answer, Incoming, answer, http_error, limit_body, method_not_allowed, refusal
from .errors import Refused
from .settings import HttpSettings

#: The extension's blueprint; its endpoint is ``eventlib.log``. Pass it to ``csrf.exempt()`` or
#: to your own Flask-Limiter's ``limiter.exempt()`` when the endpoint goes through Flask.
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
    """Register the blueprint on ``app`` where ``settings`` say, and the front door in front of
    Flask's dispatch unless ``settings.through_flask``; called by ``EventLib.init_app`` once the
    app's state (which holds ``settings``) is in place."""
    app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
    app.add_template_global(eventlib_script)
    if not settings.through_flask:
        from .door import install

        install(app, settings)


@blueprint.url_value_preprocessor
def _limit_body_size(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # URL value preprocessors run before every before_request hook, so no hook of the app can
    # read an unlimited body of this endpoint first.
    req = request._get_current_object()  # type: ignore[attr-defined]  # one look through the proxy
    limit = _core(current_app._get_current_object())[1].max_content_length  # type: ignore[attr-defined]
    req.max_content_length = limit
    limit_body(req.environ, limit)


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
    return _response(method_not_allowed(_settings(), request.environ))


# -- the views ------------------------------------------------------------------------------------


@blueprint.route("/log", endpoint="log", methods=["POST"], provide_automatic_options=False)
def log_event() -> Response:
    """Log the events of a browser's request; see :mod:`.answer`."""
    # The request and the app looked up once: each look through Flask's proxies costs about half
    # a microsecond.
    req = request._get_current_object()  # type: ignore[attr-defined]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state, settings = _core(app)
    return _response(answer(state, settings, Incoming(req.environ, request=req)), app.response_class)


@blueprint.get("/schema.json", endpoint="schema")
def event_schema() -> Response:
    """The JSON Schema of the public events' data, as ``flask eventlib schema`` prints it."""
    from flask import jsonify

    from ..jsonschema import json_schema

    return jsonify(json_schema(_core()[0].registry.events()))


blueprint.add_url_rule("/eventlib.js", "script", serve_script, methods=["GET"])


# -- responses ------------------------------------------------------------------------------------


@blueprint.errorhandler(Refused)
def _refused(exc: Refused) -> Response:
    """A refusal of the whole request by a hook of the endpoint (the body's size)."""
    return _response(refusal(exc.problem, exc.retry_after, _settings(), request.environ))


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    """Every HTTP error of the endpoint (Werkzeug's 413, an app limiter's 429) in the one shape."""
    return _response(http_error(exc, _settings(), request.environ))


def _response(result: Answer, response_class: type[Response] | None = None) -> Response:
    """The Flask response of an answer (``response_class`` defaults to the current app's)."""
    if response_class is None:
        response_class = current_app.response_class
    return response_class(result.body, status=result.status, headers=_checked(result.headers))


def _checked(pairs: list[tuple[str, str]]) -> Headers:
    """``Headers`` holding ``pairs`` as they are: each one a constant or an origin already
    normalised, so there is nothing for Werkzeug to check. A ``Headers`` keeps its pairs in
    ``_list``; the tests check every answer's headers, so a Werkzeug that changes it fails them."""
    headers = Headers()
    headers._list = pairs
    return headers


def _settings() -> HttpSettings | None:
    """The current app's ingest settings; ``None`` when it has no ingest set up (the blueprint
    registered by hand)."""
    try:
        return _core()[1]
    except ConfigurationError:
        return None
