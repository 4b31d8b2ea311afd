"""Benchmarks 1, 2 (total work) and 6: the app called in this process, as a WSGI server calls it.

``python -m bench.inprocess down '<config JSON>' <requests>`` runs benchmark 6 in a process of its
own: with the broker unreachable its sender never empties, and the process must not wait for it
at exit.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from flask_eventlib import flush, log

from .app import RAW_BATCH_TASK, create_app, payload

#: Events per request in benchmarks 1, 2 and 6.
PER_REQUEST = 10


def _written(data: bytes) -> None:
    """The ``write()`` a WSGI server gives the app: the bench's apps never call it."""


class Direct:
    """Calls a Flask app the way a WSGI server does, without sockets or a test client."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, path: str, method: str = "GET") -> int:
        status: list[str] = []
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

        def start_response(
            line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            status.append(line)
            return _written

        body = self.app(environ, start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return int(status[0].split()[0])


def timed_app(**config: Any) -> tuple[Flask, list[int]]:
    """The bench app plus ``/timed/log/<n>`` and ``/timed/delay/<n>``, which time each call in ns."""
    app, _ = create_app(**config)
    samples: list[int] = []
    _, raw_task = app.extensions["bench"]
    clock = time.perf_counter_ns

    @app.get("/timed/log/<int:count>")
    def timed_log(count: int) -> tuple[str, int]:
        data = payload(current_app.config, 0)
        for _ in range(count):
            started = clock()
            log("bench.Ping", data)
            samples.append(clock() - started)
        return "", 204

    @app.get("/timed/delay/<int:count>")
    def timed_delay(count: int) -> tuple[str, int]:
        data = payload(current_app.config, 0)
        for _ in range(count):
            started = clock()
            raw_task.delay(data)
            samples.append(clock() - started)
        return "", 204

    return app, samples


def _flush(app: Flask) -> None:
    with app.app_context():
        if not flush(timeout=60):
            raise RuntimeError("flask_eventlib.flush() timed out: is the broker up?")


@dataclass
class CallTimes:
    """Benchmark 1: durations (seconds) of single ``log()`` and ``delay()`` calls in requests."""

    log: list[float]
    delay: list[float]
    #: Each round's (log, delay) durations, in the order they ran.
    rounds: list[tuple[list[float], list[float]]]


def log_vs_delay(app: Flask, samples: list[int], requests: int, rounds: int = 5) -> CallTimes:
    """Time every ``log()`` in ``requests`` requests of ``PER_REQUEST`` events, then every raw ``delay()``.

    The log requests run back to back, so the background sender publishes the previous requests'
    events while the next request logs (the harshest case for the p99); the delay requests run
    after a ``flush()``, so nothing competes with them.
    """
    call = Direct(app)
    for path in ("/timed/log/10", "/timed/delay/10"):  # warm up: connections, imports, caches
        for _ in range(20):
            call(path)
    _flush(app)
    result = CallTimes([], [], [])
    per_round = max(1, requests // rounds)
    for _ in range(rounds):
        measured: list[list[float]] = []
        for path in ("/timed/log/10", "/timed/delay/10"):
            samples.clear()
            for _ in range(per_round):
                call(path)
            measured.append([ns / 1e9 for ns in samples])
            _flush(app)
        result.log.extend(measured[0])
        result.delay.extend(measured[1])
        result.rounds.append((measured[0], measured[1]))
    return result


def log_outside_request(app: Flask, count: int) -> list[float]:
    """Durations (seconds) of ``count`` single ``log()`` calls in an app context, no request:
    with ``EVENTLIB_DURABILITY = "machine"`` each one syncs the local log before it returns."""
    data = payload(app.config, 0)
    clock = time.perf_counter_ns
    times = []
    with app.app_context():
        for _ in range(20):
            log("bench.Ping", data)  # warm up: the segment, connections
        _flush(app)
        for _ in range(count):
            started = clock()
            log("bench.Ping", data)
            times.append((clock() - started) / 1e9)
    _flush(app)
    return times


@dataclass
class RequestWork:
    """Benchmark 2 (total work): seconds per request, in this process."""

    #: A request logging 10 events, plus the wait for the sender to publish them (``flush()``).
    log_and_publish: list[float]
    #: The same request logging none.
    empty: list[float]
    #: The same request doing 10 raw ``delay()`` calls.
    delay: list[float]


def request_work(app: Flask, requests: int) -> RequestWork:
    """Time each kind of request in turn, round-robin, so drift touches them alike."""
    call = Direct(app)
    state = app.extensions["eventlib"]
    for _ in range(20):
        call("/log/10")
        call("/delay/10")
    _flush(app)
    clock = time.perf_counter
    work = RequestWork([], [], [])
    for _ in range(requests):
        started = clock()
        call(f"/log/{PER_REQUEST}")
        state.sender.flush(60)
        work.log_and_publish.append(clock() - started)
        started = clock()
        call("/log/0")
        work.empty.append(clock() - started)
        started = clock()
        call(f"/delay/{PER_REQUEST}")
        work.delay.append(clock() - started)
    return work


def preload_events(app: Flask, events: int, per_message: int = PER_REQUEST, pace: float | None = None) -> int:
    """Log ``events`` events in requests of 10, publishing each request's events as one message
    (as at a modest request rate), or those of ``per_message // 10`` requests together (as the
    sender does under load: one message for the events of the requests that ended meanwhile, at
    most ``EVENTLIB_MAX_EVENTS_PER_MESSAGE``); return the messages.

    :param pace: instead, a request every ``pace`` seconds and no ``flush()``: the sender makes
        the messages as it would for an app at that rate (``per_message`` is not used); the
        returned count is then only an estimate (the queue's length tells).
    """
    call = Direct(app)
    state = app.extensions["eventlib"]
    requests = max(1, per_message // PER_REQUEST)
    if pace is not None:
        due = time.perf_counter()
        for _ in range(events // PER_REQUEST):
            due += pace
            call(f"/log/{PER_REQUEST}")
            left = due - time.perf_counter()
            if left > 0:
                time.sleep(left)  # the app's pace, not a wait for work
        _flush(app)
        return events // PER_REQUEST
    for done in range(1, events // PER_REQUEST + 1):
        call(f"/log/{PER_REQUEST}")
        if done % requests == 0:
            state.sender.flush(60)
    _flush(app)
    return -(-events // (requests * PER_REQUEST))


def preload_raw(app: Flask, events: int, per_task: int = 1) -> None:
    """Send ``events`` raw tasks, one per event, as the raw baseline does; with ``per_task`` > 1,
    tasks of the raw batch task, each with the data of ``per_task`` events (the ceiling row)."""
    celery, raw_task = app.extensions["bench"]
    if per_task == 1:
        for n in range(events):
            raw_task.delay(payload(app.config, n))
        return
    batch = celery.tasks[RAW_BATCH_TASK]
    for start in range(0, events, per_task):
        batch.delay([payload(app.config, n) for n in range(start, min(events, start + per_task))])


# -- benchmark 6, in a process of its own -----------------------------------------------------------


def broker_down(config: dict[str, Any], requests: int) -> dict[str, Any]:
    """``log()`` times in requests while the broker is unreachable, and one raw ``delay()`` against it."""
    app, samples = timed_app(**config)
    call = Direct(app)
    warmup = 20
    for _ in range(warmup):
        call("/timed/log/10")
    samples.clear()
    started = time.perf_counter()
    for _ in range(requests):
        call("/timed/log/10")
    logging_took = time.perf_counter() - started
    spool = app.extensions["eventlib"].sender.spool
    after_logging = spool.pending() if spool is not None else 0
    time.sleep(2.0)  # the observation window for how much the sender spooled, not a wait for work
    after_2s = spool.pending() if spool is not None else 0
    return {
        "log": [ns / 1e9 for ns in samples],
        "logged": (warmup + requests) * PER_REQUEST,
        "logging_took": logging_took,
        "spooled_after_logging": after_logging,
        "spooled_after_2s": after_2s,
        "delay_down": _delay_once(app),
    }


def _delay_once(app: Flask, timeout: float = 30.0) -> dict[str, Any]:
    """One raw ``delay()`` against the dead broker, in a thread, given up on after ``timeout`` s."""
    _, raw_task = app.extensions["bench"]
    outcome: dict[str, Any] = {"seconds": None, "error": None}

    def attempt() -> None:
        started = time.perf_counter()
        try:
            raw_task.delay(payload(app.config, 0))
        except Exception as exc:
            outcome["error"] = type(exc).__name__
        outcome["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        outcome["seconds"], outcome["error"] = timeout, f"still blocked after {timeout:.0f}s"
    return outcome


def _main(argv: Iterable[str]) -> None:
    which, config, requests = list(argv)
    if which != "down":
        raise SystemExit(f"unknown benchmark {which!r}")
    result = broker_down(json.loads(config), int(requests))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # The sender still holds events for the unreachable broker: skip the at-exit flush (it would
    # wait for a broker that never comes back); the spool file is the run's to delete.
    os._exit(0)


if __name__ == "__main__":
    _main(sys.argv[1:])
