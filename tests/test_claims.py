"""Claims in the runner, without Flask or a broker: a handler another delivery holds is left to it
and checked again; two deliveries at the same moment run each handler once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from flask_eventlib import BaseEvent
from flask_eventlib.dispatch import Dispatcher
from flask_eventlib.publishers import Capture, Router
from flask_eventlib.registry import Registry
from flask_eventlib.runner import Runner
from flask_eventlib.serialization import Codec, register_builtins
from flask_eventlib.store import MemoryStore
from tests import test_core
from tests.test_core import ran

WELCOME = "tests.test_core.Signup.welcome"
COUNT = "tests.test_core.count"


@pytest.fixture
def codec() -> Codec:
    fresh = Codec()
    register_builtins(fresh)
    return fresh


@pytest.fixture
def registry() -> Registry:
    """test_core's events and handlers (``users.Signup``), recording their runs in ``ran``."""
    ran.clear()
    found = Registry()
    found.register_module("users", test_core)
    return found


def logged(registry: Registry, codec: Any, *plans: str) -> tuple[list[str], list[str]]:
    messages: list[str] = []
    dispatcher = Dispatcher(registry, codec, Router(Capture(messages.extend)))
    ids = [dispatcher.log("users.Signup", {"plan": plan}) for plan in plans]
    return messages, ids


def test_a_handler_claimed_by_another_delivery_is_left_to_it_and_checked_when_its_lease_ends(
    registry: Registry, codec: Any
) -> None:
    messages, (event_id,) = logged(registry, codec, "a")
    store = MemoryStore()
    store.begin([], 60, claims=[(event_id, WELCOME)], owner="another worker", lease=30)
    scheduled: list[tuple[Any, ...]] = []
    runner = Runner(
        registry, codec, store=store, schedule_retry=lambda *a: scheduled.append(a), dedup_ttl=60, claim_ttl=30
    )
    results = runner.process(messages)
    assert ran == [f"count {event_id}"] and [r.handler for r in results] == [COUNT]
    ((message, label, attempt, first_failed_at, delay),) = scheduled
    assert (label, attempt, first_failed_at) == (WELCOME, 1, None) and 29 < delay <= 30.1
    # The check while the holder still runs: checked again, later.
    assert runner.process_retry(message, label, attempt, first_failed_at) is None and len(scheduled) == 2
    # The holder finished it: the check runs nothing.
    store.finish([], {event_id: [WELCOME]}, 60, release=[(event_id, WELCOME)], owner="another worker")
    assert runner.process_retry(message, label, attempt, first_failed_at) is None
    assert ran == [f"count {event_id}"] and len(scheduled) == 2
    # A duplicate of the message, later, runs nothing: both are marked done.
    assert runner.process(messages) == [] and len(scheduled) == 2


def test_a_claim_given_up_by_a_failed_holder_or_left_by_a_dead_one_lets_the_check_run_it(
    registry: Registry, codec: Any
) -> None:
    messages, (first, second) = logged(registry, codec, "a", "b")
    store = MemoryStore()
    store.begin([], 60, claims=[(first, WELCOME)], owner="failed", lease=30)
    store.begin([], 60, claims=[(second, WELCOME)], owner="dead", lease=0.2)
    scheduled: list[tuple[Any, ...]] = []
    runner = Runner(
        registry, codec, store=store, schedule_retry=lambda *a: scheduled.append(a), dedup_ttl=60, claim_ttl=30
    )
    runner.process(messages)
    assert sorted(ran) == sorted([f"count {first}", f"count {second}"]) and len(scheduled) == 2
    store.finish([], {}, 60, release=[(first, WELCOME)], owner="failed")  # its handler failed
    assert runner.process_retry(*scheduled[0][:4]).ok  # type: ignore[union-attr]
    # Nobody renews the dead one's claim: once its lease ended, the check runs the handler.
    time.sleep(0.25)  # the dead holder's lease (0.2 s) running out, not a wait for work
    assert runner.process_retry(*scheduled[1][:4]).ok  # type: ignore[union-attr]
    assert ran.count("welcome a") == 1 and ran.count("welcome b") == 1


def test_without_workers_the_caller_waits_for_another_deliverys_claim(registry: Registry, codec: Any) -> None:
    messages, (event_id,) = logged(registry, codec, "a")
    store = MemoryStore()
    store.begin([], 60, claims=[(event_id, WELCOME)], owner="dead", lease=0.3)
    runner = Runner(registry, codec, store=store, dedup_ttl=60, claim_ttl=30)  # inline: no schedule_retry
    started = time.monotonic()
    results = runner.process(messages)
    assert time.monotonic() - started >= 0.25
    assert sorted(r.handler for r in results) == sorted([WELCOME, COUNT]) and all(r.ok for r in results)
    assert ran == [f"count {event_id}", "welcome a"]


@pytest.mark.parametrize("copies", [2, 4])
def test_deliveries_of_one_message_at_the_same_moment_run_each_handler_once(
    registry: Registry, codec: Any, copies: int
) -> None:
    gate = threading.Barrier(copies)

    def slow(event: BaseEvent) -> None:
        ran.append(f"slow {event.data['plan']}")
        time.sleep(0.05)  # the handler's own work, long enough for the copies to overlap

    registry.add_function_handler("users.Signup", slow)
    messages, ids = logged(registry, codec, "a", "b", "c")
    runner = Runner(registry, codec, store=MemoryStore(), dedup_ttl=60, claim_ttl=30)

    def deliver() -> None:
        gate.wait()
        runner.process(messages)

    threads = [threading.Thread(target=deliver) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    expected = [f"{name} {plan}" for plan in "abc" for name in ("welcome", "slow")]
    expected += [f"count {event_id}" for event_id in ids]
    assert sorted(ran) == sorted(expected)


class _RecordingStore(MemoryStore):
    """A memory store that records what each ``finish`` marked done."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[dict[str, list[str]]] = []

    def finish(self, keys: Any, marks: Any, ttl: float, **kwargs: Any) -> None:
        self.writes.append({eid: sorted(handlers) for eid, handlers in marks.items() if handlers})
        super().finish(keys, marks, ttl, **kwargs)


@pytest.mark.parametrize("interval", [10.0, 0.0])
def test_dedup_marks_are_group_committed_within_the_mark_interval(
    registry: Registry, codec: Any, monkeypatch: pytest.MonkeyPatch, interval: float
) -> None:
    """Fast handlers: one write marks the whole message. Past the interval (here: at once), each
    event's marks go out before the next event runs, so a crash re-runs only that interval's."""
    from flask_eventlib import runner as runner_module

    monkeypatch.setattr(runner_module, "MARK_INTERVAL", interval)
    messages, ids = logged(registry, codec, "a", "b", "c")
    store = _RecordingStore()
    Runner(registry, codec, store=store, dedup_ttl=60, claim_ttl=30).process(messages)
    every = {eid: sorted([WELCOME, COUNT]) for eid in ids}
    if interval:
        assert store.writes == [every]
    else:
        assert store.writes == [{eid: every[eid]} for eid in ids]
    # Either way every handler is marked: a duplicate runs nothing.
    ran.clear()
    assert Runner(registry, codec, store=store, dedup_ttl=60, claim_ttl=30).process(messages) == [] and ran == []
