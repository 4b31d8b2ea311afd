"""Who may use the console, and its forms' CSRF token: checked before each of its requests."""

from __future__ import annotations

import hmac
import secrets
from typing import Any, NoReturn

from flask import Flask, abort, current_app, render_template, request, session
from werkzeug.wrappers import Response

from .. import config
from ..exceptions import ConfigurationError

#: The session key of the console's CSRF token.
SESSION_KEY = "_eventlib_console_csrf"
#: The form field that must carry it in every POST (named apart from Flask-WTF's ``csrf_token``).
FIELD = "eventlib_csrf"
#: The header that may carry it instead, for scripts.
HEADER = "X-Eventlib-CSRF"


def check_setup(app: Flask) -> None:
    """Refuse a console that anyone could open, or whose forms could not be protected.

    :raises ConfigurationError: outside debug and testing without ``EVENTLIB_CONSOLE_ACCESS``;
        without ``SECRET_KEY`` (the CSRF token lives in the session).
    """
    if app.config[config.CONSOLE_ACCESS] is None and not (app.debug or app.testing):
        raise ConfigurationError(
            f"{config.CONSOLE} is on in the Flask app {app.name!r}, which runs neither in debug nor in "
            f"testing, and nothing says who may open the console: set {config.CONSOLE_ACCESS} to a function "
            "that returns True for the people allowed, e.g. with Flask-Login "
            "EventLib(app, console_access=lambda: current_user.is_authenticated and current_user.is_admin), "
            f"or turn {config.CONSOLE} off."
        )
    if not app.secret_key:
        raise ConfigurationError(
            f"{config.CONSOLE} is on in the Flask app {app.name!r}, which has no SECRET_KEY: the console's "
            "forms carry a CSRF token kept in the session, which needs one. Set app.config['SECRET_KEY'] "
            "(a long random string, e.g. from secrets.token_hex()) before init_app."
        )


def check_access() -> Response | None:
    """Before each console request: let it in, refuse it (403), or answer what the check said."""
    app = current_app
    access = app.config[config.CONSOLE_ACCESS]
    if access is None:
        if app.debug or app.testing:
            return None
        return refuse(403, f"The console has no access check: set {config.CONSOLE_ACCESS}.")
    allowed: Any = access()
    if isinstance(allowed, Response):
        return allowed  # a redirect to the login page, say
    if not allowed:
        return refuse(403, "You may not use the flask-eventlib console.")
    return None


def csrf_token() -> str:
    """This session's token, made on first use."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = session[SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> Response | None:
    """Before each console POST: 400 without a token, 403 with one that is not the session's."""
    if request.method != "POST":
        return None
    sent = request.form.get(FIELD) or request.headers.get(HEADER)
    if not sent:
        return refuse(400, "This form carries no CSRF token: reload the console's page and try again.")
    expected = session.get(SESSION_KEY)
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        return refuse(403, "This form's CSRF token is not this session's: reload the console's page and try again.")
    return None


def refuse(status: int, message: str) -> Response:
    """A small page that says why, with ``status``."""
    return current_app.make_response((render_template("eventlib_console/refused.html", message=message), status))


def not_found(message: str) -> NoReturn:
    """Abort with a 404 page that says what was not found."""
    abort(refuse(404, message))
