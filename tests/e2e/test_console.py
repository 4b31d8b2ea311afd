"""The operations console in headless Chromium, against a real server, a real worker and Redis.

The sample app serves the console behind an access check (a cookie stands for a logged-in
admin); its events go through Redis to a ``celery worker`` process that gathers the console's
figures too (``EVENTLIB_CONSOLE_FIGURES``), so the overview shows what two processes counted.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, request
from playwright.sync_api import expect

from flask_eventlib import flush, log
from flask_eventlib.state import state_of
from flask_eventlib.store import DeadLetter
from tests.conftest import REDIS_URL, Records, start_worker, stop_process, wait_for, wait_worker_ready
from tests.e2e.conftest import STEP_TIMEOUT_MS, serve
from tests.sample import create_app

pytestmark = pytest.mark.worker

#: The cookie that lets a browser in: what a logged-in admin's session stands for here.
ADMIN = "admin-" + uuid.uuid4().hex
#: How long the figures take to show: the worker writes them about once a second, the page
#: fetches them every two.
FIGURES_TIMEOUT_MS = 30_000


@dataclass
class Console:
    url: str
    app: Flask
    records: Records
    client: redis.Redis
    worker_log: Path

    def log(self, name: str, data: dict[str, Any] | None = None) -> str:
        with self.app.app_context():
            event_id = log(name, data)
            assert flush(10)
        return event_id

    def dead_letter(self, event_id: str) -> DeadLetter:
        store = state_of(self.app).store
        assert store is not None

        def found() -> DeadLetter | None:
            return next((d for d in store.dead_letters() if d.event_id == event_id), None)

        return wait_for(found, timeout=30, what=f"a dead letter of event {event_id} (worker log: {self.worker_log})")


@pytest.fixture(scope="module")
def console(redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    queue = f"eventlib-console-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    log_path = tmp_path_factory.mktemp("console") / "worker.log"
    app = create_app(
        EVENTLIB_BROKER_URL=REDIS_URL,
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        EVENTLIB_RATE_LIMIT=None,
        SAMPLE_RECORD_KEY=record_key,
        SECRET_KEY=uuid.uuid4().hex,
        EVENTLIB_CONSOLE=True,
        EVENTLIB_CONSOLE_ACCESS=lambda: request.cookies.get("admin") == ADMIN,
    )
    worker_config = {"EVENTLIB_CONSOLE_FIGURES": True}
    process = start_worker(
        REDIS_URL,
        queue,
        record_key,
        log_path,
        env={"SAMPLE_STORE_URL": store_url, "SAMPLE_CONFIG": json.dumps(worker_config)},
    )
    url, stop_server = serve(app)
    try:
        wait_worker_ready(process, log_path)
        yield Console(url, app, Records(redis_client, record_key), redis_client, log_path)
    finally:
        stop_server()
        stop_process(process)
        for key in redis_client.scan_iter(f"{record_key}*"):
            redis_client.delete(key)
        redis_client.delete(queue, f"_kombu.binding.{queue}")


@pytest.fixture
def admin(browser: Any, console: Console) -> Iterator[Any]:
    """A page whose browser carries the admin's cookie."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    context.add_cookies([{"name": "admin", "value": ADMIN, "url": console.url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert errors == []


def figure(page: Any, name: str) -> Any:
    return page.locator(f'#live [data-figure="{name}"]')


def number(page: Any, name: str) -> int:
    return int(figure(page, name).inner_text().replace(",", ""))


def test_the_overview_follows_the_events_without_a_reload(admin: Any, console: Console) -> None:
    page = admin
    page.goto(f"{console.url}/eventlib/")
    page.evaluate("window.notReloaded = true")
    logged, handled = number(page, "hour.logged"), number(page, "hour.handled")
    for n in range(5):
        console.log("deals.DealClick", {"deal_id": n})
    # DealClick has four handlers: two methods, on_click and the deals.* audit.
    expect(figure(page, "hour.logged")).to_have_text(str(logged + 5), timeout=FIGURES_TIMEOUT_MS)
    expect(figure(page, "hour.handled")).to_have_text(str(handled + 20), timeout=FIGURES_TIMEOUT_MS)
    row = page.locator('#event-figures tr[data-event="deals.DealClick"]')
    expect(row.locator('[data-figure="logged"]')).to_have_text(re.compile(r"[5-9]|\d\d+"))
    handler = page.locator('#handler-figures tr[data-handler="tests.sample.handlers.on_click"]')
    expect(handler.locator('[data-figure="p50"]')).to_have_text(re.compile(r"[\d.]+ (µs|ms|s)"))
    expect(figure(page, "workers")).not_to_have_text("0", timeout=FIGURES_TIMEOUT_MS)  # the worker's children
    expect(page.locator("#workers tbody tr").first).to_be_visible()
    expect(page.locator("#web-processes tbody tr").first).to_be_visible()  # this test process, which logged
    expect(figure(page, "queue.depth")).to_have_text(re.compile(r"^\d+$"))
    assert page.evaluate("window.notReloaded") is True  # the figures changed in the page it loaded


def test_a_dead_letter_is_opened_and_replayed_and_the_fixed_handler_runs(admin: Any, console: Console) -> None:
    page = admin
    fix = uuid.uuid4().hex
    event_id = console.log("ops.AlwaysFails", {"fix": fix})
    letter = console.dead_letter(event_id)  # `broken` failed its 3 attempts
    assert console.records.handlers_for(event_id) == ["AlwaysFails.fine"]

    page.goto(f"{console.url}/eventlib/")
    page.locator("header nav").get_by_role("link", name="Dead letters").click()
    group = page.locator("#groups tr", has_text="AlwaysFails.broken")
    expect(group.locator('[data-figure="count"]')).not_to_have_text("0")
    group.get_by_role("link", name="ops.AlwaysFails").click()
    page.locator(f'tr[data-letter="{letter.id}"]').get_by_role("link", name=letter.id).click()
    expect(page.locator("h1")).to_have_text(f"Dead letter {letter.id}")
    expect(page.locator("#traceback")).to_contain_text("RuntimeError: still broken")
    expect(page.locator("#data")).to_contain_text(f'"fix": "{fix}"')

    console.client.set(f"{console.records.key}:fixed:{fix}", "1")  # the fix is deployed
    page.get_by_role("button", name="Replay").click()
    expect(page.locator(".flash.ok")).to_contain_text("1 dead letter replayed")
    console.records.wait_handlers(event_id, 2)
    assert console.records.handlers_for(event_id) == ["AlwaysFails.fine", "AlwaysFails.broken"]
    assert event_id not in {d.event_id for d in state_of(console.app).store.dead_letters()}  # type: ignore[union-attr]

    # The event's page tells the story: the worker's attempts, the last one a success. The store's
    # dedup mark says "succeeded" at once; the attempts' traces, which give the handled time, reach
    # the console with each process's next batch of figures (about a second): wait for both.
    def told() -> bool:
        page.goto(f"{console.url}/eventlib/event?id={event_id}")
        outcome = page.locator('tr[data-handler="tests.sample.ops.events.AlwaysFails.broken"] [data-outcome]')
        succeeded = outcome.count() == 1 and outcome.inner_text() == "succeeded"
        return succeeded and "UTC" in page.locator('[data-step="handled"]').inner_text()

    wait_for(told, timeout=30, interval=0.5, what="the replayed handler's success and its time on the event's page")
    expect(page.locator('[data-step="published"]')).to_contain_text("UTC")
    expect(page.locator('[data-step="handled"]')).to_contain_text("UTC")


def test_without_passing_the_access_check_every_page_is_refused(browser: Any, console: Console) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        for path in ("/eventlib/", "/eventlib/deadletters", "/eventlib/live", "/eventlib/overview.json"):
            response = page.goto(f"{console.url}{path}")
            assert response is not None and response.status == 403, path
            expect(page.locator("#refused")).to_have_text("You may not use the flask-eventlib console.")
        context.add_cookies([{"name": "admin", "value": "guess", "url": console.url}])
        response = page.goto(f"{console.url}/eventlib/")
        assert response is not None and response.status == 403
    finally:
        context.close()


def test_a_replay_post_without_the_csrf_token_is_refused(admin: Any, console: Console) -> None:
    page = admin
    event_id = console.log("ops.AlwaysFails", {"fix": uuid.uuid4().hex})  # never fixed
    letter = console.dead_letter(event_id)
    page.goto(f"{console.url}/eventlib/deadletters/{letter.id}")
    post = """async ([url, body]) => (await fetch(url, {method: "POST", body: new URLSearchParams(body),
        redirect: "manual"})).status"""
    url = f"{console.url}/eventlib/deadletters/replay"
    assert page.evaluate(post, [url, {"id": letter.id}]) == 400  # what a forged form sends: no token
    assert page.evaluate(post, [url, {"id": letter.id, "eventlib_csrf": "forged"}]) == 403
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert page.evaluate(post, [url, {"id": letter.id, "eventlib_csrf": "x" + token}]) == 403
    attempts = int(console.client.get(f"{console.records.key}:attempts:{event_id}") or 0)
    assert attempts == 3  # never run again
    assert letter.id in {d.id for d in state_of(console.app).store.dead_letters()}  # type: ignore[union-attr]
    # A purge asks first; saying no sends nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Purge").click()
    assert letter.id in {d.id for d in state_of(console.app).store.dead_letters()}  # type: ignore[union-attr]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Purge").click()
    expect(page.locator(".flash.ok")).to_contain_text("1 dead letter purged")
    assert letter.id not in {d.id for d in state_of(console.app).store.dead_letters()}  # type: ignore[union-attr]
