"""The front door: ``POST /event/log`` answered in front of Flask's dispatch, and what that means.

``tests/test_http.py`` runs every check of the endpoint both ways in (the door and the view);
these are the differences, each shown against the view where it has one.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask, abort, g
from flask.signals import got_request_exception
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_eventlib import EventLib
from flask_eventlib.ingest.door import FrontDoor
from tests.conftest import AppFactory, Records
from tests.sample import create_app
from tests.test_http import accepted, body, refused

FREE = {"free": "tests.sample.web.free"}


def guarded(app: Flask) -> list[str]:
    """Give ``app`` a before_request hook that refuses every request, and an after_request hook
    that records the paths it saw; return that record."""
    seen: list[str] = []

    @app.before_request
    def login_required() -> None:
        abort(401)

    @app.after_request
    def saw(response: Any) -> Any:
        from flask import request

        seen.append(request.path)
        return response

    return seen


def test_the_door_answers_before_the_apps_request_hooks(make_door_app: AppFactory, records: Records) -> None:
    app = make_door_app()
    seen = guarded(app)
    assert isinstance(app.wsgi_app, FrontDoor)
    client = app.test_client()
    accepted(client.post("/event/log?__event__=web.PageView&page=/"), records)
    assert client.get("/web/").status_code == 401  # the rest of the app still goes through them
    assert seen == ["/web/"]


def test_the_view_answers_after_them(make_view_app: AppFactory, records: Records) -> None:
    app = make_view_app()
    seen = guarded(app)
    assert not isinstance(app.wsgi_app, FrontDoor)
    assert app.test_client().post("/event/log?__event__=web.PageView").status_code == 401
    assert records.all() == []
    assert seen == ["/event/log"]


def test_csrfprotect_needs_no_exemption_at_the_door(make_door_app: AppFactory, records: Records) -> None:
    app = make_door_app(SECRET_KEY="test")
    CSRFProtect(app)
    app.add_url_rule("/form", "form", lambda: "ok", methods=["POST"])
    client = app.test_client()
    # The door's own origin check still refuses a foreign page, and the rest of the app is protected.
    foreign = client.post("/event/log?__event__=web.PageView", headers={"Origin": "https://evil.example"})
    refused(foreign, 403, "origin_refused", records)
    accepted(client.post("/event/log?__event__=web.PageView", headers={"Origin": "http://localhost"}), records)
    assert client.post("/form").status_code == 400
    assert len(records.all()) == 1


def test_clean_runs_in_the_apps_context_at_the_door(make_door_app: AppFactory, records: Records) -> None:
    app = make_door_app(EVENTLIB_EVENT_MODULES=FREE, SAMPLE_TAG="from-config")
    torn_down: list[Any] = []
    app.teardown_appcontext(lambda error: torn_down.append(g.get("marker", "no g")))
    (event_id,) = accepted(app.test_client().post("/event/log", json={"event": "free.FromApp"}), records)
    assert records.for_id(event_id)[0]["data"] == {"tag": "'from-config'"}
    assert torn_down  # the app's context was pushed and popped around the request


def test_clean_reading_the_request_works_through_the_view(make_view_app: AppFactory, records: Records) -> None:
    app = make_view_app(EVENTLIB_EVENT_MODULES=FREE)
    response = app.test_client().post("/event/log", json={"event": "free.FromRequest"}, headers={"X-Tag": "seen"})
    (event_id,) = accepted(response, records)
    assert records.for_id(event_id)[0]["data"] == {"tag": "'seen'"}


def test_clean_reading_the_request_at_the_door_fails_with_a_log_naming_the_fix(
    make_door_app: AppFactory, records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_door_app(EVENTLIB_EVENT_MODULES=FREE)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/event/log", json={"event": "free.FromRequest"})
    document = body(response)
    assert response.status_code == 500
    assert document["errors"][0]["code"] == "internal_error"
    assert records.all() == []
    (logged,) = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert "Exception on /event/log [POST]" in logged.getMessage()
    assert "EVENTLIB_HTTP_THROUGH_FLASK = True" in logged.getMessage()
    assert logged.exc_info is not None and "request context" in str(logged.exc_info[1])


def test_an_error_at_the_door_is_signalled_and_propagates_in_testing_mode(
    make_door_app: AppFactory, records: Records
) -> None:
    signalled: list[BaseException] = []

    def receive(sender: Flask, exception: BaseException, **extra: Any) -> None:
        signalled.append(exception)

    app = make_door_app(EVENTLIB_EVENT_MODULES=FREE)
    with got_request_exception.connected_to(receive, sender=app):
        assert app.test_client().post("/event/log", json={"event": "free.Broken"}).status_code == 500
        app.testing = True
        with pytest.raises(RuntimeError, match="clean\\(\\) of free.Broken has a bug"):
            app.test_client().post("/event/log", json={"event": "free.Broken"})
    assert [str(error) for error in signalled] == ["clean() of free.Broken has a bug"] * 2
    assert records.all() == []


def test_other_paths_go_on_to_flask(make_door_app: AppFactory, records: Records) -> None:
    app = make_door_app()
    client = app.test_client()
    assert client.post("/event/log/?__event__=web.PageView").status_code == 404
    assert client.post("/event/logs?__event__=web.PageView").status_code == 404
    assert client.get("/event/eventlib.js").status_code == 200
    assert client.get("/event/schema.json").status_code == 200
    assert records.all() == []


def test_the_door_follows_the_prefix(make_door_app: AppFactory, records: Records) -> None:
    app = make_door_app(EVENTLIB_URL_PREFIX="/api/beacon")
    client = app.test_client()
    accepted(client.post("/api/beacon/log?__event__=web.PageView"), records)
    assert client.post("/event/log?__event__=web.PageView").status_code == 404


def test_a_head_request_gets_the_405_without_a_body(make_door_app: AppFactory, records: Records) -> None:
    response = make_door_app().test_client().head("/event/log")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.data == b""
    assert int(response.headers["Content-Length"]) > 0  # the length a GET's body would have


def test_a_wsgi_app_wrapped_before_init_app_keeps_the_view_and_its_proxy(
    records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    # An app factory that wraps the app in ProxyFix before the extension: the door would see the
    # proxy's address, so the view answers, behind the proxy, and a warning says how to get the door.
    app = create_app(SAMPLE_RECORD_KEY=records.key, EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://")
    plain = Flask("wrapped-first")
    plain.wsgi_app = ProxyFix(plain.wsgi_app, x_for=1)  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
        EventLib(plain, always_eager=True, broker_url="memory://", rate_limit="1/minute")
    assert isinstance(plain.wsgi_app, ProxyFix)
    assert any("wrapped" in r.getMessage() and "EVENTLIB_HTTP_THROUGH_FLASK" in r.getMessage() for r in caplog.records)
    client = plain.test_client()
    # Unknown event (the app has none), but the rate limit keys on the address ProxyFix gives.
    first = client.post("/event/log?__event__=x.Y", headers={"X-Forwarded-For": "203.0.113.1"})
    assert first.status_code == 404
    assert client.post("/event/log?__event__=x.Y", headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 429
    assert client.post("/event/log?__event__=x.Y", headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 404
    assert isinstance(app.wsgi_app, FrontDoor)  # the sample app, wrapped by nothing, has the door
