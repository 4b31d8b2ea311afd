"""Dedup marks in the runner, without Flask or a broker: the events of a message that finish
within ``mark_interval`` of the last write share one write; all are written before the message
is done; what finished is marked even when something escapes the runner."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from flask_eventlib import BaseEvent
from flask_eventlib.registry import Registry
from flask_eventlib.runner import Runner
from flask_eventlib.serialization import Codec
from flask_eventlib.store import MemoryStore, RedisStore, RunKey, SQLiteStore, Store, succeeded
from tests.conftest import REDIS_URL
from tests.test_claims import codec, logged, registry
from tests.test_core import WorkerKilled, ran

__all__ = ["codec", "registry"]  # test_claims' fixtures: test_core's users.Signup, recording in `ran`


class CountingStore(MemoryStore):
    """A memory store that keeps the marks of each write it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[dict[str, list[str]]] = []

    def finish(self, keys: Iterable[RunKey], marks: Mapping[str, Iterable[str]], ttl: float, **options: Any) -> None:
        marks = {event_id: list(handlers) for event_id, handlers in marks.items()}
        if any(marks.values()):
            self.writes.append(marks)
        super().finish(keys, marks, ttl, **options)


def runner(registry: Registry, codec: Codec, store: MemoryStore, interval: float, lease: float = 30) -> Runner:
    return Runner(registry, codec, store=store, dedup_ttl=60, claim_ttl=lease, mark_interval=interval)


def test_events_finishing_within_the_interval_share_one_write(registry: Registry, codec: Codec) -> None:
    messages, ids = logged(registry, codec, "a", "b", "c")
    store = CountingStore()
    assert all(result.ok for result in runner(registry, codec, store, 60).process(messages))
    handlers = ["tests.test_core.Signup.welcome", "tests.test_core.count"]
    assert store.writes == [{event_id: handlers for event_id in ids}]  # one write, before the message is done
    # A redelivery finds every handler done, and its claims were released.
    ran.clear()
    assert runner(registry, codec, store, 60).process(messages) == [] and ran == []


def test_with_no_interval_each_event_is_written_as_it_finishes(registry: Registry, codec: Codec) -> None:
    messages, ids = logged(registry, codec, "a", "b", "c")
    store = CountingStore()
    runner(registry, codec, store, 0).process(messages)
    assert [list(write) for write in store.writes] == [[event_id] for event_id in ids]


def test_a_slow_event_is_written_as_it_finishes(registry: Registry, codec: Codec) -> None:
    def slow(event: BaseEvent) -> None:
        if event.data["plan"] == "slow":
            time.sleep(0.03)  # the handler's own work, longer than the interval

    registry.add_function_handler("users.Signup", slow)
    messages, ids = logged(registry, codec, "quick", "slow", "quick", "quick")
    store = CountingStore()
    runner(registry, codec, store, 0.02).process(messages)
    # The slow event's write carries the quick one before it; the last two share the final write.
    assert [list(write) for write in store.writes] == [ids[:2], ids[2:]]


def test_what_finished_is_marked_when_something_escapes_the_runner(registry: Registry, codec: Codec) -> None:
    def escapes(event: BaseEvent) -> None:
        if event.data["plan"] == "last":
            raise WorkerKilled  # no `except Exception` catches it: it leaves the runner

    registry.add_function_handler("users.Signup", escapes)
    messages, ids = logged(registry, codec, "a", "b", "last")
    store = CountingStore()
    with pytest.raises(WorkerKilled):
        runner(registry, codec, store, 60, lease=1).process(messages)
    assert [list(write) for write in store.writes] == [ids[:2]]
    # The redelivery runs only the event that was cut off (once the cut-off claims' 1 s lease ended).
    ran.clear()
    registry.function_handlers("users.Signup").remove(escapes)
    runner(registry, codec, store, 60, lease=1).process(messages)
    assert ran == ["welcome last", f"count {ids[2]}"]


def test_the_apps_setting_reaches_its_runner(tmp_path: Any) -> None:
    from flask import Flask

    from flask_eventlib import ConfigurationError, EventLib

    def app(**settings: Any) -> Flask:
        made = Flask(__name__, instance_path=str(tmp_path))
        made.config.update(EVENTLIB_ALWAYS_EAGER=True, **settings)
        EventLib(made)
        return made

    assert app().extensions["eventlib"].runner.mark_interval == 0.01  # a message of fast handlers: one write
    assert app(EVENTLIB_DEDUP_MARK_INTERVAL=0).extensions["eventlib"].runner.mark_interval == 0  # a write an event
    with pytest.raises(ConfigurationError, match="EVENTLIB_DEDUP_MARK_INTERVAL must be a number of at least 0"):
        app(EVENTLIB_DEDUP_MARK_INTERVAL=-1)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store: in memory, in a SQLite file, and on the real Redis under a prefix of the test's own."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        yield SQLiteStore(str(tmp_path / "store.sqlite3"))
        return
    prefix = f"eventlib-test:marks:{uuid.uuid4().hex[:8]}:"
    found = RedisStore(REDIS_URL, prefix=prefix)
    try:
        yield found
    finally:
        keys = list(found.client.scan_iter(f"{prefix}*"))
        if keys:
            found.client.delete(*keys)
        found.close()


def test_a_handler_dead_lettered_by_one_delivery_is_left_alone_by_a_duplicate_and_run_by_a_replay(
    registry: Registry, codec: Codec, any_store: Store
) -> None:
    calls: list[str] = []

    def fails(event: BaseEvent) -> None:
        calls.append(event.data["plan"])
        raise RuntimeError("the payment service says no")

    registry.add_function_handler("users.Signup", fails)
    messages, (event_id,) = logged(registry, codec, "a")
    first = Runner(registry, codec, store=any_store, dedup_ttl=60, claim_ttl=30, retries=0)
    results = first.process(messages)
    assert [(r.handler.rsplit(".", 1)[-1], r.dead_lettered) for r in results if r.error] == [("fails", True)]
    assert calls == ["a"] and len(any_store.dead_letters()) == 1
    # The same message again (the sender resent it after a timeout): nothing runs, nothing is added.
    ran.clear()
    again = Runner(registry, codec, store=any_store, dedup_ttl=60, claim_ttl=30, retries=0)
    assert again.process(messages) == [] and ran == [] and calls == ["a"]
    assert len(any_store.dead_letters()) == 1
    # The console's event page counts the handlers that succeeded, not the settled failure.
    assert succeeded(any_store.completed([event_id])[event_id]) == {
        "tests.test_core.Signup.welcome",
        "tests.test_core.count",
    }
    # A replay of the dead letter runs it again.
    (letter,) = any_store.dead_letters()
    again.replay(letter)
    assert calls == ["a", "a"]


def test_a_handler_a_delivery_handed_to_its_retries_is_run_by_them_not_by_a_duplicate(
    registry: Registry, codec: Codec, any_store: Store
) -> None:
    calls: list[int] = []
    scheduled: list[tuple[str, str, int, float | None, float]] = []

    def flaky(event: BaseEvent) -> None:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            raise ConnectionError("the mail server is away")

    def schedule(message: str, handler: str, attempt: int, first_failed_at: float | None, delay: float) -> None:
        scheduled.append((message, handler, attempt, first_failed_at, delay))

    registry.add_function_handler("users.Signup", flaky)
    messages, (event_id,) = logged(registry, codec, "a")

    def worker() -> Runner:
        return Runner(registry, codec, store=any_store, schedule_retry=schedule, dedup_ttl=60, claim_ttl=30)

    (failed,) = [r for r in worker().process(messages) if r.error]
    assert failed.retry_in is not None and calls == [1] and len(scheduled) == 1
    # A duplicate delivery neither runs it nor schedules anything, and leaves no claim behind.
    assert worker().process(messages) == [] and calls == [1] and len(scheduled) == 1
    # Nor does the check a duplicate schedules for a handler it found claimed (no first failure time).
    message, handler, attempt, first_failed_at, _ = scheduled[0]
    assert worker().process_retry(message, handler, 1, None) is None and calls == [1]
    # The retry runs it at once (no claim of the duplicate's to wait for), and it succeeds.
    result = worker().process_retry(message, handler, attempt, first_failed_at)
    assert result is not None and result.ok and calls == [1, 2]
    assert handler in any_store.completed([event_id])[event_id]
