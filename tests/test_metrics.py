"""Prometheus metrics (``EVENTLIB_METRICS``): what each signal counts, bounded labels, the URL, the
error without the package; and real processes: gunicorn's two workers, recycled, and a Celery
prefork worker, adding up in one multiprocess folder.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_eventlib import BaseEvent, ConfigurationError, DontRetry, EventLib, ValidationError, handler, log, signals
from tests.conftest import REDIS_URL, ROOT, clean_up_run, start_worker, stop_process, wait_for, wait_worker_ready

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Ping(BaseEvent):
    @handler
    def pong(self) -> None:
        pass

    @handler(retries=1)
    def flaky(self) -> None:
        if self.data.get("fail"):
            raise RuntimeError("flaky")

    @handler
    def refuse(self) -> None:
        if self.data.get("refuse"):
            raise DontRetry("refused")


class Checked(BaseEvent):
    def clean(self) -> None:
        if "n" not in self.data:
            raise ValidationError("n is missing", messages={"n": ["Missing data for required field."]})


def metrics_app(**settings: Any) -> Flask:
    app = Flask("metered")
    EventLib(app, always_eager=True, broker_url="memory://", metrics=True, retry_backoff=0, **settings)
    registry = app.extensions["eventlib"].registry
    registry.register_event("metered", Ping)
    registry.register_event("metered", Checked)
    return app


def scrape(app: Flask, url: str = "/metrics") -> Samples:
    response = app.test_client().get(url)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.text)


def label(method: str) -> str:
    return f"{__name__}.Ping.{method}"


def test_each_signal_counts_by_event_and_handler() -> None:
    app = metrics_app()
    before = scrape(app)
    with app.app_context():
        log("metered.Ping", {})
        log("metered.Ping", {"fail": True})  # flaky: attempt 1 fails, is retried, fails, dead letter
        log("metered.Ping", {"refuse": True})  # refuse: DontRetry, straight to the dead letters
        for bad in ({}, {"n": 1, "when": object()}):
            with pytest.raises((ValidationError, TypeError)):
                log("metered.Checked", bad)
    signals.send(signals.events_spooled, app, count=3, reason="broker down")
    signals.send(signals.events_dropped, app, count=2, reason="spool full")
    after = scrape(app)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ping = "metered.Ping"
    assert delta("eventlib_events_logged_total", event=ping) == 3
    assert delta("eventlib_events_rejected_total", event="metered.Checked", reason="invalid") == 1
    assert delta("eventlib_events_rejected_total", event="metered.Checked", reason="unserializable") == 1
    assert delta("eventlib_events_spooled_total") == 3
    assert delta("eventlib_events_dropped_total") == 2
    assert delta("eventlib_handler_succeeded_total", event=ping, handler=label("pong")) == 3
    assert delta("eventlib_handler_succeeded_total", event=ping, handler=label("flaky")) == 2
    assert delta("eventlib_handler_failed_total", event=ping, handler=label("flaky")) == 2
    assert delta("eventlib_handler_retried_total", event=ping, handler=label("flaky")) == 1
    assert delta("eventlib_handler_dead_lettered_total", event=ping, handler=label("flaky")) == 1
    assert delta("eventlib_handler_failed_total", event=ping, handler=label("refuse")) == 1
    assert delta("eventlib_handler_retried_total", event=ping, handler=label("refuse")) == 0
    assert delta("eventlib_handler_dead_lettered_total", event=ping, handler=label("refuse")) == 1
    # Every attempt is timed, whatever its outcome.
    for method, attempts in (("pong", 3), ("flaky", 4), ("refuse", 3)):
        assert delta("eventlib_handler_duration_seconds_count", event=ping, handler=label(method)) == attempts
    assert delta("eventlib_handler_duration_seconds_sum", event=ping, handler=label("pong")) > 0


def test_names_a_caller_sends_never_become_labels() -> None:
    app = metrics_app()
    invented = f"metered.Invented{uuid.uuid4().hex}"
    before = scrape(app)
    with app.app_context():
        for name in (invented, "not an event name", "x" * 300):
            with pytest.raises(Exception, match="event"):
                log(name, {})
    response = app.test_client().get("/metrics")
    assert invented not in response.text and "not an event name" not in response.text
    after = parse(response.text)
    key = {"event": "(unknown)", "reason": "not_found"}
    assert (
        value(after, "eventlib_events_rejected_total", **key) - value(before, "eventlib_events_rejected_total", **key)
        == 3
    )


def test_the_app_chooses_the_url_or_routes_the_view_itself() -> None:
    app = metrics_app(metrics_url="/ops/metrics")
    assert app.test_client().get("/metrics").status_code == 404
    assert "eventlib_events_logged_total" in {name for name, _ in scrape(app, "/ops/metrics")}

    from flask_eventlib.metrics import view

    hidden = metrics_app(metrics_url=None)
    hidden.add_url_rule("/internal/metrics", view_func=view)  # behind the app's own access check, say
    assert hidden.test_client().get("/metrics").status_code == 404
    assert "eventlib_handler_succeeded_total" in {name for name, _ in scrape(hidden, "/internal/metrics")}


def test_settings_are_checked() -> None:
    for settings, problem in [
        ({"EVENTLIB_METRICS": "yes"}, "EVENTLIB_METRICS must be True or False"),
        ({"EVENTLIB_METRICS_URL": "metrics"}, "EVENTLIB_METRICS_URL must be a path starting with '/'"),
    ]:
        app = Flask("checked")
        app.config.update(settings)
        with pytest.raises(ConfigurationError, match=problem):
            EventLib(app, always_eager=True, broker_url="memory://")


def test_on_without_prometheus_client_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what an import finds when it is absent
    monkeypatch.delitem(sys.modules, "flask_eventlib.metrics", raising=False)
    app = Flask("unmetered")
    with pytest.raises(ConfigurationError) as found:
        EventLib(app, always_eager=True, broker_url="memory://", metrics=True)
    assert str(found.value) == (
        "EVENTLIB_METRICS = True needs the prometheus-client package, which is not installed: "
        "pip install 'flask-eventlib[metrics]' (or set EVENTLIB_METRICS = False)"
    )
    assert "eventlib" not in app.extensions
    with pytest.raises(ConfigurationError, match=r"pip install 'flask-eventlib\[metrics\]'"):
        importlib.import_module("flask_eventlib.metrics")


@pytest.mark.parametrize("hidden", [False, True], ids=["installed", "absent"])
def test_with_the_settings_off_nothing_of_either_is_loaded(tmp_path: Path, hidden: bool) -> None:
    """Off (the default), the modules that use the extras are never imported, and log() and the
    runner are given nothing to call; with the packages absent everything works as before.
    (redis-py imports opentelemetry itself when it is installed: only our modules are checked.)"""
    script = f"""
import sys
if {hidden}:
    sys.modules["prometheus_client"] = sys.modules["opentelemetry"] = None
from flask import Flask
from flask_eventlib import BaseEvent, EventLib, handler, log

class Ping(BaseEvent):
    @handler
    def pong(self):
        print("handled", self.trace)

app = Flask("plain")
EventLib(app, always_eager=True, broker_url="memory://")
state = app.extensions["eventlib"]
state.registry.register_event("plain", Ping)
with app.app_context():
    log("plain.Ping", {{}})
assert state.dispatcher.trace is None and state.runner.spans is None
ours = ("flask_eventlib.metrics", "flask_eventlib.tracing")
print(sorted(name for name, module in sys.modules.items()
             if module is not None and (name in ours or name.startswith("prometheus_client"))))
"""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["handled None", "[]"]


# -- real processes ------------------------------------------------------------------------------


def http_get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return bytes(response.read())


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(process: subprocess.Popen[bytes], port: int, path: str, log_path: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"{process.args!r} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
    try:
        http_get(port, path)
    except OSError:
        return False
    return True


@pytest.fixture
def deployment(tmp_path: Path, redis_client: redis.Redis) -> Iterator[dict[str, Any]]:
    """A Celery worker (prefork, 2 children) and gunicorn (2 sync workers, recycled every 15
    requests) for the sample app with metrics on, sharing one PROMETHEUS_MULTIPROC_DIR."""
    queue = f"eventlib-metrics-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "SAMPLE_BROKER_URL": REDIS_URL,
        "SAMPLE_QUEUE": queue,
        "SAMPLE_RECORD_KEY": record_key,
        "SAMPLE_STORE_URL": f"{REDIS_URL}?prefix={record_key}:store:",
        "SAMPLE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "SAMPLE_CONFIG": json.dumps({"EVENTLIB_METRICS": True}),
    }
    from tests.sample import create_app

    cleanup_app = create_app(EVENTLIB_BROKER_URL=REDIS_URL, EVENTLIB_QUEUE=queue, SAMPLE_RECORD_KEY=record_key)
    worker_log = tmp_path / "worker.log"
    worker = start_worker(REDIS_URL, queue, record_key, worker_log, env=env)
    port = free_port()
    web_log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "tests/observability/gunicorn_conf.py", "--workers=2"]
    command += ["--max-requests=15", f"--bind=127.0.0.1:{port}", "--log-level=warning"]
    with web_log.open("wb") as output:
        web = subprocess.Popen(
            [*command, "tests.observability.webapp:app"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_worker_ready(worker, worker_log)
        wait_for(lambda: answers(web, port, "/metrics", web_log), timeout=60, what=f"gunicorn (log: {web_log})")
        yield {"port": port, "folder": folder, "env": env, "worker_log": worker_log, "web_log": web_log}
    finally:
        stop_process(web)
        stop_process(worker)
        clean_up_run(redis_client, record_key, cleanup_app, queue)


@pytest.mark.worker
def test_gunicorn_and_celery_processes_add_up(deployment: dict[str, Any]) -> None:
    port = deployment["port"]
    requests, per_request, permanent, flaky = 40, 5, 3, 3
    pids: dict[int, int] = {}
    for _ in range(requests):
        pid = json.loads(http_get(port, f"/log/Work/{per_request}"))["pid"]
        pids[pid] = pids.get(pid, 0) + per_request
    for event, count in (("Permanent", permanent), ("FailsTwice", flaky)):
        for _ in range(count):
            pid = json.loads(http_get(port, f"/log/{event}/1"))["pid"]
    # Two workers at a time, each recycled after 15 requests: several processes logged a share.
    assert len(pids) >= 3 and max(pids.values()) < requests * per_request, pids

    work, ops = "tests.sample.ops.events.Work.work", "tests.sample.ops.events"
    expected = {
        ("eventlib_events_logged_total", "ops.Work", None): requests * per_request,
        ("eventlib_events_logged_total", "ops.Permanent", None): permanent,
        ("eventlib_events_logged_total", "ops.FailsTwice", None): flaky,
        ("eventlib_handler_succeeded_total", "ops.Work", work): requests * per_request,
        ("eventlib_handler_duration_seconds_count", "ops.Work", work): requests * per_request,
        ("eventlib_handler_failed_total", "ops.Permanent", f"{ops}.Permanent.refuse"): permanent,
        ("eventlib_handler_dead_lettered_total", "ops.Permanent", f"{ops}.Permanent.refuse"): permanent,
        ("eventlib_handler_retried_total", "ops.Permanent", f"{ops}.Permanent.refuse"): 0,
        ("eventlib_handler_succeeded_total", "ops.FailsTwice", f"{ops}.FailsTwice.steady"): flaky,
        ("eventlib_handler_failed_total", "ops.FailsTwice", f"{ops}.FailsTwice.flaky"): 2 * flaky,
        ("eventlib_handler_retried_total", "ops.FailsTwice", f"{ops}.FailsTwice.flaky"): 2 * flaky,
        ("eventlib_handler_succeeded_total", "ops.FailsTwice", f"{ops}.FailsTwice.flaky"): flaky,
        ("eventlib_handler_dead_lettered_total", "ops.FailsTwice", f"{ops}.FailsTwice.flaky"): 0,
    }

    def counts(text: str) -> dict[tuple[str, str, str | None], float]:
        samples = parse(text)
        return {
            key: value(samples, key[0], event=key[1], **({"handler": key[2]} if key[2] else {})) for key in expected
        }

    seen: list[dict[tuple[str, str, str | None], float]] = []

    def all_counted() -> bool:
        seen.append(counts(http_get(port, "/metrics").decode()))
        return seen[-1] == expected

    try:
        wait_for(all_counted, timeout=90, interval=0.2, what="the counters to add up")
    except BaseException:
        wrong = {key: (seen[-1].get(key), want) for key, want in expected.items() if seen[-1].get(key) != want}
        print("counted, expected:", wrong, "\n", deployment["worker_log"].read_text(errors="replace")[-3000:])
        raise
    # Every scrape adds up the same files, whichever gunicorn worker answers it; nothing more comes.
    for _ in range(6):
        assert counts(http_get(port, "/metrics").decode()) == expected
    files = {path.name for path in deployment["folder"].iterdir()}
    writers = {name.rsplit("_", 1)[1] for name in files if name.startswith("counter_")}
    assert {f"{pid}.db" for pid in pids} <= writers  # recycled workers' files stay, and count
    assert len(writers) >= len(pids) + 2, files  # and the Celery worker's children wrote theirs

    # A machine with workers only: the standalone server reads the same folder.
    serve_port = free_port()
    serve_log = deployment["folder"].parent / "serve.log"
    with serve_log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "flask_eventlib.metrics", "--port", str(serve_port)],
            cwd=ROOT,
            env={**os.environ, **deployment["env"]},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: answers(server, serve_port, "/", serve_log), timeout=30, what="python -m flask_eventlib.metrics"
        )
        assert counts(http_get(serve_port, "/").decode()) == expected
    finally:
        stop_process(server)


def test_durations_counted_by_message_land_in_the_buckets_observe_would_put_them_in() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from flask_eventlib.metrics import DURATION_BUCKETS, observe_all

    amounts = [0.0, 0.0005, 0.001, 0.0010001, 0.02, 0.02, 0.5, 7.0, 59.9, 3600.0, *DURATION_BUCKETS[:3]]
    one_by_one, grouped = CollectorRegistry(), CollectorRegistry()
    first = Histogram("d", "d", ["h"], buckets=DURATION_BUCKETS, registry=one_by_one).labels("x")
    for amount in amounts:
        first.observe(amount)
    observe_all(Histogram("d", "d", ["h"], buckets=DURATION_BUCKETS, registry=grouped).labels("x"), amounts)

    def counts(registry: CollectorRegistry) -> Samples:  # _created: when each child was made
        return {key: n for key, n in parse(generate_latest(registry).decode()).items() if key[0] != "d_created"}

    expected = counts(one_by_one)
    assert counts(grouped) == expected
    assert value(expected, "d_count", h="x") == len(amounts)
