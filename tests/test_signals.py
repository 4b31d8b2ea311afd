"""Blinker signals for metrics: sent at each step, and a failing receiver breaks nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_eventlib import ValidationError, log, signals
from flask_eventlib.state import state_of
from tests.conftest import Records
from tests.sample import create_app


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = {}
    for name in (
        "event_logged",
        "event_rejected",
        "handler_succeeded",
        "handler_failed",
        "handler_retried",
        "handler_dead_lettered",
    ):

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            seen.append((_name, sender, kwargs))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    yield seen
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


@pytest.fixture
def retrying_app(records: Records) -> Flask:
    return create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key)


def test_signals_follow_an_event_through_retries_to_success(
    retrying_app: Flask, records: Records, received: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    with retrying_app.app_context():
        event_id = log("ops.FailsTwice")
    # Eager mode retries at once, in the caller: the flaky handler succeeds on its third attempt.
    assert records.handlers_for(event_id) == ["FailsTwice.steady", "FailsTwice.flaky"]
    steps = [
        (name, kwargs.get("handler", "").rpartition(".")[2], kwargs.get("attempt")) for name, _, kwargs in received
    ]
    assert steps == [
        ("event_logged", "", None),
        ("handler_succeeded", "steady", 1),
        ("handler_failed", "flaky", 1),
        ("handler_retried", "flaky", 1),
        ("handler_failed", "flaky", 2),
        ("handler_retried", "flaky", 2),
        ("handler_succeeded", "flaky", 3),
    ]
    assert received[0][1] is retrying_app and received[0][2]["event"].id == event_id
    # Each outcome carries the handler's run time, for metrics' duration histograms.
    durations = [kwargs["duration"] for name, _, kwargs in received if name in ("handler_succeeded", "handler_failed")]
    assert len(durations) == 4 and all(isinstance(d, float) and 0 <= d < 5 for d in durations)


def test_dead_letter_and_rejection_signals(
    retrying_app: Flask, received: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    with retrying_app.app_context():
        event_id = log("ops.Permanent")
        with pytest.raises(ValidationError):
            log("deals.DealClick", {})
    names = [name for name, _, _ in received]
    assert names == ["event_logged", "handler_failed", "handler_dead_lettered", "event_rejected"]
    dead = received[2]
    assert dead[1] is retrying_app and dead[2]["event"].id == event_id and dead[2]["attempt"] == 1
    store = retrying_app.extensions["eventlib"].store
    assert [d.event_id for d in store.dead_letters()] == [event_id]
    rejected = received[3]
    assert rejected[1] is retrying_app and rejected[2]["name"] == "deals.DealClick"
    assert isinstance(rejected[2]["error"], ValidationError)


def test_signals_name_the_app_so_a_receiver_can_listen_to_one_app(records: Records) -> None:
    first, second = (
        create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key)
        for _ in range(2)
    )
    seen: list[str] = []

    def on_logged(sender: Flask, event: Any) -> None:
        seen.append(event.id)

    with signals.event_logged.connected_to(on_logged, sender=first):
        with first.app_context():
            mine = log("deals.DealClick", {"deal_id": 1})
        with second.app_context():
            log("deals.DealClick", {"deal_id": 2})
    assert seen == [mine]


def test_a_failing_receiver_is_logged_and_log_still_works(
    retrying_app: Flask, records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("metrics backend down")

    signals.event_logged.connect(broken)
    try:
        with retrying_app.app_context():
            event_id = log("deals.DealClick", {"deal_id": 1})
    finally:
        signals.event_logged.disconnect(broken)
    assert len(records.handlers_for(event_id)) == 4
    assert "A receiver of the flask-eventlib signal 'event-logged' failed" in caplog.text


def test_a_browsers_batch_signals_and_counts_each_of_its_events(
    records: Records, received: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    app = create_app(
        EVENTLIB_ALWAYS_EAGER=True,
        EVENTLIB_BROKER_URL="memory://",
        EVENTLIB_CONSOLE=True,  # its figures count each event logged
        SECRET_KEY="test",
        TESTING=True,
        SAMPLE_RECORD_KEY=records.key,
    )
    events = [{"event": "web.PageView"}, {"event": "web.Nope"}, {"event": "web.Rating", "data": {"stars": 2}}]
    response = app.test_client().post("/event/log", json={"events": events})
    assert response.status_code == 202
    told = sorted(
        (name, kwargs["event"].name if "event" in kwargs else kwargs["name"])
        for name, sender, kwargs in received
        if name.startswith("event_") and sender is app
    )
    assert told == [("event_logged", "web.PageView"), ("event_logged", "web.Rating"), ("event_rejected", "web.Nope")]
    figures = state_of(app).figures
    assert figures is not None and figures.logged == 2
    assert sorted(entry["name"] for entry in records.all()) == ["web.PageView", "web.Rating"]
