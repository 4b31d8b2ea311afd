"""Browser tests: headless Chromium (Debian's, driven by Playwright) against a real server.

The sample app (``tests/sample``) is served by a real HTTP server in a thread, its events go
through Redis to a real ``celery worker`` process, and the handlers' records appear in Redis. The
pages load the JS client the way users do: ``{{ eventlib_script() }}``, i.e. the built file
``flask_eventlib/static/eventlib.js`` served by the blueprint.
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, render_template_string
from werkzeug.serving import make_server

from tests.conftest import REDIS_URL, Records, start_worker, stop_process, wait_worker_ready
from tests.sample import create_app

#: Debian's Chromium (``apt-get install chromium``; ``./dev.sh test`` installs it when missing).
CHROMIUM = os.environ.get("EVENTLIB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
#: Playwright's timeout for each step (a click, a navigation, an expectation), in milliseconds.
STEP_TIMEOUT_MS = 15_000

# Installed in every page before its own scripts: traps that fail a test if anything throws into
# the page or leaves a rejection unhandled.
ERROR_TRAPS = """
window.pageErrors = [];
addEventListener("error", (e) => pageErrors.push("error: " + e.message));
addEventListener("unhandledrejection", (e) => pageErrors.push("unhandled rejection: " + e.reason));
"""
# The test page: the client from its script tag, as users load it.
PAGE = """<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <title>eventlib e2e</title>
  <script>window.token = new URLSearchParams(location.search).get("token");</script>
  {{ eventlib_script() }}
</head>
<body>
  <button id="search" onclick="yipit.event.log('web.Search', {query: token, page: 'click'})">Search</button>
  <a id="away" href="/e2e/landing"
     onclick="yipit.event.log('web.Search', {query: token, page: 'before-navigation'})">Leave</a>
</body>
</html>
"""
LANDING = "<!doctype html><title>landing</title><p id=landed>Landed</p>"


@dataclass
class Site:
    """The served app, its worker, and what the handlers recorded."""

    url: str
    app: Flask
    records: Records
    worker_log: Path
    #: Headers and body of each request to /event/log, in the order the server read them.
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def page_url(self, token: str) -> str:
        return f"{self.url}/e2e/page?token={token}"

    def searches(self, token: str) -> list[dict[str, Any]]:
        """The records of web.Search events whose query is ``token``."""
        return [r for r in self.records.all() if r["name"] == "web.Search" and r["data"]["query"] == repr(token)]

    def tasks_done(self) -> int:
        """How many messages the worker has processed (Celery logs one line per task)."""
        return self.worker_log.read_text(errors="replace").count("succeeded in")


def serve(app: Flask) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on a free port of 127.0.0.1 in a thread; return its URL and a stop function."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="e2e-server", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    return f"http://127.0.0.1:{server.server_port}", stop


class _KeepRequests:
    """WSGI middleware keeping the headers and the body of each request to ``path``."""

    def __init__(self, wsgi_app: Any, path: str, kept: list[tuple[dict[str, str], bytes]]) -> None:
        self.wsgi_app, self.path, self.kept = wsgi_app, path, kept

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == self.path:
            length = environ.get("CONTENT_LENGTH")
            stream = environ["wsgi.input"]
            body = (
                stream.read(int(length)) if length else stream.read() if environ.get("wsgi.input_terminated") else b""
            )
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            headers = {
                key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
            }
            self.kept.append((headers, body))
        return self.wsgi_app(environ, start_response)


@pytest.fixture(scope="session")
def site(redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    queue = f"eventlib-e2e-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    log_path = tmp_path_factory.mktemp("e2e") / "worker.log"
    app = create_app(
        EVENTLIB_BROKER_URL=REDIS_URL,
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        EVENTLIB_RATE_LIMIT=None,
        SAMPLE_RECORD_KEY=record_key,
    )
    requests: list[tuple[dict[str, str], bytes]] = []
    # Kept by a middleware around the app, as the endpoint's front door sees them (the app's own
    # request hooks do not run for the endpoint).
    app.wsgi_app = _KeepRequests(app.wsgi_app, "/event/log", requests)  # type: ignore[method-assign]

    app.add_url_rule("/e2e/page", "e2e_page", lambda: render_template_string(PAGE))
    app.add_url_rule("/e2e/landing", "e2e_landing", lambda: LANDING)
    process = start_worker(REDIS_URL, queue, record_key, log_path, env={"SAMPLE_STORE_URL": store_url})
    url, stop_server = serve(app)
    try:
        wait_worker_ready(process, log_path)
        yield Site(url, app, Records(redis_client, record_key), log_path, requests)
    finally:
        stop_server()
        stop_process(process)
        for key in redis_client.scan_iter(f"{record_key}*"):
            redis_client.delete(key)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"No Chromium at {CHROMIUM}. ./dev.sh test installs Debian's (apt-get install chromium); "
            "or point EVENTLIB_TEST_CHROMIUM at a Chromium or Chrome binary."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page in a fresh browser context, with the errors it reported."""

    page: Any
    #: Uncaught exceptions and unhandled rejections Playwright saw.
    errors: list[str]

    def page_errors(self) -> list[str]:
        """Errors the page's own traps caught, and those Playwright saw."""
        return [*self.page.evaluate("window.pageErrors"), *self.errors]


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context()
    context.set_default_timeout(STEP_TIMEOUT_MS)
    context.add_init_script(ERROR_TRAPS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield Tab(page, errors)
    finally:
        context.close()


@pytest.fixture
def token() -> str:
    """A value no other test logs: the records of this test's events carry it."""
    return uuid.uuid4().hex
