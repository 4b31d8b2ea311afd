"""Delivery guarantees with a real worker: retries alone, dead letters and replay, dedup.

Parametrized over both brokers by the session-scoped ``worker`` fixture.
"""

from __future__ import annotations

import uuid

from flask_eventlib import flush, log
from flask_eventlib.store import store_from_url
from tests.conftest import Worker, wait_for


def test_a_failing_handler_is_retried_alone_until_it_succeeds(worker: Worker) -> None:
    with worker.app.app_context():
        event_id = log("ops.FailsTwice")
    wait_for(lambda: "FailsTwice.flaky" in worker.records.handlers_for(event_id), what="the third attempt")
    entries = worker.records.for_id(event_id)
    # steady ran once, flaky recorded its success on attempt 3; the wildcard audit is for deals only.
    assert [e["handler"] for e in entries] == ["FailsTwice.steady", "FailsTwice.flaky"]
    assert entries[1]["attempt"] == 3
    text = worker.log_text()
    assert f"FailsTwice.flaky failed for event ops.FailsTwice (id {event_id}), attempt 1 of 4: retrying in" in text
    assert f"(id {event_id}), attempt 2 of 4: retrying in" in text


def test_after_its_last_attempt_a_handler_is_dead_lettered_and_replay_runs_only_it(worker: Worker) -> None:
    fix = uuid.uuid4().hex
    store = store_from_url(worker.store_url)
    client = worker.records.client
    with worker.app.app_context():
        event_id = log("ops.AlwaysFails", {"fix": fix})
    letters = wait_for(
        lambda: [d for d in store.dead_letters() if d.event_id == event_id], what="the dead letter", timeout=30
    )
    (letter,) = letters
    assert letter.handler == "tests.sample.ops.events.AlwaysFails.broken"
    assert letter.attempts == 3  # the first attempt and its 2 retries
    assert letter.event_name == "ops.AlwaysFails"
    assert "RuntimeError('still broken')" == letter.error
    assert "Traceback (most recent call last)" in letter.traceback
    assert letter.first_failed_at <= letter.last_failed_at
    assert int(client.get(f"{worker.records.key}:attempts:{event_id}")) == 3
    assert worker.records.handlers_for(event_id) == ["AlwaysFails.fine"]

    cli = worker.app.test_cli_runner()
    listed = cli.invoke(args=["eventlib", "deadletters", "list"])
    assert listed.exit_code == 0
    assert f"{letter.id}  " in listed.output and "AlwaysFails.broken  after 3 attempts" in listed.output
    shown = cli.invoke(args=["eventlib", "deadletters", "show", letter.id])
    assert "RuntimeError: still broken" in shown.output and f"event:       ops.AlwaysFails {event_id}" in shown.output

    client.set(f"{worker.records.key}:fixed:{fix}", 1)  # the bug is fixed; replay the dead letter
    replayed = cli.invoke(args=["eventlib", "deadletters", "replay", "--event", event_id])
    assert replayed.exit_code == 0, replayed.output
    assert "1 dead letter replayed." in replayed.output
    worker.records.wait_handlers(event_id, 2)
    assert worker.records.handlers_for(event_id) == ["AlwaysFails.fine", "AlwaysFails.broken"]
    assert not [d for d in store.dead_letters() if d.event_id == event_id]
    store.close()


def test_dont_retry_goes_to_the_dead_letters_at_once_and_purge_removes_it(worker: Worker) -> None:
    store = store_from_url(worker.store_url)
    with worker.app.app_context():
        event_id = log("ops.Permanent")
    (letter,) = wait_for(lambda: [d for d in store.dead_letters() if d.event_id == event_id], what="dead letter")
    assert letter.attempts == 1
    assert "DontRetry('customer 7 was deleted')" == letter.error
    assert int(worker.records.client.get(f"{worker.records.key}:attempts:{event_id}")) == 1
    cli = worker.app.test_cli_runner()
    refused = cli.invoke(args=["eventlib", "deadletters", "purge"])
    assert refused.exit_code == 2 and "Say which dead letters" in refused.output
    unknown = cli.invoke(args=["eventlib", "deadletters", "replay", "no-such-id"])
    assert unknown.exit_code == 2 and "no dead letter with the id no-such-id" in unknown.output
    purged = cli.invoke(args=["eventlib", "deadletters", "purge", "--handler", "Permanent.refuse"])
    assert purged.exit_code == 0 and "1 dead letter purged." in purged.output
    assert not [d for d in store.dead_letters() if d.event_id == event_id]
    store.close()


def test_the_same_event_id_delivered_twice_runs_its_handlers_once(worker: Worker) -> None:
    state = worker.app.extensions["eventlib"]
    with worker.app.app_context():
        first = state.dispatcher.build("deals.DealClick", {"deal_id": 1})
        message = state.dispatcher.encode(first)
        state.sender.submit([message])
        assert flush()
        worker.records.wait_handlers(first.id, 4)
        # A redelivery of the same message, then (in the same message) a marker event.
        marker = state.dispatcher.build("deals.DealClick", {"deal_id": 2})
        state.sender.submit([message, message, state.dispatcher.encode(marker)])
        assert flush()
    worker.records.wait_handlers(marker.id, 4)
    assert worker.records.handlers_for(first.id) == [
        "DealClick.first",
        "DealClick.second",
        "handlers.on_click",
        "handlers.audit",
    ]
