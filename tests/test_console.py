"""The operations console through Flask's test client: who may open it, CSRF on every action,
what each page shows, replay and purge. Eager mode runs the handlers in the caller; the browser
tests (``tests/e2e/test_console.py``) run it against a real server, worker and Redis.
"""

from __future__ import annotations

import re
from html import unescape
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from flask import Flask, redirect
from flask.testing import FlaskClient

from flask_eventlib import ConfigurationError, EventLib, log
from flask_eventlib import tasks as celery_glue
from flask_eventlib.console.guard import SESSION_KEY
from flask_eventlib.state import state_of
from tests.conftest import REDIS_URL, Records
from tests.sample import create_app

SECRET = "console-tests"


def console_app(records: Records, eventlib: EventLib | None = None, **config: Any) -> Flask:
    settings: dict[str, Any] = {
        "EVENTLIB_ALWAYS_EAGER": True,
        "EVENTLIB_BROKER_URL": "memory://",
        "EVENTLIB_RETRIES": 0,
        "EVENTLIB_CONSOLE": True,
        "SAMPLE_RECORD_KEY": records.key,
        "SECRET_KEY": SECRET,
        "TESTING": True,
        **config,
    }
    return create_app(eventlib, **settings)


@pytest.fixture
def app(records: Records) -> Flask:
    return console_app(records)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def text(html: bytes | str) -> str:
    """A page's text, tags and runs of blanks gone."""
    html = html.decode() if isinstance(html, bytes) else html
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def token_of(client: FlaskClient, path: str = "/eventlib/deadletters") -> str:
    page = client.get(path).data.decode()
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, page[:2000]
    return found.group(1)


def act(client: FlaskClient, action: str, token: str, *, follow_redirects: bool = False, **form: Any) -> Any:
    """POST a replay or a purge with the session's token."""
    data = {**form, "eventlib_csrf": token}
    return client.post(f"/eventlib/deadletters/{action}", data=data, follow_redirects=follow_redirects)


def letters(app: Flask) -> list[Any]:
    store = state_of(app).store
    assert store is not None
    return store.dead_letters()


def log_in(app: Flask, name: str, data: dict[str, Any] | None = None) -> str:
    with app.app_context():
        return log(name, data)


# -- turning it on -----------------------------------------------------------------------------------


def test_the_console_is_off_by_default(records: Records) -> None:
    app = create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key)
    assert app.test_client().get("/eventlib/").status_code == 404
    assert state_of(app).figures is None


def test_outside_debug_and_testing_it_refuses_to_start_without_an_access_check(records: Records) -> None:
    with pytest.raises(ConfigurationError) as refused:
        console_app(records, TESTING=False)
    message = str(refused.value)
    assert "EVENTLIB_CONSOLE_ACCESS" in message and "current_user" in message and "tests.sample" in message
    assert console_app(records, TESTING=False, DEBUG=True).test_client().get("/eventlib/").status_code == 200
    allowed = console_app(records, EventLib(console_access=lambda: True), TESTING=False)
    assert allowed.test_client().get("/eventlib/").status_code == 200


def test_it_needs_a_secret_key_for_its_csrf_token(records: Records) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        console_app(records, SECRET_KEY=None)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EVENTLIB_CONSOLE_URL_PREFIX", "eventlib"),
        ("EVENTLIB_CONSOLE_URL_PREFIX", "/"),
        ("EVENTLIB_CONSOLE_ACCESS", "shop.auth:admin"),
        ("EVENTLIB_CONSOLE_REDACT", "password"),
        ("EVENTLIB_CONSOLE_FIGURES", "yes"),
    ],
)
def test_a_wrong_console_setting_names_its_key(records: Records, key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        console_app(records, **{key: value})


def test_the_url_prefix_is_the_apps_choice(records: Records) -> None:
    client = console_app(records, EVENTLIB_CONSOLE_URL_PREFIX="/ops/events").test_client()
    assert client.get("/eventlib/").status_code == 404
    page = client.get("/ops/events/")
    assert page.status_code == 200 and b'src="/ops/events/static/console.js"' in page.data


# -- who may open it ---------------------------------------------------------------------------------


PAGES = [
    "/eventlib/",
    "/eventlib/live",
    "/eventlib/overview.json",
    "/eventlib/events",
    "/eventlib/deadletters",
    "/eventlib/event?id=x",
    "/eventlib/static/console.js",
]


def test_an_access_check_that_says_no_refuses_every_page_and_action(records: Records) -> None:
    allowed = {"yes": False}
    app = console_app(records, EventLib(console_access=lambda: allowed["yes"]), TESTING=False)
    client = app.test_client()
    for path in PAGES:
        with client.get(path) as response:
            assert response.status_code == 403, path
            assert "You may not use the flask-eventlib console." in text(response.data)
    assert client.post("/eventlib/deadletters/purge", data={"group": "x"}).status_code == 403
    allowed["yes"] = True
    for path in PAGES:
        with client.get(path) as response:
            assert response.status_code == 200, path


def test_an_access_check_may_answer_with_a_response_such_as_a_redirect_to_the_login_page(records: Records) -> None:
    app = console_app(records, EVENTLIB_CONSOLE_ACCESS=lambda: redirect("/login?next=/eventlib/"))
    response = app.test_client().get("/eventlib/events")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/eventlib/"


def test_the_access_check_runs_in_the_request_so_it_can_read_the_user(records: Records) -> None:
    from flask import request

    app = console_app(records, EVENTLIB_CONSOLE_ACCESS=lambda: request.headers.get("X-Role") == "admin")
    client = app.test_client()
    assert client.get("/eventlib/", headers={"X-Role": "admin"}).status_code == 200
    assert client.get("/eventlib/", headers={"X-Role": "guest"}).status_code == 403


# -- CSRF --------------------------------------------------------------------------------------------


def test_every_action_is_a_post_carrying_the_sessions_token(app: Flask, client: FlaskClient, records: Records) -> None:
    log_in(app, "ops.AlwaysFails", {"fix": "csrf"})
    (letter,) = letters(app)
    records.client.set(f"{records.key}:fixed:csrf", "1")
    assert client.get(f"/eventlib/deadletters/replay?id={letter.id}").status_code == 404  # not an action
    missing = client.post("/eventlib/deadletters/replay", data={"id": letter.id})
    assert missing.status_code == 400 and "no CSRF token" in text(missing.data)
    token = token_of(client)
    wrong = client.post("/eventlib/deadletters/replay", data={"id": letter.id, "eventlib_csrf": token + "x"})
    assert wrong.status_code == 403 and "not this session's" in text(wrong.data)
    other = app.test_client()
    stolen = other.post("/eventlib/deadletters/replay", data={"id": letter.id, "eventlib_csrf": token})
    assert stolen.status_code == 403  # another session: a token of its own, or none yet
    assert letters(app) == [letter] and "AlwaysFails.broken" not in records.handlers_for(letter.event_id)
    done = client.post("/eventlib/deadletters/replay", data={"id": letter.id, "eventlib_csrf": token})
    assert done.status_code == 302
    assert letters(app) == [] and records.handlers_for(letter.event_id)[-1] == "AlwaysFails.broken"
    header = client.post("/eventlib/deadletters/purge", data={"group": "x"}, headers={"X-Eventlib-CSRF": token})
    assert header.status_code == 302  # scripts may send it as a header


def test_beside_flask_wtfs_csrfprotect_the_console_is_exempted_and_checks_its_own_token(records: Records) -> None:
    from flask_wtf.csrf import CSRFProtect

    from flask_eventlib import console

    app = console_app(records)
    csrf = CSRFProtect(app)
    client = app.test_client()
    token = token_of(client)
    assert client.post("/eventlib/deadletters/purge", data={"group": "x", "eventlib_csrf": token}).status_code == 400
    csrf.exempt(console.bp)
    assert client.post("/eventlib/deadletters/purge", data={"group": "x", "eventlib_csrf": token}).status_code == 302
    assert client.post("/eventlib/deadletters/purge", data={"group": "x"}).status_code == 400  # its own check


def test_the_token_is_made_once_per_session(app: Flask, client: FlaskClient) -> None:
    first = token_of(client)
    assert token_of(client, "/eventlib/deadletters") == first
    with client.session_transaction() as session:
        assert session[SESSION_KEY] == first
    assert token_of(app.test_client()) != first


# -- the pages ---------------------------------------------------------------------------------------


def test_the_overview_counts_what_the_events_did(app: Flask, client: FlaskClient) -> None:
    for n in range(3):
        log_in(app, "deals.DealClick", {"deal_id": n})
    log_in(app, "deals.Flaky", {"n": 1})
    page = client.get("/eventlib/")
    assert page.status_code == 200
    shown = page.data.decode()
    assert re.search(r'data-figure="hour.logged">4<', shown)
    assert re.search(r'data-figure="hour.failed">2<', shown)  # Flaky.explode and flaky_function_fails
    assert re.search(r'data-figure="hour.dead">2<', shown)
    assert 'data-live="/eventlib/live?minutes=60"' in shown
    points = re.findall(r'<polyline class="(\w+)" points="([^"]*)"', shown)
    assert [name for name, _ in points] == ["logged", "handled", "failed"]
    assert {len(line.split()) for _, line in points} == {360}  # an hour of 10 s buckets
    short = client.get("/eventlib/?minutes=10").data.decode()
    assert {len(line.split()) for _, line in re.findall(r'points="()([^"]*)"', short)} == {60}
    assert 'data-live="/eventlib/live?minutes=10"' in short
    assert 'data-live="/eventlib/live?minutes=60"' in client.get("/eventlib/?minutes=7").text  # not a choice
    row = re.search(r'<tr data-event="deals.DealClick">(.*?)</tr>', shown, flags=re.S)
    assert row and re.search(r'data-figure="logged">3<', row.group(1))
    assert re.search(r'data-figure="handled">12<', row.group(1))
    handler = re.search(r'<tr data-handler="tests.sample.handlers.on_click">(.*?)</tr>', shown, flags=re.S)
    assert handler and re.search(r'data-figure="p50">[\d.]+ (µs|ms|s)<', handler.group(1))
    assert "eager mode: no queue" in shown
    assert '<table id="web-processes">' in shown  # this process's heartbeat, as a web process
    fragment = client.get("/eventlib/live").data.decode()
    assert "<html" not in fragment and 'data-figure="hour.logged">4<' in fragment
    figures = client.get("/eventlib/overview.json").get_json()
    assert figures["hour"]["logged"] == 4 and figures["events"]["deals.DealClick"]["logged"] == 3
    assert figures["queue"] == {"name": "eventlib", "depth": None, "error": "eager mode: no queue"}
    (web,) = figures["processes"]["web"]
    assert web["logged"] == 4 and web["role"] == "web"


def test_a_web_process_whose_sender_fills_its_messages_is_shown_so(app: Flask, client: FlaskClient) -> None:
    state = state_of(app)
    assert state.figures is not None and state.sender is not None

    def row() -> str:
        state.figures.tick(state.sender)
        shown = client.get("/eventlib/").data.decode()
        table = re.search(r'<table id="web-processes">(.*?)</table>', shown, flags=re.S)
        assert table
        return table.group(1)

    log_in(app, "deals.DealClick", {"deal_id": 1})
    assert 'data-figure="behind"' not in row()
    state.sender.behind = True  # what a publish that saw 50 messages waiting sets
    log_in(app, "deals.DealClick", {"deal_id": 2})  # something new: the next tick writes a heartbeat
    assert re.search(r'data-figure="behind"[^>]*>filling<', row())


def test_without_figures_the_pages_say_so(records: Records) -> None:
    client = console_app(records, EVENTLIB_CONSOLE_FIGURES=False).test_client()
    assert "gathers no figures" in text(client.get("/eventlib/").data)
    assert client.get("/eventlib/overview.json").status_code == 404
    assert client.get("/eventlib/events").status_code == 200
    assert "events are not traced" in text(client.get("/eventlib/event?id=x").data)


def test_the_events_page_shows_the_registry(app: Flask, client: FlaskClient) -> None:
    log_in(app, "deals.DealClick", {"deal_id": 1})
    page = client.get("/eventlib/events").data.decode()
    registry = state_of(app).registry
    assert re.findall(r'<section class="event" id="([^"]+)"', page) == list(registry.events())

    def section(name: str) -> str:
        found = re.search(rf'<section class="event" id="{re.escape(name)}".*?</section>', page, flags=re.S)
        assert found, name
        return found.group(0)

    click = text(section("deals.DealClick"))
    labels = registry.handler_labels("deals.DealClick")
    assert [label for label in re.findall(r"\d+ (tests\.sample\.\S+)", click)] == labels  # in run order
    assert "server only" in click and "No schema" in click and "logged in the last hour" in click
    purchase = text(section("deals.Purchase"))
    assert "amount number | string required" in purchase and "coupon string | null" in purchase
    assert "public" in text(section("web.PageView"))
    broken = text(section("ops.AlwaysFails"))
    assert "tests.sample.ops.events.AlwaysFails.broken 2 " in broken  # its own retries
    assert "tests.sample.ops.events.AlwaysFails.fine 0 (default)" in broken  # EVENTLIB_RETRIES


def test_dead_letters_are_grouped_by_event_handler_and_error_class(app: Flask, client: FlaskClient) -> None:
    for n in range(3):
        log_in(app, "deals.Flaky", {"n": n})
    log_in(app, "ops.Permanent")
    page = client.get("/eventlib/deadletters").data.decode()
    rows = re.findall(r'<tr data-group="(\w+)">(.*?)</tr>', page, flags=re.S)
    shown = sorted(" ".join(text(cells).split()[:4]) for _, cells in rows)
    assert shown == [
        "deals.Flaky tests.sample.deals.events.Flaky.explode RuntimeError 3",
        "deals.Flaky tests.sample.handlers.flaky_function_fails ValueError 3",
        "ops.Permanent tests.sample.ops.events.Permanent.refuse DontRetry 1",
    ]
    gid, cells = next((gid, cells) for gid, cells in rows if "Permanent" in cells)
    assert re.search(r'<td class="n">1</td><td class="n">1</td>', cells)  # last hour, last 24 h
    group = client.get(f"/eventlib/deadletters/group/{gid}").data.decode()
    assert len(re.findall(r"<tr data-letter=", group)) == 1 and "1 in the last hour" in text(group)
    assert client.get("/eventlib/deadletters/group/nosuch").status_code == 404


def test_a_dead_letters_page_shows_its_traceback_and_its_data_redacted(app: Flask, client: FlaskClient) -> None:
    log_in(app, "ops.Permanent", {"customer": 7, "password": "hunter2", "card": {"Token": "tok_123", "last4": "4242"}})
    (letter,) = letters(app)
    page = client.get(f"/eventlib/deadletters/{letter.id}")
    assert page.status_code == 200
    shown = page.data.decode()
    assert "hunter2" not in shown and "tok_123" not in shown
    data = text(re.search(r'<pre id="data">(.*?)</pre>', shown, flags=re.S).group(1))  # type: ignore[union-attr]
    assert '"password": "[redacted]"' in data and '"Token": "[redacted]"' in data and '"last4": "4242"' in data
    assert "DontRetry: customer 7 was deleted" in text(shown)  # the traceback's last line
    assert 'id="traceback"' in shown and "Traceback (most recent call last)" in shown
    assert client.get("/eventlib/deadletters/nosuch").status_code == 404
    other = console_app(Records(redis.Redis.from_url(REDIS_URL), "unused"), EVENTLIB_CONSOLE_REDACT=["customer"])
    state_of(other).store.add_dead_letter(letter)  # type: ignore[union-attr]
    shown = other.test_client().get(f"/eventlib/deadletters/{letter.id}").data.decode()
    assert "hunter2" in shown and '"customer": "[redacted]"' in text(shown)


def test_replay_or_purge_a_selection_or_a_whole_group(app: Flask, client: FlaskClient, records: Records) -> None:
    ids = [log_in(app, "ops.AlwaysFails", {"fix": f"group-{n}"}) for n in range(4)]
    log_in(app, "ops.Permanent")
    assert len(letters(app)) == 5
    token = token_of(client)
    chosen = [d.id for d in letters(app) if d.event_id in ids[:2]]
    records.client.set(f"{records.key}:fixed:group-0", "1")
    records.client.set(f"{records.key}:fixed:group-1", "1")
    back = act(client, "replay", token, id=chosen, next="/eventlib/events")
    assert back.status_code == 302 and back.headers["Location"] == "/eventlib/events"
    assert "2 dead letters replayed" in text(client.get("/eventlib/events").data)
    assert {records.handlers_for(i)[-1] for i in ids[:2]} == {"AlwaysFails.broken"}
    left = letters(app)
    assert sorted(d.event_id for d in left if d.event_name == "ops.AlwaysFails") == sorted(ids[2:])
    groups = re.findall(r'<tr data-group="(\w+)">(.*?)</tr>', client.get("/eventlib/deadletters").text, flags=re.S)
    failing = next(g for g, cells in groups if "AlwaysFails" in cells)
    assert act(client, "replay", token, group=failing).status_code == 302
    # Still broken: replayed, they failed again and came back as new dead letters of the group.
    assert sorted(d.event_id for d in letters(app) if d.event_name == "ops.AlwaysFails") == sorted(ids[2:])
    assert act(client, "purge", token, group=failing).status_code == 302
    assert [d.event_name for d in letters(app)] == ["ops.Permanent"]
    (last,) = letters(app)
    act(client, "purge", token, id=last.id)
    assert letters(app) == []
    gone = act(client, "replay", token, id=last.id, follow_redirects=True)
    assert "gone already" in text(gone.data)
    nothing = act(client, "purge", token, follow_redirects=True)
    assert "Choose the dead letters first." in text(nothing.data)


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/elsewhere", "/eventlib/\\\\evil"])
def test_after_an_action_it_goes_back_to_a_console_page_only(client: FlaskClient, target: str) -> None:
    token = token_of(client)
    response = client.post("/eventlib/deadletters/purge", data={"group": "x", "eventlib_csrf": token, "next": target})
    assert response.headers["Location"] == "/eventlib/deadletters"


def test_one_event_by_id_tells_when_it_was_logged_and_what_each_handler_did(app: Flask, client: FlaskClient) -> None:
    event_id = log_in(app, "deals.Flaky", {"n": 9})
    page = client.get(f"/eventlib/event?id={event_id}").data.decode()
    story = text(re.search(r'<dl class="facts" id="story">(.*?)</dl>', page, flags=re.S).group(1))  # type: ignore[union-attr]
    assert "event deals.Flaky" in story and re.search(r"logged \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", story)
    assert "handled -" in story  # two handlers are dead-lettered
    rows = re.findall(r'<tr data-handler="([^"]+)">(.*?)</tr>', page, flags=re.S)
    outcomes = {label: text(cells).split()[1] for label, cells in rows if "<code>" in cells}
    labels = state_of(app).registry.handler_labels("deals.Flaky")
    assert list(outcomes) == labels
    assert outcomes["tests.sample.deals.events.Flaky.explode"] == "dead-lettered"
    assert outcomes["tests.sample.handlers.audit"] == "succeeded"
    assert "RuntimeError: boom for 9" in text(page)
    assert len(re.findall(r"/eventlib/deadletters/\w{32}", page)) == 2  # its dead letters
    unknown = text(client.get("/eventlib/event?id=nope").data)
    assert "No trace of this event" in unknown
    assert "Find" in text(client.get("/eventlib/event").data)


# -- the worker side ---------------------------------------------------------------------------------


def test_the_worker_start_hook_runs_in_the_process_that_runs_tasks() -> None:
    from celery import Celery

    celery = Celery("hooks", set_as_current=False)
    started: list[str] = []
    celery_glue.on_worker_start(celery, lambda: started.append("solo"))
    solo = SimpleNamespace(app=celery, pool=object())  # a pool of another module than prefork: tasks run here
    celery_glue._worker_ready(sender=solo)
    prefork = SimpleNamespace(app=celery, pool=type("TaskPool", (), {"__module__": "celery.concurrency.prefork"})())
    celery_glue._worker_ready(sender=prefork)  # the children do it (worker_process_init)
    celery_glue._worker_ready(sender=SimpleNamespace(app=Celery("other", set_as_current=False), pool=object()))
    assert started == ["solo"]


@pytest.mark.parametrize(
    "settings",
    [{}, {"broker_transport_options": {"global_keyprefix": "eventlib-test-prefix:"}}],
    ids=["plain", "with-a-key-prefix"],
)
def test_the_queue_depth_is_read_from_the_broker(redis_client: redis.Redis, settings: dict[str, Any]) -> None:
    import uuid

    from flask_eventlib.tasks import create_celery, queue_depth

    queue = f"eventlib-test-depth-{uuid.uuid4().hex[:8]}"
    celery = create_celery("depth", broker_url=REDIS_URL, queue=queue, settings=settings)
    try:
        assert queue_depth(celery, queue) == 0  # not made yet
        with celery.connection_for_write() as conn:
            producer = conn.Producer(serializer="json")
            for n in range(3):
                producer.publish({"n": n}, routing_key=queue, declare=[celery_glue.Queue(queue, routing_key=queue)])
        assert queue_depth(celery, queue) == 3
        dead = create_celery("dead", broker_url="redis://127.0.0.1:1/0", queue=queue, settings={})
        with pytest.raises(Exception):  # noqa: B017 - the broker's own error, whatever its kind
            queue_depth(dead, queue, timeout=0.5)
    finally:
        redis_client.delete(queue, *redis_client.scan_iter(f"*{queue}"))


# -- the chart and the script -----------------------------------------------------------------------


def test_the_chart_puts_every_series_on_one_scale() -> None:
    from flask_eventlib.console.views import chart

    drawn = chart({"a": [0, 5, 10], "b": [1, 1, 1]}, width=100, height=50)
    assert drawn["top"] == 10
    assert drawn["lines"] == {"a": "0.0,50.0 50.0,25.0 100.0,0.0", "b": "0.0,45.0 50.0,45.0 100.0,45.0"}
    assert chart({"a": [0, 0]}, 10, 10)["lines"]["a"] == "0.0,10.0 10.0,10.0"  # nothing: flat, at the bottom


#: The most bytes the console's script may weigh, gzipped (level 9).
SCRIPT_BUDGET = 1024


def test_the_consoles_script_is_small_and_stands_alone() -> None:
    import gzip

    from tests.conftest import ROOT

    script = (ROOT / "flask_eventlib" / "console" / "static" / "console.js").read_bytes()
    assert len(gzip.compress(script, compresslevel=9, mtime=0)) <= SCRIPT_BUDGET
    assert b"import " not in script  # no dependency, no build step
