"""Fixtures: a real Redis, real Celery worker processes (Redis and RabbitMQ), sample apps.

The README's test command (``./dev.sh test``) makes sure Redis and RabbitMQ are reachable and
exports their URLs; running pytest by hand uses the same defaults as this machine's services.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from flask import Flask

from tests.sample import create_app

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("EVENTLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("EVENTLIB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
BROKERS = {"redis": REDIS_URL, "amqp": AMQP_URL}
T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)  # polling interval with a deadline, not a wait for work


@pytest.fixture
def tmp_package(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` on ``sys.path``; modules imported from it are forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in set(sys.modules) - before:
        del sys.modules[name]


def clean_up_run(client: redis.Redis, record_key: str, app: Flask, queue: str) -> None:
    """Delete a run's Redis keys and its queue (on Redis, with the bindings kombu keeps for it)."""
    for key in client.scan_iter(f"{record_key}*"):
        client.delete(key)
    celery = app.extensions["eventlib"].celery
    if str(celery.conf.broker_url).startswith("amqp"):
        with celery.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
    elif queue:
        forget_queue(client, queue)


def forget_queue(client: redis.Redis, queue: str) -> None:
    """Delete a Celery queue on Redis and the binding sets kombu keeps for it (they never expire)."""
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


#: The names the suite gives its Redis keys and queues (``bench-`` for tests/test_bench.py's runs).
_TEST_KEYS = ("eventlib-*", "_kombu.binding*.eventlib-*", "_kombu.binding*.bench-*")


@pytest.fixture(scope="session", autouse=True)
def _leave_redis_as_found() -> Iterator[None]:
    """At the end of the session, delete the keys without a TTL that the suite's tests left in its
    Redis db (a worker declares its queue's binding sets, a test killed mid-way leaves its queue):
    ``./dev.sh test`` leaves the db as it found it. Keys that were there before are kept."""
    client = redis.Redis.from_url(REDIS_URL)

    def lasting() -> set[bytes]:
        found = {key for pattern in _TEST_KEYS for key in client.scan_iter(match=pattern, count=1000)}
        with client.pipeline(transaction=False) as pipe:
            for key in found:
                pipe.ttl(key)
            return {key for key, ttl in zip(found, pipe.execute(), strict=True) if ttl == -1}

    try:
        before = lasting()
    except redis.RedisError:
        yield  # no Redis: the tests that need one say so
        return
    yield
    with contextlib.suppress(redis.RedisError):
        left = lasting() - before
        for start in range(0, len(left), 500):
            client.delete(*list(left)[start : start + 500])


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(
            f"No Redis at {REDIS_URL} ({exc}). Run the tests with ./dev.sh test, which starts a "
            "private redis-server when none is reachable, or set EVENTLIB_TEST_REDIS_URL."
        )
    return client


class Records:
    """The entries sample handlers appended to one Redis list."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.client.lrange(self.key, 0, -1)]

    def for_id(self, event_id: str) -> list[dict[str, Any]]:
        return [entry for entry in self.all() if entry["id"] == event_id]

    def handlers_for(self, event_id: str) -> list[str]:
        return [entry["handler"] for entry in self.for_id(event_id)]

    def wait_handlers(self, event_id: str, count: int, timeout: float = 30.0) -> list[str]:
        """Wait until ``count`` handlers recorded the event; return their names in order."""
        return wait_for(
            lambda: len(self.for_id(event_id)) >= count and self.handlers_for(event_id),
            timeout=timeout,
            what=f"{count} handler records for event {event_id}",
        )


@pytest.fixture
def records(redis_client: redis.Redis) -> Iterator[Records]:
    key = f"eventlib-test:records:{uuid.uuid4().hex}"
    yield Records(redis_client, key)
    # The list, and what the sample handlers keep beside it (attempt counters, fixed flags).
    for found in redis_client.scan_iter(match=f"{key}*"):
        redis_client.delete(found)


@pytest.fixture
def eager_app(records: Records) -> Flask:
    """The sample app processing events in the caller (no broker involved)."""
    return create_app(
        EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_RETRIES=0, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key
    )


@dataclass
class Worker:
    """A real ``celery worker`` process for the sample app, and the app to log events from."""

    broker: str
    broker_url: str
    queue: str
    records: Records
    log_path: Path
    #: The worker process (``None`` in eager mode, where handlers run in this process).
    process: subprocess.Popen[bytes] | None
    app: Flask
    store_url: str

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


#: The pool children of each worker :func:`start_worker` starts (its ``--concurrency``).
WORKER_CHILDREN = 2


def start_worker(
    broker_url: str,
    queue: str,
    record_key: str,
    log_path: Path,
    *extra: str,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a worker process for the sample app (``tests/sample/worker.py`` reads the settings)."""
    env = {
        **os.environ,
        "SAMPLE_BROKER_URL": broker_url,
        "SAMPLE_QUEUE": queue,
        "SAMPLE_RECORD_KEY": record_key,
        "EVENTLIB_TEST_REDIS_URL": REDIS_URL,
        **(env or {}),
    }
    # The ordinary worker command, no -Q: the extension makes the worker consume the events queue.
    command = command or [sys.executable, "-m", "celery", "-A", "tests.sample.worker:celery", "worker"]
    command = [*command, "--loglevel=INFO", f"--concurrency={WORKER_CHILDREN}", "--hostname", f"{queue}@%h", *extra]
    with log_path.open("wb") as output:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def alive(pid: int) -> bool:
    """Whether the process ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def wait_worker_ready(worker_process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    def ready() -> bool:
        if worker_process.poll() is not None:
            pytest.fail(f"The worker exited with {worker_process.returncode}:\n{log_path.read_text()}")
        return " ready." in log_path.read_text(errors="replace")

    wait_for(ready, timeout=timeout, what=f"the worker to be ready (log: {log_path})")


def _start_sample_worker(
    broker: str, redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory, stack: contextlib.ExitStack
) -> Worker:
    """A real worker process for the sample app on ``broker``, stopped when ``stack`` closes."""
    broker_url = BROKERS[broker]
    queue = f"eventlib-test-{broker}-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    log_path = tmp_path_factory.mktemp("worker") / f"{broker}.log"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    app = create_app(
        EVENTLIB_BROKER_URL=broker_url, EVENTLIB_QUEUE=queue, SAMPLE_RECORD_KEY=record_key, EVENTLIB_STORE_URL=store_url
    )
    try:
        with app.extensions["eventlib"].celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(
            f"No {broker} broker at {broker_url} ({exc}). Run the tests with ./dev.sh test, which "
            "starts or installs the brokers, or set EVENTLIB_TEST_REDIS_URL / EVENTLIB_TEST_AMQP_URL."
        )
    stack.callback(clean_up_run, redis_client, record_key, app, queue)
    process = start_worker(broker_url, queue, record_key, log_path, env={"SAMPLE_STORE_URL": store_url})
    stack.callback(stop_process, process)
    wait_worker_ready(process, log_path)
    return Worker(broker, broker_url, queue, Records(redis_client, record_key), log_path, process, app, store_url)


def _eager_sample(
    redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory, stack: contextlib.ExitStack
) -> Worker:
    """The sample app in eager mode, shaped like a worker: its log is the flask_eventlib logger's."""
    record_key = f"eventlib-test:records:eager-{uuid.uuid4().hex[:8]}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    log_path = tmp_path_factory.mktemp("worker") / "eager.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("flask_eventlib")
    logger.addHandler(handler)
    stack.callback(logger.removeHandler, handler)
    stack.callback(handler.close)
    app = create_app(
        EVENTLIB_ALWAYS_EAGER=True,
        EVENTLIB_BROKER_URL="memory://",
        SAMPLE_RECORD_KEY=record_key,
        EVENTLIB_STORE_URL=store_url,
    )
    stack.callback(clean_up_run, redis_client, record_key, app, "")
    return Worker("eager", "memory://", "", Records(redis_client, record_key), log_path, None, app, store_url)


@pytest.fixture(scope="session")
def sample_workers(
    redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Worker]]:
    """Start (once per session and broker) and return the sample app's worker for a broker."""
    started: dict[str, Worker] = {}
    with contextlib.ExitStack() as stack:

        def get(broker: str) -> Worker:
            if broker not in started:
                if broker == "eager":
                    started[broker] = _eager_sample(redis_client, tmp_path_factory, stack)
                else:
                    started[broker] = _start_sample_worker(broker, redis_client, tmp_path_factory, stack)
            return started[broker]

        yield get


@pytest.fixture(scope="session", params=sorted(BROKERS))
def worker(request: pytest.FixtureRequest, sample_workers: Callable[[str], Worker]) -> Worker:
    """A real worker process on each broker (Redis and RabbitMQ), for what only a process shows."""
    return sample_workers(request.param)


@pytest.fixture(scope="session", params=["eager", *sorted(BROKERS)])
def delivery(request: pytest.FixtureRequest, sample_workers: Callable[[str], Worker]) -> Worker:
    """Each way handlers run: eager (in the caller), a real worker on Redis, one on RabbitMQ.

    A delivery contract is written once against this fixture and holds for all three.
    """
    return sample_workers(request.param)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.chaos.conftest import REPORT

    if REPORT:
        terminalreporter.section("chaos figures")
        for line in REPORT:
            terminalreporter.write_line(line)


#: Makes the sample app with extra settings (``make_door_app``, ``make_view_app``).
AppFactory = Callable[..., Flask]


def app_factory(records: Records, through_flask: bool) -> AppFactory:
    """The sample app in eager mode, recording into ``records``, with its browser endpoint at the
    front door or (``through_flask``) answered by the view, through Flask's dispatch."""

    def make(eventlib: Any = None, **config: Any) -> Flask:
        settings = {
            "EVENTLIB_ALWAYS_EAGER": True,
            "EVENTLIB_BROKER_URL": "memory://",
            "EVENTLIB_HTTP_THROUGH_FLASK": through_flask,
            **config,
        }
        return create_app(eventlib, SAMPLE_RECORD_KEY=records.key, **settings)

    return make


@pytest.fixture
def make_view_app(records: Records) -> AppFactory:
    """The sample app with the browser endpoint answered through Flask's dispatch, by the view."""
    return app_factory(records, through_flask=True)


@pytest.fixture
def make_door_app(records: Records) -> AppFactory:
    """The sample app with the browser endpoint answered at the front door (the default)."""
    return app_factory(records, through_flask=False)
