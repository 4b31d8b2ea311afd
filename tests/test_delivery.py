"""Delivery guarantees: retries alone, dead letters and replay, dedup.

Each contract is written once, against the session-scoped ``delivery`` fixture: eager mode (in the
caller), a real worker process on Redis and one on RabbitMQ.
"""

from __future__ import annotations

import uuid

from flask_eventlib import flush, log
from flask_eventlib.store import store_from_url
from tests.conftest import Worker, wait_for


def test_a_failing_handler_is_retried_alone_until_it_succeeds(delivery: Worker) -> None:
    with delivery.app.app_context():
        event_id = log("ops.FailsTwice")
    wait_for(lambda: "FailsTwice.flaky" in delivery.records.handlers_for(event_id), what="the third attempt")
    entries = delivery.records.for_id(event_id)
    # steady ran once, flaky recorded its success on attempt 3; the wildcard audit is for deals only.
    assert [e["handler"] for e in entries] == ["FailsTwice.steady", "FailsTwice.flaky"]
    assert entries[1]["attempt"] == 3
    text = delivery.log_text()
    assert f"FailsTwice.flaky failed for event ops.FailsTwice (id {event_id}), attempt 1 of 4: retrying" in text
    assert f"(id {event_id}), attempt 2 of 4: retrying" in text


def test_after_its_last_attempt_a_handler_is_dead_lettered_and_replay_runs_only_it(delivery: Worker) -> None:
    fix = uuid.uuid4().hex
    store = store_from_url(delivery.store_url)
    client = delivery.records.client
    with delivery.app.app_context():
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
    assert int(client.get(f"{delivery.records.key}:attempts:{event_id}")) == 3
    assert delivery.records.handlers_for(event_id) == ["AlwaysFails.fine"]

    cli = delivery.app.test_cli_runner()
    listed = cli.invoke(args=["eventlib", "deadletters", "list"])
    assert listed.exit_code == 0
    assert f"{letter.id}  " in listed.output and "AlwaysFails.broken  after 3 attempts" in listed.output
    shown = cli.invoke(args=["eventlib", "deadletters", "show", letter.id])
    assert "RuntimeError: still broken" in shown.output and f"event:       ops.AlwaysFails {event_id}" in shown.output

    client.set(f"{delivery.records.key}:fixed:{fix}", 1)  # the bug is fixed; replay the dead letter
    replayed = cli.invoke(args=["eventlib", "deadletters", "replay", "--event", event_id])
    assert replayed.exit_code == 0, replayed.output
    assert "1 dead letter replayed." in replayed.output
    delivery.records.wait_handlers(event_id, 2)
    assert delivery.records.handlers_for(event_id) == ["AlwaysFails.fine", "AlwaysFails.broken"]
    assert not [d for d in store.dead_letters() if d.event_id == event_id]
    store.close()


def test_dont_retry_goes_to_the_dead_letters_at_once_and_purge_removes_it(delivery: Worker) -> None:
    store = store_from_url(delivery.store_url)
    with delivery.app.app_context():
        event_id = log("ops.Permanent")
    (letter,) = wait_for(lambda: [d for d in store.dead_letters() if d.event_id == event_id], what="dead letter")
    assert letter.attempts == 1
    assert "DontRetry('customer 7 was deleted')" == letter.error
    assert int(delivery.records.client.get(f"{delivery.records.key}:attempts:{event_id}")) == 1
    cli = delivery.app.test_cli_runner()
    refused = cli.invoke(args=["eventlib", "deadletters", "purge"])
    assert refused.exit_code == 2 and "Say which dead letters" in refused.output
    unknown = cli.invoke(args=["eventlib", "deadletters", "replay", "no-such-id"])
    assert unknown.exit_code == 2 and "no dead letter with the id no-such-id" in unknown.output
    purged = cli.invoke(args=["eventlib", "deadletters", "purge", "--handler", "Permanent.refuse"])
    assert purged.exit_code == 0 and "1 dead letter purged." in purged.output
    assert not [d for d in store.dead_letters() if d.event_id == event_id]
    store.close()


def test_the_same_event_id_delivered_twice_runs_its_handlers_once(delivery: Worker) -> None:
    state = delivery.app.extensions["eventlib"]  # as the app publishes: at once (eager) or to the broker
    with delivery.app.app_context():
        first = state.dispatcher.build("deals.DealClick", {"deal_id": 1})
        message = state.dispatcher.encode(first)
        state.publisher.publish([message])
        assert flush()
        delivery.records.wait_handlers(first.id, 4)
        # A redelivery of the same message, then (in the same message) a marker event.
        marker = state.dispatcher.build("deals.DealClick", {"deal_id": 2})
        state.publisher.publish([message, message, state.dispatcher.encode(marker)])
        assert flush()
    delivery.records.wait_handlers(marker.id, 4)
    assert delivery.records.handlers_for(first.id) == [
        "DealClick.first",
        "DealClick.second",
        "handlers.on_click",
        "handlers.audit",
    ]
