"""The ingest's front door: ``POST <EVENTLIB_URL_PREFIX>/log`` answered in front of Flask's dispatch.

A WSGI middleware that ``EventLib.init_app`` puts around the app's ``wsgi_app``, as
python-socketio does for its path and ``DispatcherMiddleware`` for a mounted app. A request to the
endpoint's path is answered here, in the app's context (``current_app``, ``g``, the app's
teardown functions), by the same checks and steps as the view (:mod:`.answer`); every other
request goes on to Flask untouched. What the endpoint skips is the part of Flask's request a
beacon of public events has no use for, and which cost more than the ingest itself: the request
context and routing, the app's ``before_request``/``after_request`` hooks and session, and the
response object (in a gunicorn worker the bare 204 view of an app cost about 100 µs of the
app's CPU a request, the ingest's own work about 70).

So an event's ``clean()`` runs without a request context: it reads what the server knows of the
request in the event's ``context`` (``remote_addr``, ``user_agent``, ``received_at``). An app whose
events need ``flask.request`` (the logged-in user, a cookie), or whose hooks must see the endpoint,
sets ``EVENTLIB_HTTP_THROUGH_FLASK = True``, and the blueprint's view answers it instead.

Middleware the app adds after ``EventLib.init_app`` (``ProxyFix``) wraps the door, so the door
sees the address it gives. An app whose ``wsgi_app`` was already wrapped when ``init_app`` ran
keeps the view: the door would see the request before that wrapper, and a proxy's address
instead of the client's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from flask.signals import got_request_exception
from werkzeug.exceptions import InternalServerError
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from ..state import EXTENSION_KEY, EventLibState
from .answer import Answer, Incoming, answer, http_error, limit_body, method_not_allowed, refusal
from .errors import Refused
from .settings import HttpSettings

logger = logging.getLogger("flask_eventlib")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def install(app: Flask, settings: HttpSettings) -> None:
    """Put the front door around ``app.wsgi_app``, unless something wrapped it already (then the
    blueprint's view answers the endpoint, and a warning says why)."""
    if "wsgi_app" in app.__dict__:
        logger.warning(
            "flask-eventlib: app.wsgi_app of the Flask app %r was wrapped (by %r) before EventLib.init_app, so "
            "%s/log is answered through Flask's dispatch, at about twice the cost: wrap it after init_app "
            "(app.wsgi_app = ProxyFix(app.wsgi_app) then sees the endpoint too), or set "
            "EVENTLIB_HTTP_THROUGH_FLASK = True to say so.",
            app.name,
            app.__dict__["wsgi_app"],
            settings.url_prefix,
        )
        return
    app.wsgi_app = FrontDoor(app, app.wsgi_app, settings)  # type: ignore[method-assign]


class FrontDoor:
    """Answers the endpoint's path itself and hands every other request to ``wsgi_app`` (Flask's).

    :param app: the Flask app whose state and context the endpoint uses.
    :param wsgi_app: where every other request goes.
    :param settings: the app's ingest settings (the path: ``PATH_INFO``, below any ``SCRIPT_NAME``).
    """

    def __init__(self, app: Flask, wsgi_app: WSGIApp, settings: HttpSettings) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.settings = settings
        self.path = f"{settings.url_prefix}/log"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path:
            return self.wsgi_app(environ, start_response)
        app = self.app
        method = environ.get("REQUEST_METHOD")
        with app.app_context():
            try:
                result = self._answer(app.extensions[EXTENSION_KEY], environ, method)
            except Exception as exc:
                result = self._failed(exc, environ, method)
        headers = result.headers
        headers.append(("Content-Length", str(len(result.body))))
        # The status line as Werkzeug writes it.
        start_response(f"{result.status} {HTTP_STATUS_CODES.get(result.status, 'UNKNOWN').upper()}", headers)
        return [] if method == "HEAD" else [result.body]

    def _answer(self, state: EventLibState, environ: dict[str, Any], method: Any) -> Answer:
        settings = self.settings
        if method != "POST":
            return method_not_allowed(settings, environ)
        try:
            limit_body(environ, settings.max_content_length)
        except Refused as exc:
            return refusal(exc.problem, exc.retry_after, settings, environ)
        incoming = Incoming(environ, self._request)
        try:
            return answer(state, settings, incoming)
        finally:
            incoming.close()

    def _request(self, environ: dict[str, Any]) -> Request:
        """Flask's request object of the environ, made only when the answer needs it (in the app's
        context, so that it reads the app's ``TRUSTED_HOSTS`` and form limits)."""
        request = self.app.request_class(environ)
        request.max_content_length = self.settings.max_content_length
        return request

    def _failed(self, exc: Exception, environ: dict[str, Any], method: Any) -> Answer:
        """An error no answer was made for (a bug in a ``clean()``), as Flask treats one in a view:
        ``got_request_exception`` is sent (error trackers listen to it), the error propagates
        in testing and debug mode (``PROPAGATE_EXCEPTIONS``), and otherwise it is logged with its
        traceback and answered with the JSON 500."""
        app = self.app
        got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)
        propagate = app.config["PROPAGATE_EXCEPTIONS"]
        if propagate is None:
            propagate = app.testing or app.debug
        if propagate:
            raise exc
        hint = ""
        if isinstance(exc, RuntimeError) and "request context" in str(exc):
            hint = (
                " (the endpoint is answered in front of Flask's dispatch, without a request context: set "
                "EVENTLIB_HTTP_THROUGH_FLASK = True for the events' clean() to use flask.request)"
            )
        app.logger.error("Exception on %s [%s]%s", environ.get("PATH_INFO"), method, hint, exc_info=exc)
        return http_error(InternalServerError(), self.settings, environ)  # the view's 500, as Flask makes it
