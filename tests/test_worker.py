"""End to end: log() in this process, a real Celery worker process runs the handlers.

Parametrized over both brokers (Redis and RabbitMQ) by the session-scoped ``worker`` fixture; the
contracts that hold however handlers run also over eager mode (the ``delivery`` fixture).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

from flask_eventlib import log
from tests.conftest import Worker, wait_for


def test_handlers_run_in_the_worker_in_order(worker: Worker) -> None:
    with worker.app.app_context():
        event_id = log("deals.DealClick", {"deal_id": 7})
    handlers = worker.records.wait_handlers(event_id, 4)
    assert handlers == ["DealClick.first", "DealClick.second", "handlers.on_click", "handlers.audit"]
    entries = worker.records.for_id(event_id)
    # They ran in the worker process, not here, with the Flask app context of the worker's app.
    assert all(entry["pid"] != os.getpid() for entry in entries)
    assert all(entry["name"] == "deals.DealClick" for entry in entries)
    assert entries[0]["data"] == {"deal_id": "7"}


def test_values_reach_the_worker_with_their_types(delivery: Worker) -> None:
    data = {
        "naive": dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
        "aware": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        "zoned": dt.datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
        "day": dt.date(2024, 2, 29),
        "time": dt.time(23, 59, 1, 5),
        "price": Decimal("10.50"),
        "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "nested": {"list": [1, "two", 3.5, None, True], "$dollar": "kept"},
    }
    with delivery.app.app_context():
        event_id = log("deals.Typed", data)
    assert delivery.records.wait_handlers(event_id, 2) == ["Typed.store", "handlers.audit"]
    entry = delivery.records.for_id(event_id)[0]
    assert entry["data"] == {key: repr(value) for key, value in data.items()}
    assert entry["types"]["price"] == "Decimal" and entry["types"]["aware"] == "datetime"


def test_a_failing_handler_is_logged_and_the_others_run(delivery: Worker) -> None:
    marker = uuid.uuid4().hex
    with delivery.app.app_context():
        event_id = log("deals.Flaky", {"n": marker})
    handlers = delivery.records.wait_handlers(event_id, 3)
    assert handlers == ["Flaky.after", "handlers.flaky_function", "handlers.audit"]
    text = wait_for(
        lambda: f"boom for {marker}" in delivery.log_text() and delivery.log_text(),
        what="the failure in the worker's log",
    )
    headline = f"Handler tests.sample.deals.events.Flaky.explode failed for event deals.Flaky (id {event_id}), attempt"
    failure = text[text.index(headline) :]
    assert "Traceback (most recent call last)" in failure
    assert f"RuntimeError: boom for {marker}" in failure
    assert f"failed for event deals.Flaky (id {event_id})" in text
    assert "ValueError: function handler failed too" in text


def test_schema_loaded_data_reaches_the_worker(delivery: Worker) -> None:
    with delivery.app.app_context():
        event_id = log("deals.Purchase", {"deal_id": "42", "amount": "19.90"})
    delivery.records.wait_handlers(event_id, 2)
    entry = delivery.records.for_id(event_id)[0]
    assert entry["handler"] == "Purchase.store"
    assert entry["data"] == {"deal_id": "42", "amount": "Decimal('19.90')", "coupon": "None"}
    assert entry["types"]["deal_id"] == "int"


def test_a_pickled_message_is_refused_by_the_worker(worker: Worker) -> None:
    state = worker.app.extensions["eventlib"]
    with worker.app.app_context():
        pickled = state.dispatcher.encode(state.dispatcher.build("deals.DealClick", {"deal_id": "pickled"}))
        state.task.apply_async(args=([pickled],), queue=worker.queue, serializer="pickle")
        after = log("deals.DealClick", {"deal_id": "after"})
    worker.records.wait_handlers(after, 4)
    wait_for(lambda: "untrusted content of type pickle" in worker.log_text(), what="the refusal in the log")
    assert not any(entry["data"].get("deal_id") == "'pickled'" for entry in worker.records.all())


def test_the_worker_logs_one_info_line_per_event_with_its_handlers_outcomes(worker: Worker) -> None:
    with worker.app.app_context():
        event_id = log("deals.DealClick", {"deal_id": 8})
    worker.records.wait_handlers(event_id, 4)
    line = wait_for(
        lambda: next((line for line in worker.log_text().splitlines() if f"(id {event_id}):" in line), None),
        what="the event's line in the worker's log",
    )
    assert "INFO" in line and f"Event deals.DealClick (id {event_id}): " in line
    assert "tests.sample.deals.events.DealClick.first ok; tests.sample.deals.events.DealClick.second ok; " in line
    assert line.endswith("tests.sample.handlers.audit ok")
