"""POST /event/log: the browser's ingest. Every status, its JSON, and whether a handler ran.

Rejections are checked in eager mode: handlers run inside the request, so an empty record list
right after the response means no handler ran. The spec's example also runs through a real worker.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import random
import threading
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import TestResponse

from flask_eventlib import ConfigurationError, EventLib, log
from flask_eventlib.ingest import blueprint
from flask_eventlib.publishers import Capture
from tests.conftest import REDIS_URL, AppFactory, Records, Worker, app_factory
from tests.faults import silent_server

ERROR_KEYS = {"status", "code", "message", "index", "event", "id", "details"}


@pytest.fixture(params=["door", "view"])
def make_app(records: Records, request: pytest.FixtureRequest) -> AppFactory:
    """The sample app in eager mode, with extra settings; each test runs with both ways in: the
    front door (the default) and the view (``EVENTLIB_HTTP_THROUGH_FLASK``)."""
    return app_factory(records, through_flask=request.param == "view")


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app().test_client()


def body(response: TestResponse) -> dict[str, Any]:
    """The response's JSON, checked against the one shape every answer has."""
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers.get_all("Vary") == ["Origin"]
    assert response.headers["Content-Length"] == str(len(response.data))
    document = response.get_json()
    assert set(document) == {"accepted", "errors"}
    assert all(isinstance(event_id, str) for event_id in document["accepted"])
    assert all(set(error) == ERROR_KEYS for error in document["errors"])
    return document  # type: ignore[no-any-return]


def refused(response: TestResponse, status: int, code: str, records: Records) -> dict[str, Any]:
    """Assert a refusal: its status, its first error's code, nothing accepted, no handler run."""
    document = body(response)
    assert response.status_code == status, document
    assert document["accepted"] == []
    assert document["errors"][0]["status"] == status
    assert document["errors"][0]["code"] == code
    assert records.all() == []
    return document


def accepted(response: TestResponse, records: Records, count: int = 1) -> list[str]:
    """Assert a 202 and that each accepted event's handler ran; return the ids."""
    document = body(response)
    assert response.status_code == 202, document
    ids = document["accepted"]
    assert len(ids) == count
    for event_id in ids:
        assert uuid.UUID(event_id)
        assert records.handlers_for(event_id), f"no handler ran for {event_id}"
    return ids  # type: ignore[no-any-return]


# -- accepted requests ----------------------------------------------------------------------------


def test_the_specs_query_string_example(client: FlaskClient, records: Records) -> None:
    response = client.post(
        "/event/log?__event__=web.PageView&param1=val1&param2=val2", headers={"User-Agent": "Browser/1.0"}
    )
    (event_id,) = accepted(response, records)
    (entry,) = records.for_id(event_id)
    assert entry["handler"] == "PageView.store" and entry["name"] == "web.PageView"
    assert entry["data"] == {"param1": "'val1'", "param2": "'val2'"}
    assert entry["context"]["remote_addr"] == "'127.0.0.1'"
    assert entry["context"]["user_agent"] == "'Browser/1.0'"
    assert "tzinfo=datetime.timezone.utc" in entry["context"]["received_at"]


BEACON = json.dumps({"event": "web.Search", "data": {"query": "shoes", "page": 2}})


@pytest.mark.parametrize(
    ("request_kwargs", "data", "types"),
    [
        ({"query_string": "__event__=web.Search&query=shoes&page=2"}, {"query": "'shoes'", "page": "'2'"}, "str"),
        (
            {"data": {"__event__": "web.Search", "query": "shoes", "page": "2"}},
            {"query": "'shoes'", "page": "'2'"},
            "str",
        ),
        (
            {"data": {"__event__": "web.Search", "query": "shoes", "page": "2"}, "content_type": "multipart/form-data"},
            {"query": "'shoes'", "page": "'2'"},
            "str",
        ),
        (
            {"json": {"event": "web.Search", "data": {"query": "shoes", "page": 2}}},
            {"query": "'shoes'", "page": "2"},
            "int",
        ),
        ({"data": BEACON, "content_type": "text/plain;charset=UTF-8"}, {"query": "'shoes'", "page": "2"}, "int"),
        ({"data": BEACON, "content_type": "text/plain"}, {"query": "'shoes'", "page": "2"}, "int"),
    ],
    ids=["query-string", "form", "multipart", "json", "beacon-text-plain", "text-plain"],
)
def test_every_body_form_logs_the_event(
    client: FlaskClient, records: Records, request_kwargs: dict[str, Any], data: dict[str, str], types: str
) -> None:
    (event_id,) = accepted(client.post("/event/log", **request_kwargs), records)
    (entry,) = records.for_id(event_id)
    assert entry["data"] == data
    assert entry["types"]["page"] == types  # the query-string and form values stay strings


def test_a_client_id_becomes_the_event_id(client: FlaskClient, records: Records) -> None:
    client_id = str(uuid.uuid4())
    response = client.post("/event/log", json={"event": "web.PageView", "id": client_id.upper()})
    assert accepted(response, records) == [client_id]
    # A retry of the same event is accepted again, and its handler does not run twice.
    response = client.post("/event/log", json={"event": "web.PageView", "id": client_id})
    assert response.status_code == 202 and body(response)["accepted"] == [client_id]
    assert records.handlers_for(client_id) == ["PageView.store"]

    other_id = str(uuid.uuid4())
    response = client.post(f"/event/log?__event__=web.PageView&__id__={other_id}&page=1")
    assert accepted(response, records) == [other_id]
    assert records.for_id(other_id)[0]["data"] == {"page": "'1'"}  # __id__ is not data


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", "{12345678-1234-5678-1234-567812345678}", 7, ["x"]])
def test_a_malformed_client_id_is_refused(client: FlaskClient, records: Records, bad_id: Any) -> None:
    response = client.post("/event/log", json={"event": "web.PageView", "id": bad_id})
    refused(response, 400, "invalid_id", records)


def test_the_context_is_the_servers(make_app: AppFactory, records: Records) -> None:
    # A public event without a schema, in a registry of its own, takes any data.
    free = make_app(eventlib=EventLib(), EVENTLIB_EVENT_MODULES={"free": "tests.sample.web.free"})
    client = free.test_client()
    forged = {"received_at": "1999-01-01", "remote_addr": "6.6.6.6"}
    response = client.post("/event/log", json={"event": "free.Anything", "data": {}, "context": forged})
    refused(response, 400, "invalid_event", records)

    # Without ProxyFix a raw X-Forwarded-For is ignored; a "context" parameter is only data.
    response = client.post(
        "/event/log?__event__=free.Anything&context=forged&remote_addr=6.6.6.6",
        headers={"X-Forwarded-For": "6.6.6.6"},
        environ_base={"REMOTE_ADDR": "192.0.2.10"},
    )
    (event_id,) = accepted(response, records)
    (entry,) = records.for_id(event_id)
    assert entry["context"]["remote_addr"] == "'192.0.2.10'"
    assert entry["data"] == {"context": "'forged'", "remote_addr": "'6.6.6.6'"}
    assert entry["context"]["user_agent"].startswith("'Werkzeug/")

    # Behind a proxy the app trusts (ProxyFix), the proxy's X-Forwarded-For is the client.
    app = make_app()
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    response = app.test_client().post(
        "/event/log?__event__=web.PageView",
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    (event_id,) = accepted(response, records)
    assert records.for_id(event_id)[0]["context"]["remote_addr"] == "'203.0.113.9'"


# -- refusals, one per status ---------------------------------------------------------------------

DEEP = "[" * 40 + "]" * 40
PAGE_VIEW = "__event__=web.PageView"


def query(query_string: str = PAGE_VIEW, **headers: str) -> dict[str, Any]:
    return {"query_string": query_string, "headers": headers}


def raw(data: bytes | str, content_type: str = "application/json") -> dict[str, Any]:
    return {"data": data, "content_type": content_type}


def doc(document: Any) -> dict[str, Any]:
    return {"json": document}


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed-json", raw(b'{"event": '), 400, "invalid_json"),
    ("invalid-utf8", raw(b'{"event": "web.PageView\xff"}', "text/plain"), 400, "invalid_json"),
    ("nan", raw(b'{"event": "web.PageView", "data": {"x": NaN}}'), 400, "invalid_json"),
    ("deep-json", raw(DEEP), 400, "invalid_json"),
    ("body-not-object", doc([{"event": "web.PageView"}]), 400, "invalid_request"),
    ("missing-name", doc({"data": {"page": "1"}}), 400, "invalid_event"),
    ("empty-name", doc({"event": ""}), 400, "invalid_event"),
    ("name-not-string", doc({"event": ["web.PageView"]}), 400, "invalid_event"),
    ("data-not-object", doc({"event": "web.PageView", "data": ["page", "1"]}), 400, "invalid_event"),
    ("data-null", doc({"event": "web.PageView", "data": None}), 400, "invalid_event"),
    ("unexpected-key", doc({"event": "web.PageView", "extra": 1}), 400, "invalid_event"),
    ("validation", doc({"event": "web.Search", "data": {"page": "1"}}), 400, "validation_error"),
    ("schema", doc({"event": "web.Rating", "data": {"stars": 9}}), 400, "validation_error"),
    ("no-event", {}, 400, "invalid_request"),
    ("query-no-name", query("page=1"), 400, "invalid_request"),
    ("repeated-param", query(f"{PAGE_VIEW}&a=1&a=2"), 400, "invalid_request"),
    ("repeated-name", query(f"{PAGE_VIEW}&__event__=web.Internal"), 400, "invalid_request"),
    ("query-and-body", {**query(), **doc({"event": "web.PageView"})}, 400, "invalid_request"),
    ("files", {"data": {"__event__": "web.PageView", "f": (b"x", "f.txt")}}, 400, "invalid_request"),
    ("batch-not-list", doc({"events": {"event": "web.PageView"}}), 400, "invalid_request"),
    ("batch-empty", doc({"events": []}), 400, "invalid_request"),
    ("batch-extra-key", doc({"events": [{"event": "web.PageView"}], "event": "web.PageView"}), 400, "invalid_request"),
    ("unknown", doc({"event": "web.Nope"}), 404, "unknown_event"),
    ("dunder-class", query("__event__=deals.__class__"), 404, "unknown_event"),
    ("dunder-init", doc({"event": "web.__init__"}), 404, "unknown_event"),
    ("not-a-name", doc({"event": "PageView"}), 404, "unknown_event"),
    ("base-event", doc({"event": "web.BaseEvent"}), 404, "unknown_event"),
    ("private", doc({"event": "web.Internal"}), 403, "private_event"),
    ("private-query", query("__event__=deals.DealClick&deal_id=1"), 403, "private_event"),
    ("foreign-origin", query(Origin="https://evil.example"), 403, "origin_refused"),
    ("null-origin", query(Origin="null"), 403, "origin_refused"),
    ("other-scheme", query(Origin="https://localhost"), 403, "origin_refused"),
    ("other-port", query(Origin="http://localhost:8080"), 403, "origin_refused"),
    ("foreign-referer", query(Referer="https://evil.example/x"), 403, "origin_refused"),
    ("bad-referer", query(Referer="not a url"), 403, "origin_refused"),
    ("origin-beats-referer", query(Origin="https://evil.example", Referer="http://localhost/"), 403, "origin_refused"),
    ("big-body", raw(b'{"event": "web.PageView", "data": {"x": "' + b"x" * 70_000 + b'"}}'), 413, "payload_too_large"),
    ("big-form", {"data": {"__event__": "web.PageView", "x": "x" * 70_000}}, 413, "payload_too_large"),
    ("big-query", query(f"{PAGE_VIEW}&x=" + "x" * 70_000), 413, "payload_too_large"),
    ("big-batch", doc({"events": [{"event": "web.PageView"}] * 51}), 413, "too_many_events"),
    ("xml", raw("<event/>", "application/xml"), 415, "unsupported_media_type"),
    ("untyped-body", raw(b'{"event": "web.PageView"}', ""), 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("request_kwargs", "status", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals(
    client: FlaskClient, records: Records, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    document = refused(client.post("/event/log", **with_files(request_kwargs)), status, code, records)
    assert document["errors"][0]["message"]


def with_files(request_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request's arguments with each ``(bytes, filename)`` of its form a file the test client
    can read (and close): a fresh one for each run of a parametrized test."""
    data = request_kwargs.get("data")
    if not isinstance(data, dict):
        return request_kwargs
    files = {key: (io.BytesIO(value[0]), value[1]) for key, value in data.items() if isinstance(value, tuple)}
    return {**request_kwargs, "data": {**data, **files}}


def test_an_unknown_event_gets_no_did_you_mean_which_could_name_a_private_event(
    client: FlaskClient, records: Records
) -> None:
    (error,) = refused(client.post("/event/log", json={"event": "deals.DealClik"}), 404, "unknown_event", records)[
        "errors"
    ]
    assert error["message"] == "There is no event named DealClik in the deals app"


def test_validation_errors_carry_the_messages(client: FlaskClient, records: Records) -> None:
    response = client.post("/event/log", json={"event": "web.Rating", "data": {"stars": "many"}})
    (error,) = refused(response, 400, "validation_error", records)["errors"]
    assert error == {
        "status": 400,
        "code": "validation_error",
        "message": "Invalid event data: stars: Not a valid integer.",
        "index": 0,
        "event": "web.Rating",
        "id": None,
        "details": {"stars": ["Not a valid integer."]},
    }


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"])
def test_only_post_is_allowed(client: FlaskClient, records: Records, method: str) -> None:
    response = client.open("/event/log?__event__=web.PageView", method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    if method != "HEAD":  # a HEAD answer has no body
        refused(response, 405, "method_not_allowed", records)
    assert records.all() == []


def test_rate_limit_per_client(make_app: AppFactory, records: Records) -> None:
    client = make_app(EVENTLIB_RATE_LIMIT="3/minute").test_client()
    first = {"REMOTE_ADDR": "198.51.100.1"}
    for _ in range(3):
        accepted(client.post("/event/log?__event__=web.PageView", environ_base=first), records)
    before = len(records.all())
    # Refused requests count too, and a raw X-Forwarded-For does not make a new client.
    response = client.post(
        "/event/log?__event__=web.PageView", environ_base=first, headers={"X-Forwarded-For": "192.0.2.77"}
    )
    document = body(response)
    assert response.status_code == 429 and document["errors"][0]["code"] == "rate_limited"
    assert 0 < int(response.headers["Retry-After"]) <= 61
    assert len(records.all()) == before  # no handler ran
    # Another client has its own count.
    accepted(client.post("/event/log?__event__=web.PageView", environ_base={"REMOTE_ADDR": "198.51.100.2"}), records)


def test_rate_limit_keys_on_the_proxyfix_address(make_app: AppFactory, records: Records) -> None:
    app = make_app(EVENTLIB_RATE_LIMIT="1/minute")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    client = app.test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for address in ("203.0.113.1", "203.0.113.2"):
        response = client.post(
            "/event/log?__event__=web.PageView", environ_base=proxy, headers={"X-Forwarded-For": address}
        )
        accepted(response, records)
    response = client.post(
        "/event/log?__event__=web.PageView", environ_base=proxy, headers={"X-Forwarded-For": "203.0.113.1"}
    )
    assert response.status_code == 429


def test_rate_limit_counts_in_a_shared_redis(make_app: AppFactory, records: Records) -> None:
    """Two app processes (two gunicorn workers) with one Redis share the client's count."""
    settings = {"EVENTLIB_RATE_LIMIT": "2/minute", "EVENTLIB_RATE_LIMIT_STORAGE_URL": REDIS_URL}
    workers = [make_app(**settings).test_client(), make_app(**settings).test_client()]
    client_address = {"REMOTE_ADDR": f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"}
    accepted(workers[0].post("/event/log?__event__=web.PageView", environ_base=client_address), records)
    accepted(workers[1].post("/event/log?__event__=web.PageView", environ_base=client_address), records)
    assert workers[0].post("/event/log?__event__=web.PageView", environ_base=client_address).status_code == 429
    assert workers[1].post("/event/log?__event__=web.PageView", environ_base=client_address).status_code == 429


def test_rate_limit_falls_back_to_memory_when_its_storage_is_down(make_app: AppFactory, records: Records) -> None:
    client = make_app(
        EVENTLIB_RATE_LIMIT="2/minute", EVENTLIB_RATE_LIMIT_STORAGE_URL="redis://127.0.0.1:1/0"
    ).test_client()
    accepted(client.post("/event/log?__event__=web.PageView"), records)
    accepted(client.post("/event/log?__event__=web.PageView"), records)
    assert client.post("/event/log?__event__=web.PageView").status_code == 429


def test_rate_limit_off(make_app: AppFactory, records: Records) -> None:
    app = make_app(EVENTLIB_RATE_LIMIT=None)
    assert app.extensions["eventlib"].http.limiter is None
    client = app.test_client()
    assert all(client.post("/event/log?__event__=web.PageView").status_code == 202 for _ in range(150))
    assert len(records.all()) == 150


def test_the_rate_limit_covers_only_the_endpoint(make_app: AppFactory, records: Records) -> None:
    # RATELIMIT_* settings meant for the app's own Flask-Limiter are not applied by the extension's.
    app = make_app(EVENTLIB_RATE_LIMIT="2/minute", RATELIMIT_DEFAULT="1/minute", RATELIMIT_APPLICATION="1/minute")
    app.add_url_rule("/page", "page", lambda: "ok", methods=["GET", "POST"])
    client = app.test_client()
    assert [client.post("/page").status_code for _ in range(5)] == [200] * 5
    assert [client.post("/event/log?__event__=web.PageView").status_code for _ in range(3)] == [202, 202, 429]
    assert "RATELIMIT_ENABLED" not in app.config


def test_the_apps_own_flask_limiter_keeps_working(make_app: AppFactory, records: Records) -> None:
    app = make_app(EVENTLIB_RATE_LIMIT="5/minute")
    own = Limiter(get_remote_address, app=app, default_limits=["2/minute"], storage_uri="memory://")
    own.exempt(blueprint)  # as the README says, or its defaults limit /event/log too
    app.add_url_rule("/page", "page", lambda: "ok")
    client = app.test_client()
    assert [client.get("/page").status_code for _ in range(3)] == [200, 200, 429]
    assert [client.post("/event/log?__event__=web.PageView").status_code for _ in range(6)] == [202] * 5 + [429]

    # Limiter(enabled=False) created after the extension stays off: init_app left RATELIMIT_ENABLED unset.
    other = make_app()
    Limiter(get_remote_address, app=other, default_limits=["1/minute"], storage_uri="memory://", enabled=False)
    other.add_url_rule("/page", "page", lambda: "ok")
    assert [other.test_client().get("/page").status_code for _ in range(3)] == [200] * 3


# -- batches --------------------------------------------------------------------------------------


def test_a_batch_logs_its_valid_events_and_reports_the_others(client: FlaskClient, records: Records) -> None:
    good_id, taken_id = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        {"event": "web.PageView", "data": {"page": "1"}, "id": good_id},
        {"event": "web.Search", "data": {}},
        {"event": "web.Internal"},
        {"event": "web.Nope"},
        "not an object",
        {"event": "web.Rating", "data": {"stars": 4}, "id": taken_id},
        {"event": "web.PageView", "id": taken_id},
        {"event": "web.PageView", "id": "bad"},
    ]
    response = client.post("/event/log", json={"events": events})
    document = body(response)
    assert response.status_code == 202
    assert document["accepted"] == [good_id, taken_id]
    assert [(e["index"], e["status"], e["code"]) for e in document["errors"]] == [
        (1, 400, "validation_error"),
        (2, 403, "private_event"),
        (3, 404, "unknown_event"),
        (4, 400, "invalid_event"),
        (6, 400, "invalid_id"),
        (7, 400, "invalid_id"),
    ]
    assert sorted(entry["name"] for entry in records.all()) == ["web.PageView", "web.Rating"]
    assert records.handlers_for(good_id) == ["PageView.store"]
    assert records.handlers_for(taken_id) == ["Rating.store"]


def test_a_batchs_events_are_handed_on_together_with_the_requests_context(
    make_app: AppFactory, records: Records
) -> None:
    app = make_app()
    state = app.extensions["eventlib"]
    handed: list[list[str]] = []
    events = [
        {"event": "web.PageView", "data": {"page": "1"}},
        {"event": "web.Nope"},
        {"event": "web.Rating", "data": {"stars": 5}},
        {"event": "web.Search", "data": {}},
    ]
    with state.publisher.override(Capture(handed.append)):
        response = app.test_client().post(
            "/event/log", json={"events": events}, environ_base={"REMOTE_ADDR": "192.0.2.7"}
        )
    document = body(response)
    assert response.status_code == 202
    # The accepted events in one hand-over (one append to the local log), in their order.
    assert len(handed) == 1
    logged = [state.runner.decode(message) for message in handed[0]]
    assert [event.id for event in logged] == document["accepted"]
    assert [event.name for event in logged] == ["web.PageView", "web.Rating"]
    # Each event has the context of its request, decoded as it was made (the time a datetime).
    first, second = (event.context for event in logged)
    assert first == second
    assert first["remote_addr"] == "192.0.2.7" and first["user_agent"].startswith("Werkzeug/")
    assert isinstance(first["received_at"], dt.datetime) and first["received_at"].tzinfo is not None
    assert records.all() == []  # captured, so no handler ran


def test_an_error_that_escapes_a_batch_hands_on_none_of_its_events(make_app: AppFactory, records: Records) -> None:
    app = make_app(eventlib=EventLib(), EVENTLIB_EVENT_MODULES={"free": "tests.sample.web.free"})
    state = app.extensions["eventlib"]
    handed: list[list[str]] = []
    events = [{"event": "free.Anything", "data": {"n": 1}}, {"event": "free.Broken"}, {"event": "free.Anything"}]
    with state.publisher.override(Capture(handed.append)):
        response = app.test_client().post("/event/log", json={"events": events})
    # Not a refusal (those are answered event by event) but a bug: the request fails whole, and
    # the event logged before it is not sent either.
    document = body(response)
    assert response.status_code == 500
    assert document["accepted"] == [] and document["errors"][0]["code"] == "internal_error"
    assert handed == []
    assert records.all() == []


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ([{"event": "web.Internal"}, {"event": "deals.DealClick"}], 403),
        ([{"event": "web.Nope"}, {"event": "x.Y"}], 404),
        ([{"event": "web.Internal"}, {"event": "web.Nope"}], 400),
    ],
    ids=["all-private", "all-unknown", "mixed"],
)
def test_a_batch_with_nothing_accepted(client: FlaskClient, records: Records, events: list[Any], status: int) -> None:
    response = client.post("/event/log", json={"events": events})
    document = body(response)
    assert response.status_code == status
    assert document["accepted"] == [] and [e["index"] for e in document["errors"]] == [0, 1]
    assert records.all() == []


def test_the_batch_limit_is_configurable(make_app: AppFactory, records: Records) -> None:
    client = make_app(EVENTLIB_MAX_BATCH=2, EVENTLIB_MAX_CONTENT_LENGTH=100).test_client()
    response = client.post("/event/log", json={"events": [{"event": "web.PageView"}] * 3})
    assert response.status_code == 413 and body(response)["errors"][0]["code"] == "too_many_events"
    response = client.post("/event/log", json={"event": "web.PageView", "data": {"x": "x" * 100}})
    assert response.status_code == 413 and body(response)["errors"][0]["code"] == "payload_too_large"
    assert records.all() == []
    accepted(client.post("/event/log", json={"events": [{"event": "web.PageView"}] * 2}), records, count=2)


# -- origins --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://localhost"},
        {"Origin": "HTTP://LOCALHOST:80"},
        {"Referer": "http://localhost/shop/page?x=1"},
        {"Origin": "https://www.example.com"},
        {"Referer": "https://www.example.com/landing"},
        {"Origin": "http://127.0.0.1:5000"},
    ],
    ids=["no-header", "own", "own-default-port", "own-referer", "allowed", "allowed-referer", "allowed-port"],
)
def test_accepted_origins(make_app: AppFactory, records: Records, headers: dict[str, str]) -> None:
    app = make_app(EVENTLIB_ALLOWED_ORIGINS=["https://www.example.com/", "http://127.0.0.1:5000"])
    response = app.test_client().post("/event/log?__event__=web.PageView", headers=headers)
    accepted(response, records)
    assert "Origin" in response.headers["Vary"]
    cross = headers.get("Origin", "").startswith(("https://www", "http://127"))
    assert response.headers.get("Access-Control-Allow-Origin") == (headers["Origin"] if cross else None)


def test_the_own_origin_follows_proxyfix(make_app: AppFactory, records: Records) -> None:
    app = make_app()
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}
    accepted(
        client.post("/event/log?__event__=web.PageView", headers={**forwarded, "Origin": "https://shop.example"}),
        records,
    )
    response = client.post("/event/log?__event__=web.PageView", headers={**forwarded, "Origin": "http://localhost"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EVENTLIB_ALLOWED_ORIGINS", ["https://example.com/path"]),
        ("EVENTLIB_ALLOWED_ORIGINS", ["example.com"]),
        ("EVENTLIB_ALLOWED_ORIGINS", "https://example.com"),
        ("EVENTLIB_ALLOWED_ORIGINS", ["https://*.example.com"]),
        ("EVENTLIB_URL_PREFIX", "event"),
        ("EVENTLIB_RATE_LIMIT", "lots"),
        ("EVENTLIB_RATE_LIMIT_STORAGE_URL", "nosuch://x"),
        ("EVENTLIB_MAX_BATCH", 0),
        ("EVENTLIB_MAX_CONTENT_LENGTH", "64k"),
    ],
)
def test_invalid_settings_fail_at_init_app(make_app: AppFactory, key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_app(**{key: value})


# -- set-up ---------------------------------------------------------------------------------------


def test_prefix_and_switch(make_app: AppFactory, records: Records) -> None:
    client = make_app(EVENTLIB_URL_PREFIX="/track").test_client()
    accepted(client.post("/track/log?__event__=web.PageView"), records)
    assert client.post("/event/log?__event__=web.PageView").status_code == 404
    off = make_app(EVENTLIB_HTTP_ENABLED=False)
    assert "eventlib" not in off.blueprints and off.extensions["eventlib"].http is None
    assert off.test_client().post("/event/log?__event__=web.PageView").status_code == 404
    assert len(records.all()) == 1


def test_the_extensions_blueprint_is_not_searched_for_events() -> None:
    app = Flask("spy")
    app.register_blueprint(blueprint, url_prefix="/custom")  # registered by hand before init_app
    EventLib(always_eager=True, broker_url="memory://", http_enabled=False).init_app(app)
    registry = app.extensions["eventlib"].registry
    assert registry.events() == {} and "flask_eventlib.events" not in registry.scanned_modules
    assert app.url_map.bind("localhost").match("/custom/log", method="POST")[0] == "eventlib.log"


def test_server_code_may_still_log_private_events(client: FlaskClient, records: Records) -> None:
    with client.application.app_context():
        event_id = log("web.Internal", {})
    assert records.handlers_for(event_id) == ["Internal.store"]


def test_csrfprotect_with_the_endpoint_exempted(make_view_app: AppFactory, records: Records) -> None:
    app = make_view_app(SECRET_KEY="test")
    csrf = CSRFProtect(app)
    app.add_url_rule("/form", "form", lambda: "ok", methods=["POST"])
    client = app.test_client()
    # Not exempted yet: CSRFProtect refuses the beacon, which cannot carry a token.
    assert client.post("/event/log?__event__=web.PageView").status_code == 400
    assert records.all() == []
    csrf.exempt(blueprint)
    accepted(client.post("/event/log?__event__=web.PageView", headers={"Origin": "http://localhost"}), records)
    assert (
        client.post("/event/log?__event__=web.PageView", headers={"Origin": "https://evil.example"}).status_code == 403
    )
    assert client.post("/form").status_code == 400  # the rest of the app is still protected
    assert len(records.all()) == 1


def test_request_bodies_are_not_logged_at_info_or_above(
    make_app: AppFactory, records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    # 7 a minute: the foreign-origin request is refused before it is counted, so the 9th is the 8th.
    client = make_app(EVENTLIB_RATE_LIMIT="7/minute").test_client()
    requests: list[dict[str, Any]] = [
        {"json": {"event": "web.PageView", "data": {"page": secret}}},
        {"json": {"event": "web.Search", "data": {"page": secret}}},
        {"json": {"event": "web.Internal", "data": {"page": secret}}},
        {"json": {"event": f"web.{secret}"}},
        {"data": '{"event": "' + secret, "content_type": "application/json"},
        {"data": {"__event__": "web.Rating", "stars": secret, secret: "1"}},
        {
            "json": {
                "events": [{"event": "web.PageView", "data": {"page": secret}}, {"event": "web.Rating", "id": secret}]
            }
        },
        {"json": {"event": "web.PageView", "data": {"page": secret}}, "headers": {"Origin": "https://evil.example"}},
        {"json": {"event": "web.PageView", "data": {"page": secret}}},  # the 9th: 429
    ]
    with caplog.at_level(logging.DEBUG):
        statuses = [client.post("/event/log", **kwargs).status_code for kwargs in requests]
    assert statuses == [202, 400, 403, 404, 400, 400, 202, 403, 429]
    loud = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert not [record.getMessage() for record in loud if secret in record.getMessage() or secret in str(record.args)]


# -- through a real worker ------------------------------------------------------------------------


def test_the_specs_example_through_a_worker(worker: Worker) -> None:
    response = worker.app.test_client().post(
        "/event/log?__event__=web.PageView&param1=val1&param2=val2",
        headers={"Origin": "http://localhost", "User-Agent": "Browser/2.0"},
        environ_base={"REMOTE_ADDR": "198.51.100.20"},
    )
    assert response.status_code == 202, response.get_json()
    (event_id,) = response.get_json()["accepted"]
    assert worker.records.wait_handlers(event_id, 1) == ["PageView.store"]
    (entry,) = worker.records.for_id(event_id)
    assert entry["pid"] != os.getpid()
    assert entry["data"] == {"param1": "'val1'", "param2": "'val2'"}
    assert entry["context"]["remote_addr"] == "'198.51.100.20'"
    assert entry["context"]["user_agent"] == "'Browser/2.0'"
    assert "tzinfo=datetime.timezone.utc" in entry["context"]["received_at"]


def test_a_foreign_page_cannot_use_up_a_visitors_rate_limit(make_app: AppFactory, records: Records) -> None:
    client = make_app(EVENTLIB_RATE_LIMIT="1/minute").test_client()
    foreign = {"Origin": "https://evil.example"}
    assert [client.post("/event/log?__event__=web.PageView", headers=foreign).status_code for _ in range(3)] == [
        403
    ] * 3
    assert client.post("/event/log?__event__=web.PageView").status_code == 202  # the budget is intact
    assert client.post("/event/log?__event__=web.PageView").status_code == 429
    assert len(records.all()) == 1


# -- bodies without a length (issue 16, item 10) -------------------------------------------------

CHUNKED_BODIES = {
    "a form of 100 KB": (b"__event__=web.PageView&page=" + b"x" * 100_000, "application/x-www-form-urlencoded"),
    "JSON then 80 KB of spaces": (
        b'{"event": "web.PageView", "data": {"page": "/"}}' + b" " * 80_000,
        "application/json",
    ),
}


def _chunked(client: FlaskClient, data: bytes, content_type: str) -> TestResponse:
    """A chunked request as a WSGI server hands it over: no length, the input ends by itself."""
    return client.post(
        "/event/log",
        input_stream=io.BytesIO(data),
        headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize(("data", "content_type"), CHUNKED_BODIES.values(), ids=CHUNKED_BODIES.keys())
def test_a_chunked_body_over_the_limit_is_refused_whole(
    client: FlaskClient, records: Records, data: bytes, content_type: str
) -> None:
    document = refused(_chunked(client, data, content_type), 413, "payload_too_large", records)
    assert document["errors"][0]["message"] == "The request body is larger than 65536 bytes."


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "application/json"])
def test_a_chunked_body_within_the_limit_is_read_whole(
    client: FlaskClient, records: Records, content_type: str
) -> None:
    page = "p" * 60_000  # most of the limit: nothing of it may be cut
    if content_type == "application/json":
        data = json.dumps({"event": "web.PageView", "data": {"page": page}}).encode()
    else:
        data = f"__event__=web.PageView&page={page}".encode()
    (event_id,) = accepted(_chunked(client, data, content_type), records)
    assert records.for_id(event_id)[0]["data"] == {"page": repr(page)}


def test_a_rate_limit_storage_that_stops_answering_costs_tens_of_ms_and_fails_open(
    make_app: AppFactory, records: Records
) -> None:
    # A "Redis" that accepts connections and reads, but never answers (a SIGSTOPped server).
    with silent_server() as port:
        app = make_app(EVENTLIB_RATE_LIMIT_STORAGE_URL=f"redis://127.0.0.1:{port}/0")
        results: list[tuple[int, float]] = []

        def one() -> None:
            started = time.perf_counter()
            status = app.test_client().post("/event/log?__event__=web.PageView&page=/").status_code
            results.append((status, time.perf_counter() - started))

        requests = [threading.Thread(target=one) for _ in range(8)]
        for thread in requests:
            thread.start()
        for thread in requests:
            thread.join(timeout=30)
        assert [status for status, _ in results] == [202] * 8  # failed open: every event logged
        assert max(elapsed for _, elapsed in results) < 1.0  # bounded, not Redis's 5 s default
        assert len(records.all()) == 8


def test_the_memory_rate_limit_opens_a_window_at_a_clients_first_hit_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The in-process counters (``memory://``): no timer thread, windows from the first hit,
    each rate of a ``;`` list counted, memory bounded under a flood of addresses."""
    import threading

    from flask_eventlib.ingest import guards

    clock = [1000.0]
    monkeypatch.setattr(guards.time, "monotonic", lambda: clock[0])
    limit = guards.RateLimit("2/second;3/minute", "memory://")
    threads = threading.active_count()
    assert [limit.hit("a") for _ in range(3)] == [None, None, 1]  # over 2/second
    clock[0] += 1.0  # the second's window ended; the minute's holds the 2 hits it passed
    assert limit.hit("a") is None
    assert limit.hit("a") == 59  # over 3/minute, whose window opened 1 s ago
    assert limit.hit("b") is None  # another client has its own counts
    clock[0] += 59.0
    assert limit.hit("a") is None
    assert threading.active_count() == threads  # nothing was started to expire the counters
    monkeypatch.setattr(guards.MemoryWindows, "MAX_CLIENTS", 10)
    for n in range(11):
        limit.hit(f"flood-{n}")
    clock[0] += 1.0
    limit.hit("after")  # the sweep finds more than MAX_CLIENTS counters and drops them
    assert len(limit._limiter._counts) <= 2  # type: ignore[union-attr]


# -- a body of plain Content-Length, read straight from the server's stream ---------------------


def test_the_app_can_still_read_the_body_the_endpoint_read(make_view_app: AppFactory, records: Records) -> None:
    app = make_view_app()
    seen: list[bytes] = []

    @app.after_request
    def read_it_again(response: Any) -> Any:
        from flask import request

        seen.append(request.get_data())
        return response

    data = json.dumps({"event": "web.PageView", "data": {"page": "/again"}}).encode()
    (event_id,) = accepted(app.test_client().post("/event/log", data=data, content_type="application/json"), records)
    assert seen == [data]
    assert records.for_id(event_id)[0]["data"] == {"page": "'/again'"}


@pytest.mark.parametrize("reads", ["data", "form", "stream"])
def test_a_body_an_app_hook_read_first_is_still_read(make_view_app: AppFactory, records: Records, reads: str) -> None:
    app = make_view_app()

    @app.before_request
    def read_first() -> None:
        from flask import request

        if reads == "data":
            request.get_data()
        elif reads == "form":
            request.form  # noqa: B018  # parses nothing from JSON, but opens the stream
        else:
            request.stream  # noqa: B018

    data = json.dumps({"event": "web.PageView", "data": {"page": "/first"}}).encode()
    (event_id,) = accepted(app.test_client().post("/event/log", data=data, content_type="application/json"), records)
    assert records.for_id(event_id)[0]["data"] == {"page": "'/first'"}


def test_a_body_shorter_than_its_content_length_is_refused(client: FlaskClient, records: Records) -> None:
    data = b'{"event": "web.PageView", "data": {"page": "/"}}'
    response = client.post(
        "/event/log",
        input_stream=io.BytesIO(data),
        headers={"Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": str(len(data) + 10)},
    )
    document = refused(response, 400, "invalid_request", records)
    message = f"The request body ended after {len(data)} of its {len(data) + 10} bytes."
    assert document["errors"][0]["message"] == message


@pytest.mark.parametrize("length", ["-5", "12x", "\uff11\uff12"])
def test_a_content_length_that_is_not_a_plain_number_is_werkzeugs_to_judge(
    client: FlaskClient, records: Records, length: str
) -> None:
    # Werkzeug reads no body for a length it cannot use: the request has no event.
    response = client.post(
        "/event/log",
        input_stream=io.BytesIO(b'{"event": "web.PageView", "data": {}}'),
        headers={"Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": length},
    )
    refused(response, 400, "invalid_request", records)
