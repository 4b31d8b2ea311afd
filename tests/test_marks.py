"""Dedup marks in the runner, without Flask or a broker: the events of a message that finish
within ``mark_interval`` of the last write share one write; all are written before the message
is done; what finished is marked even when something escapes the runner."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from flask_eventlib import BaseEvent
from flask_eventlib.registry import Registry
from flask_eventlib.runner import Runner
from flask_eventlib.serialization import Codec
from flask_eventlib.store import MemoryStore, RunKey
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


def runner(registry: Registry, codec: Codec, store: MemoryStore, interval: float) -> Runner:
    return Runner(registry, codec, store=store, dedup_ttl=60, claim_ttl=30, mark_interval=interval)


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
        runner(registry, codec, store, 60).process(messages)
    assert [list(write) for write in store.writes] == [ids[:2]]
    # The redelivery runs only the event that was cut off.
    ran.clear()
    registry.function_handlers("users.Signup").remove(escapes)
    runner(registry, codec, store, 60).process(messages)
    assert ran == ["welcome last", f"count {ids[2]}"]


def test_the_apps_setting_reaches_its_runner(tmp_path: Any) -> None:
    from flask import Flask

    from flask_eventlib import ConfigurationError, EventLib

    def app(**settings: Any) -> Flask:
        made = Flask(__name__, instance_path=str(tmp_path))
        made.config.update(EVENTLIB_ALWAYS_EAGER=True, **settings)
        EventLib(made)
        return made

    assert app().extensions["eventlib"].runner.mark_interval == 0  # a write an event
    assert app(EVENTLIB_DEDUP_MARK_INTERVAL=0.005).extensions["eventlib"].runner.mark_interval == 0.005
    with pytest.raises(ConfigurationError, match="EVENTLIB_DEDUP_MARK_INTERVAL must be a number of at least 0"):
        app(EVENTLIB_DEDUP_MARK_INTERVAL=-1)
