"""End to end tests of ``example_app`` with real processes.

A real ``celery worker`` for the example runs the handlers, in a temporary instance folder that
holds its SQLite database and (unless Redis is the broker) the embedded filesystem broker; the
test logs events through the Flask test client of an app built from the same environment, and
polls the dashboard until the worker has counted them. The last test runs ``python -m example_app``
itself and talks to it over HTTP.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis
from flask import Flask

from example_app import ENVIRONMENT_PREFIXES, create_app, redis_counters, store
from tests.conftest import REDIS_URL, ROOT, stop_process, wait_for, wait_worker_ready

pytestmark = pytest.mark.worker


def is_setting(variable: str) -> bool:
    """Whether the example reads the environment variable ``variable`` (a test sets them itself)."""
    return variable.startswith(ENVIRONMENT_PREFIXES) or variable == "PORT"


def variable(key: str) -> str:
    """The environment variable that sets the config key ``key`` (``from_prefixed_env()``'s name)."""
    return key if key == "PORT" else f"FLASK_{key}"


def example_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with the example's settings replaced by ``settings`` (config keys)."""
    env = {key: value for key, value in os.environ.items() if not is_setting(key)}
    return {**env, **{variable(key): value for key, value in settings.items()}}


def create_example_app(settings: dict[str, str]) -> Flask:
    """The app a process whose environment has ``settings`` builds (what the worker builds)."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if is_setting(key)]:
            patch.delenv(key)
        for key, value in settings.items():
            patch.setenv(variable(key), value)
        return create_app()


def start_example_worker(settings: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``celery -A example_app.worker:celery worker`` in its own process group."""
    command = [sys.executable, "-m", "celery", "-A", "example_app.worker:celery", "worker"]
    command += ["--loglevel=INFO", "--concurrency=1", "--without-mingle", "--without-gossip"]
    command += ["--hostname", f"example-test-{uuid.uuid4().hex[:8]}@%h"]
    with log_path.open("wb") as output:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=example_env(settings),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class Example:
    """A running example worker and an app of the same settings to log events from."""

    app: Flask
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def database(self) -> str:
        return str(self.app.config["EXAMPLE_DATABASE"])

    def dashboard(self) -> dict[str, Any]:
        response = self.app.test_client().get("/dashboard.json")
        assert response.status_code == 200
        return response.get_json()  # type: ignore[no-any-return]

    def wait_dashboard(self, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Poll the dashboard until ``check`` accepts it (the worker log is in the failure)."""

        def ready() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                pytest.fail(f"The worker exited with {self.process.returncode}:\n{self.log_text()}")
            data = self.dashboard()
            return data if check(data) else None

        return wait_for(ready, timeout=20, what=f"{what} (worker log: {self.log_path})")

    def wait_stored(self, event_id: str) -> store.StoredEvent:
        return wait_for(
            lambda: store.get_event(event_id, path=self.database),
            timeout=20,
            what=f"the worker to store event {event_id} (worker log: {self.log_path})",
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_example(settings: dict[str, str], log_path: Path) -> Iterator[Example]:
    """Start a worker for ``settings``, wait until it is ready, yield, then stop it."""
    app = create_example_app(settings)
    process = start_example_worker(settings, log_path)
    try:
        wait_worker_ready(process, log_path, timeout=30)
        yield Example(app, process, log_path)
    finally:
        stop_process(process)
        app.extensions["eventlib"].celery.close()
        redis_counters.close(app)


@pytest.fixture(scope="module")
def filesystem_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """A worker on the embedded filesystem broker, in a temporary instance folder."""
    folder = tmp_path_factory.mktemp("example-filesystem")
    settings = {"EXAMPLE_INSTANCE_PATH": str(folder / "instance")}
    with running_example(settings, folder / "worker.log") as example:
        yield example


def redis_settings(instance: Path, kind: str) -> dict[str, str]:
    """Settings for the example on Redis (broker, counters, dedup marks) under a unique key prefix."""
    name = f"{kind}-{uuid.uuid4().hex[:8]}"
    prefix = f"{name}:"
    settings = {
        "EXAMPLE_INSTANCE_PATH": str(instance),
        "EVENTLIB_BROKER_URL": REDIS_URL,
        "EVENTLIB_QUEUE": name,
        # flask-eventlib's dedup marks, under the prefix too so that they are cleaned up with it.
        "EVENTLIB_STORE_URL": f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}eventlib:",
        "EXAMPLE_REDIS_URL": REDIS_URL,
        "EXAMPLE_REDIS_PREFIX": prefix,
    }
    return settings


def forget_redis_example(client: redis.Redis, settings: dict[str, str]) -> None:
    """Delete the queue, kombu's binding and every key under the prefix of :func:`redis_settings`."""
    name = settings["EVENTLIB_QUEUE"]
    client.delete(name, f"_kombu.binding.{name}", *client.scan_iter(match=f"{settings['EXAMPLE_REDIS_PREFIX']}*"))


@pytest.fixture
def redis_example(redis_client: redis.Redis, tmp_path: Path) -> Iterator[tuple[Example, redis.Redis, str]]:
    """A worker with Redis as the broker and the Redis counters on, under a unique prefix."""
    settings = redis_settings(tmp_path / "instance", "example-test")
    prefix = settings["EXAMPLE_REDIS_PREFIX"]
    try:
        with running_example(settings, tmp_path / "worker.log") as example:
            yield example, redis_client, prefix
    finally:
        forget_redis_example(redis_client, settings)


# -- through the Flask test client, with a worker process -------------------------------------


def test_clicks_are_counted_by_the_worker(filesystem_example: Example) -> None:
    client = filesystem_example.app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'action="/deals/7/click"' in page and 'action="/deals/42/buy"' in page
    event_ids = []
    for deal_id in (7, 7, 7, 42):
        response = client.post(f"/deals/{deal_id}/click")
        assert (
            response.status_code == 303
            and response.headers["Location"] == f"/?logged=deals.DealClick&event={response.headers['X-Event-Id']}"
        )
        event_ids.append(response.headers["X-Event-Id"])
    assert client.post("/deals/12345/click").status_code == 404

    data = filesystem_example.wait_dashboard(
        lambda data: data["clicks"]["7"] >= 3 and data["clicks"]["42"] >= 1, "4 clicks counted"
    )
    assert data["clicks"] == {"7": 3, "42": 1, "99": 0}
    assert data["redis_clicks"] is None  # EXAMPLE_REDIS_URL is not set: SQLite only
    # The rows come from a function handler, which runs after the counting method handler.
    for event_id in event_ids:
        filesystem_example.wait_stored(event_id)
    rows = store.events("deals.DealClick", path=filesystem_example.database)
    assert sorted(row.id for row in rows) == sorted(event_ids)
    assert sorted(row.data["deal_id"] for row in rows) == [7, 7, 7, 42]
    assert "Two coffees for one" in client.get("/dashboard").get_data(as_text=True)


def test_signup_validation_error_is_shown_and_nothing_is_stored(filesystem_example: Example) -> None:
    client = filesystem_example.app.test_client()
    bad = f"not-an-email-{uuid.uuid4().hex[:8]}"
    response = client.post("/accounts/signup", data={"email": bad})
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert f"{bad!r} is not a valid email address." in page
    assert f'value="{bad}"' in page  # the form is shown again, filled in

    # A valid sign-up logged after the refused one: once the worker stored it, the refused
    # one would have been stored too had it been sent.
    good = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post("/accounts/signup", data={"email": f"  {good.upper()} "})
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard"
    row = filesystem_example.wait_stored(response.headers["X-Event-Id"])
    assert row.name == "accounts.SignedUp" and row.data == {"email": good}  # clean()'s new data
    signups = store.events("accounts.SignedUp", path=filesystem_example.database)
    assert [row.data for row in signups] == [{"email": good}]
    assert filesystem_example.wait_dashboard(lambda data: data["signups"] >= 1, "1 sign-up")["signups"] == 1


def test_purchase_schema_converts_the_form_strings(filesystem_example: Example) -> None:
    client = filesystem_example.app.test_client()
    response = client.post("/deals/42/buy", data={"amount": "19.9", "coupon": "SPRING"})
    assert response.status_code == 303
    row = filesystem_example.wait_stored(response.headers["X-Event-Id"])
    assert row.name == "deals.Purchase"
    # "42" from the URL became the int 42; "19.9" became Decimal("19.90") (stored as its string).
    assert row.data == {"deal_id": 42, "amount": "19.90", "coupon": "SPRING"}
    assert type(row.data["deal_id"]) is int
    data = filesystem_example.wait_dashboard(lambda data: data["purchases"] >= 1, "1 purchase")
    assert (data["purchases"], data["revenue"]) == (1, "19.90")

    refused = client.post("/deals/forty-two/buy", data={"amount": "19.90"})
    assert refused.status_code == 400
    assert "deal_id: Not a valid integer." in refused.get_data(as_text=True)


def test_each_action_shows_its_result(filesystem_example: Example) -> None:
    client = filesystem_example.app.test_client()
    response = client.post("/deals/99/buy", data={"amount": "12.00"}, follow_redirects=True)
    event_id = response.history[0].headers["X-Event-Id"]
    page = response.get_data(as_text=True)
    assert f"Logged <code>deals.Purchase</code> (event {event_id})" in page
    assert '<link rel="icon" href="data:,">' in page  # no favicon.ico request to answer 404
    # The dashboard follows the latest events as well as the counts (its script polls this).
    data = filesystem_example.wait_dashboard(
        lambda data: any(e["data"].get("amount") == "12.00" for e in data["latest"]), "the purchase among the latest"
    )
    assert data["latest"][0]["name"] == "deals.Purchase"
    assert "refresh();" in client.get("/dashboard").get_data(as_text=True)  # at once on load, not after a tick


def test_redis_broker_and_redis_counters(redis_example: tuple[Example, redis.Redis, str]) -> None:
    example, redis_client, prefix = redis_example
    client = example.app.test_client()
    for deal_id in (7, 99, 7):
        assert client.post(f"/deals/{deal_id}/click").status_code == 303

    data = example.wait_dashboard(
        lambda data: sum(data["clicks"].values()) >= 3 and sum(data["redis_clicks"].values()) >= 3,
        "3 clicks counted in SQLite and in Redis",
    )
    assert data["clicks"] == {"7": 2, "42": 0, "99": 1}
    assert data["redis_clicks"] == {"7": 2, "42": 0, "99": 1}
    assert redis_client.get(f"{prefix}clicks:7") == b"2"
    # Counted by the "*" handler, the last to run for each event.
    events_key = f"{prefix}events:deals.DealClick"
    wait_for(lambda: int(redis_client.get(events_key) or 0) >= 3, timeout=20, what=f"{events_key} at 3")
    assert redis_client.get(events_key) == b"3"
    # The broker is Redis: the instance folder has no filesystem broker.
    assert not (Path(example.app.instance_path) / "eventlib-broker").exists()


# -- python -m example_app ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, method: str = "GET") -> tuple[int, bytes] | None:
    """``(status, body)`` of a request (redirects followed), or None if nothing answers."""
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except OSError:  # refused: not listening yet
        return None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Runner:
    """A running ``python -m example_app``, in a process group of its own (its worker included)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    base: str

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, path: str, method: str = "GET") -> tuple[int, bytes] | None:
        if self.process.poll() is not None:
            pytest.fail(f"python -m example_app exited with {self.process.returncode}:\n{self.log_text()}")
        return http(f"{self.base}{path}", method)

    def worker_pid(self) -> int:
        match = re.search(r"Celery worker started \(pid (\d+)\)", self.log_text())
        assert match is not None, self.log_text()
        return int(match.group(1))

    def wait_exit(self) -> int:
        """Wait for the runner to exit, then for its whole process group (worker and pool) to go."""
        status = self.process.wait(timeout=30)
        wait_for(lambda: not group_alive(self.process.pid), timeout=10, what="the worker to exit")
        return status


@contextmanager
def running_runner(tmp_path: Path) -> Iterator[Runner]:
    """Start ``python -m example_app`` on a free port and wait until its server answers."""
    port = free_port()
    log_path = tmp_path / "example.log"
    env = example_env({"EXAMPLE_INSTANCE_PATH": str(tmp_path / "instance"), "PORT": str(port)})
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "example_app"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    runner = Runner(process, log_path, f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: runner.request("/"), timeout=30, what=f"the server at {runner.base}")
        yield runner
    finally:
        stop_process(process)
        if group_alive(process.pid):  # the runner is gone but left its worker: a failure, clean up
            os.killpg(process.pid, signal.SIGKILL)


def test_python_m_example_app_serves_counts_and_stops_its_worker(tmp_path: Path) -> None:
    with running_runner(tmp_path) as runner:
        assert runner.request("/") == (200, ANY)
        status, body = runner.request("/deals/7/click", method="POST") or (0, b"")
        assert status == 200 and b"Two coffees for one" in body  # the 303 led back to the deals

        def clicks() -> dict[str, int] | None:
            found = runner.request("/dashboard.json")
            data = json.loads(found[1]) if found is not None and found[0] == 200 else {}
            return data["clicks"] if data.get("clicks", {}).get("7") else None

        counted = wait_for(clicks, timeout=30, what=f"the click on the dashboard (log: {runner.log_path})")
        assert counted == {"7": 1, "42": 0, "99": 0}
        text = runner.log_text()
        assert f"Open {runner.base}/" in text
        assert f"Broker: the embedded filesystem broker in {tmp_path / 'instance'}" in text
        worker_pid = runner.worker_pid()
        assert os.getpgid(worker_pid) == runner.process.pid

        runner.process.send_signal(signal.SIGTERM)  # the runner only, not its group
        assert runner.wait_exit() == 0, runner.log_text()
        text = runner.log_text()
        assert f"Stopping the Celery worker (pid {worker_pid})" in text
        assert "Warm shutdown" in text and "Killing the worker" not in text


def test_python_m_example_app_stops_when_its_worker_dies(tmp_path: Path) -> None:
    with running_runner(tmp_path) as runner:
        # A worker still starting up ignores SIGQUIT: wait until it is ready (its log is ours).
        wait_for(lambda: " ready." in runner.log_text(), timeout=30, what=f"the worker (log: {runner.log_path})")
        os.kill(runner.worker_pid(), signal.SIGQUIT)  # Celery's cold shutdown: at once
        assert runner.wait_exit() == 1, runner.log_text()
        assert "The Celery worker exited" in runner.log_text()


def test_python_m_example_app_stops_a_worker_that_is_still_starting(tmp_path: Path) -> None:
    with running_runner(tmp_path) as runner:
        runner.process.send_signal(signal.SIGTERM)  # as soon as the server answers: the worker may be starting
        assert runner.wait_exit() == 0, runner.log_text()
        assert "Killing the worker" not in runner.log_text()


def test_python_m_example_app_says_how_to_choose_another_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = example_env({"EXAMPLE_INSTANCE_PATH": str(tmp_path / "instance"), "PORT": str(port)})
        result = subprocess.run(
            [sys.executable, "-m", "example_app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"Port {port} is in use" in result.stderr and f"PORT={port + 1} ./dev.sh example" in result.stderr
    assert "Celery worker started" not in result.stdout
