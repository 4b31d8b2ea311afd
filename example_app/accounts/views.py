"""Views of the ``accounts`` blueprint."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

import flask_eventlib

bp = Blueprint("accounts", __name__)


@bp.get("/signup")
def signup_form() -> str:
    """The sign-up form."""
    return render_template("signup.html", email="", error=None)


@bp.post("/signup")
def signup() -> Response | tuple[str, int]:
    """Log ``accounts.SignedUp``, or show the form again with the event's validation error."""
    email = request.form.get("email", "")
    try:
        event_id = flask_eventlib.log("accounts.SignedUp", {"email": email})
    except flask_eventlib.ValidationError as exc:
        return render_template("signup.html", email=email, error=exc), 400
    response = redirect(url_for("site.dashboard"), code=303)
    response.headers["X-Event-Id"] = event_id
    return response
