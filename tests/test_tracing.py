"""OpenTelemetry traces (``EVENTLIB_TRACING``), read back from the SDK's in-memory exporter.

The worker side runs in this process: a real Celery worker (``celery.contrib.testing``'s, in a
thread) on kombu's in-memory transport, so the events go through the request's batching, the
background sender, one Celery message and the JSON envelope, as in production, and the spans of
both sides reach the same exporter. One test also runs a real ``celery worker`` process on Redis,
whose spans a file exporter of its own writes for the test to read.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from celery.contrib.testing.worker import start_worker as worker_thread
from celery.signals import task_prerun
from flask import Flask
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from flask_eventlib import BaseEvent, ConfigurationError, DontRetry, EventLib, SerializationError, handler, log
from flask_eventlib.envelope import decode
from flask_eventlib.serialization import default_codec
from flask_eventlib.testing import capture_events
from flask_eventlib.tracing import span_context
from tests.conftest import REDIS_URL, clean_up_run, start_worker, stop_process, wait_for, wait_worker_ready
from tests.sample import create_app


class Order(BaseEvent):
    @handler
    def receipt(self) -> None:
        pass

    @handler
    def stock(self) -> None:
        pass


class Refund(BaseEvent):
    @handler(retries=1)
    def flaky(self) -> None:
        raise RuntimeError(f"refund {self.data('n')} failed")

    @handler
    def refused(self) -> None:
        raise DontRetry("no such order")


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    found = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(found))
    # Once per process (OpenTelemetry keeps the first); only this module sets one.
    trace.set_tracer_provider(provider)
    return found


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


def traced_app(tmp_path: Path, **settings: Any) -> Flask:
    app = Flask("traced", instance_path=str(tmp_path))
    options: dict[str, Any] = {"broker_url": "memory://", "store_url": "memory://", "tracing": True}
    EventLib(app, **{**options, **settings})
    registry = app.extensions["eventlib"].registry
    registry.register_event("shop", Order)
    registry.register_event("shop", Refund)
    return app


def handler_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.instrumentation_scope.name == "flask_eventlib"]


def test_a_request_that_logs_two_events_yields_handler_spans_linked_to_its_span(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    app = traced_app(tmp_path, durability="memory")

    @app.post("/checkout")
    def checkout() -> str:
        log("shop.Order", {"n": 1})
        log("shop.Order", {"n": 2})
        return ""

    celery = app.extensions["eventlib"].celery
    tasks: list[int] = []

    def count(sender: Any = None, args: Any = (), **_: Any) -> None:
        tasks.append(len(args[0]))

    task_prerun.connect(count, weak=False)
    try:
        with worker_thread(celery, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            # The request's span, as a WSGI or Flask instrumentation makes around each request.
            with trace.get_tracer("tests").start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as request:
                assert app.test_client().post("/checkout").status_code == 200
            deadline = time.monotonic() + 30
            while len(handler_spans(spans)) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)  # polling under a deadline for the worker thread's spans
    finally:
        task_prerun.disconnect(count)
    assert tasks == [2]  # the request's two events travelled in one message

    found = handler_spans(spans)
    assert sorted(span.name for span in found) == sorted([f"{__name__}.Order.receipt", f"{__name__}.Order.stock"] * 2)
    logged = request.get_span_context()
    events = set()
    for span in found:
        assert span.kind is SpanKind.CONSUMER
        assert [link.context.span_id for link in span.links] == [logged.span_id]
        assert span.links[0].context.trace_id == logged.trace_id
        assert dict(span.links[0].attributes or {}) == {"eventlib.link": "logged"}
        # ... and a child of it: the request's trace shows its events' handlers below it.
        assert span.parent is not None and span.parent.span_id == logged.span_id
        assert span.context.trace_id == logged.trace_id
        attributes = dict(span.attributes or {})
        assert attributes["eventlib.event.name"] == "shop.Order"
        assert attributes["eventlib.handler"] == span.name
        assert (attributes["eventlib.attempt"], attributes["eventlib.outcome"]) == (1, "succeeded")
        assert span.status.status_code is StatusCode.UNSET
        events.add(attributes["eventlib.event.id"])
    assert len(events) == 2


def test_a_failure_is_recorded_on_its_span_with_the_attempt_and_the_outcome(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    app = traced_app(tmp_path, always_eager=True, retry_backoff=0)
    with trace.get_tracer("tests").start_as_current_span("job"), app.app_context():
        log("shop.Refund", {"n": 7})
    found = {
        (span.name.rsplit(".", 1)[1], dict(span.attributes or {})["eventlib.attempt"]): span
        for span in handler_spans(spans)
    }
    assert sorted(found) == [("flaky", 1), ("flaky", 2), ("refused", 1)]
    for key, outcome in (
        (("flaky", 1), "retrying"),
        (("flaky", 2), "dead_lettered"),
        (("refused", 1), "dead_lettered"),
    ):
        span = found[key]
        assert dict(span.attributes or {})["eventlib.outcome"] == outcome
        assert span.status.status_code is StatusCode.ERROR
        (recorded,) = span.events
        assert recorded.name == "exception"
        error = dict(recorded.attributes or {})
        assert error["exception.type"] in ("RuntimeError", "flask_eventlib.exceptions.DontRetry", "DontRetry")
        assert "Traceback" in str(error["exception.stacktrace"])
    assert found["flaky", 1].status.description == "RuntimeError: refund 7 failed"


def test_the_worker_span_of_the_delivery_is_linked_too(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    app = traced_app(tmp_path)
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request, capture_events(app) as captured:
        with app.app_context():
            log("shop.Order", {})
    state = app.extensions["eventlib"]
    # What a Celery instrumentation does around each task.
    with tracer.start_as_current_span("run/flask_eventlib.process_events", kind=SpanKind.CONSUMER) as task:
        with app.app_context():
            state.runner.process(captured.messages)
    for span in handler_spans(spans):
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
        assert [(link.context.span_id, dict(link.attributes or {})["eventlib.link"]) for link in span.links] == [
            (request.get_span_context().span_id, "logged"),
            (task.get_span_context().span_id, "delivery"),
        ]


def test_the_trace_travels_in_the_envelope_and_is_optional(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    app = traced_app(tmp_path)
    with capture_events(app) as captured, app.app_context():
        log("shop.Order", {})  # no span: nothing to carry
        with trace.get_tracer("tests").start_as_current_span("job") as job:
            log("shop.Order", {})
    plain, traced = (orjson.loads(message) for message in captured.messages)
    assert "trace" not in plain
    context = job.get_span_context()
    assert traced["trace"] == {
        "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    }
    assert traced["v"] == plain["v"] == 1  # an optional field: the format's version is unchanged
    assert captured[1].trace == traced["trace"] and captured[0].trace is None

    # An envelope of an older version has no trace field: its handlers run under the worker's span.
    del traced["trace"]
    old = json.dumps(traced)
    assert decode(old, default_codec).trace is None
    with app.app_context():
        app.extensions["eventlib"].runner.process([old])
    assert all(span.parent is None and not span.links for span in handler_spans(spans))

    for bad in ("00-abc", []):
        document = {**traced, "trace": {"traceparent": bad}}
        if isinstance(bad, list):
            with pytest.raises(SerializationError, match="'trace' must be an object of strings"):
                decode(json.dumps(document), default_codec)
        else:  # a malformed traceparent starts no trace, as the W3C asks; the event is handled
            assert span_context(decode(json.dumps(document), default_codec).trace) is None


def test_span_context_reads_only_well_formed_traceparents() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    found = span_context({"traceparent": good, "tracestate": "vendor=value"})
    assert found is not None and found.is_remote and found.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert found.trace_state.get("vendor") == "value"
    for bad in (
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # an all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # an all-zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # the forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has 4 fields
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "",
    ):
        assert span_context({"traceparent": bad}) is None, bad
    assert span_context({"traceparent": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"}) is not None


def test_on_without_opentelemetry_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    app = Flask("untraced")
    with pytest.raises(ConfigurationError) as found:
        EventLib(app, always_eager=True, broker_url="memory://", tracing=True)
    assert str(found.value) == (
        "EVENTLIB_TRACING = True needs the opentelemetry-api package, which is not installed: "
        "pip install 'flask-eventlib[tracing]' (or set EVENTLIB_TRACING = False)"
    )


@pytest.mark.worker
def test_a_real_worker_process_continues_the_request_trace(
    spans: InMemorySpanExporter, tmp_path: Path, redis_client: Any
) -> None:
    """The same across processes and a real broker: gunicorn-less (a test client), but a real
    ``celery worker`` on Redis, prefork, whose spans a file exporter writes for the test."""
    queue = f"eventlib-tracing-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    spans_path = tmp_path / "spans.jsonl"
    app = create_app(
        EVENTLIB_BROKER_URL=REDIS_URL,
        EVENTLIB_QUEUE=queue,
        SAMPLE_RECORD_KEY=record_key,
        EVENTLIB_STORE_URL=store_url,
        EVENTLIB_SPOOL_PATH=str(tmp_path / "spool.sqlite3"),
        EVENTLIB_TRACING=True,
    )

    @app.post("/checkout")
    def checkout() -> str:
        log("ops.Work", {})
        log("ops.Work", {})
        return ""

    env = {
        "SAMPLE_SPANS_PATH": str(spans_path),
        "SAMPLE_STORE_URL": store_url,
        "SAMPLE_CONFIG": json.dumps({"EVENTLIB_TRACING": True}),
    }
    command = [sys.executable, "-m", "celery", "-A", "tests.observability.traced_worker:celery", "worker"]
    log_path = tmp_path / "worker.log"
    worker = start_worker(REDIS_URL, queue, record_key, log_path, command=command, env=env)
    try:
        wait_worker_ready(worker, log_path)
        with trace.get_tracer("tests").start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as request:
            assert app.test_client().post("/checkout").status_code == 200

        def handled() -> list[dict[str, Any]]:
            if not spans_path.exists():
                return []
            found = [json.loads(line) for line in spans_path.read_text().splitlines()]
            return [span for span in found if span["name"] == "tests.sample.ops.events.Work.work"]

        found = wait_for(lambda: len(handled()) >= 2 and handled(), timeout=60, what=f"the worker's spans ({log_path})")
    finally:
        stop_process(worker)
        clean_up_run(redis_client, record_key, app, queue)
    logged = request.get_span_context()
    assert len(found) == 2 and len({span["attributes"]["eventlib.event.id"] for span in found}) == 2
    for span in found:
        assert span["pid"] != os.getpid()
        assert span["trace_id"] == f"{logged.trace_id:032x}"
        assert span["parent_span_id"] == f"{logged.span_id:016x}"
        assert span["links"] == [f"{logged.span_id:016x}"]
        assert span["attributes"]["eventlib.outcome"] == "succeeded"
