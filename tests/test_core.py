"""The core without Flask, a broker or Celery: registry, log(), envelope, runner, publishers.

No Flask app, request or app context is made here: these tests drive the core's objects directly.
That the core's modules import no Flask is the first import-linter contract in pyproject.toml.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from flask_eventlib import BaseEvent, Codec, EventNotFound, EventNotPublic, SerializationError, ValidationError, handler
from flask_eventlib.dispatch import Dispatcher
from flask_eventlib.envelope import FORMAT_VERSION, Envelope, decode, encode
from flask_eventlib.publishers import Capture, Eager, Pending, RequestBuffer, Router
from flask_eventlib.registry import Registry
from flask_eventlib.runner import Runner, message_key
from flask_eventlib.serialization import register_builtins
from flask_eventlib.store import DELIVERY, MemoryStore

ran: list[str] = []


class Signup(BaseEvent):
    public = True

    def clean(self) -> None:
        self.require_data_keys(["plan"])

    @handler
    def welcome(self) -> None:
        ran.append(f"welcome {self.data['plan']}")


class Internal(BaseEvent):
    @handler
    def note(self) -> None:
        ran.append("note")


@handler("users.Signup")
def count(event: BaseEvent) -> None:
    ran.append(f"count {event.id}")


def fails_once(event: BaseEvent) -> None:
    ran.append("fails_once")
    if ran.count("fails_once") == 1:
        raise RuntimeError("flaky")


class WorkerKilled(BaseException):
    """Stands for a SIGKILL of the worker: no ``except Exception`` catches it, nothing after it runs."""


def kills_on_poison(event: BaseEvent) -> None:
    if event.data["plan"] == "poison":
        ran.append("killed")
        raise WorkerKilled


def fails_then_kills(event: BaseEvent) -> None:
    ran.append("attempt")
    if ran.count("attempt") == 1:
        raise RuntimeError("an ordinary failure: retried")
    raise WorkerKilled


def deliver_until_it_survives(run: Any) -> tuple[int, Any]:
    """Call ``run`` as a broker redelivers a message whose worker died: until it returns."""
    for delivery in range(1, 11):
        try:
            return delivery, run()
        except WorkerKilled:
            continue
    pytest.fail("still killing its worker after 10 deliveries")


@pytest.fixture
def codec() -> Codec:
    fresh = Codec()
    register_builtins(fresh)
    return fresh


@pytest.fixture
def registry() -> Registry:
    ran.clear()
    found = Registry()
    found.register_module("users", sys.modules[__name__])  # the events, and the marked function
    return found


def test_a_module_scan_finds_its_events_and_marked_functions(registry: Registry) -> None:
    assert list(registry.events()) == ["users.Internal", "users.Signup"]
    assert registry.name_of(Signup) == "users.Signup" and registry.name_of(BaseEvent) is None
    assert registry.handler_labels("users.Signup") == [f"{__name__}.Signup.welcome", f"{__name__}.count"]
    assert registry.function_handlers("users.Internal") == []  # count is for users.Signup only
    assert "name" not in vars(Signup)  # nothing is written onto the class another app could see


def test_log_runs_eagerly_through_the_envelope(registry: Registry, codec: Codec) -> None:
    runner = Runner(registry, codec, store=MemoryStore(), dedup_ttl=60)
    dispatcher = Dispatcher(registry, codec, Router(Eager(runner.inline())))
    event_id = dispatcher.log("users.Signup", {"plan": "pro"})
    assert ran == ["welcome pro", f"count {event_id}"]
    with pytest.raises(ValidationError, match="plan"):
        dispatcher.log("users.Signup", {})
    with pytest.raises(EventNotFound, match="There is no event named Nope in the users app"):
        dispatcher.log("users.Nope")
    with pytest.raises(EventNotPublic, match="users.Internal is not public"):
        dispatcher.log("users.Internal", public_only=True)
    assert ran == ["welcome pro", f"count {event_id}"]  # nothing else ran


def test_capture_then_run_the_messages_in_a_runner_with_dedup(registry: Registry, codec: Codec) -> None:
    messages: list[str] = []
    dispatcher = Dispatcher(registry, codec, Router(Capture(messages.extend)))
    event_id = dispatcher.log("users.Signup", {"plan": "free"}, id="2f1c0f6e-8b1a-4c5e-9f0a-3d2b1c4e5f6a")
    assert event_id == "2f1c0f6e-8b1a-4c5e-9f0a-3d2b1c4e5f6a" and ran == []
    runner = Runner(registry, codec, store=MemoryStore(), dedup_ttl=60)
    results = runner.process(messages + messages)  # a duplicate delivery in the same message
    assert [result.ok for result in results] == [True, True]
    assert ran == ["welcome free", f"count {event_id}"]  # each handler once


def test_a_failing_handler_is_retried_alone_and_its_neighbours_run(registry: Registry, codec: Codec) -> None:
    registry.add_function_handler("users.Signup", fails_once)
    messages: list[str] = []
    Dispatcher(registry, codec, Router(Capture(messages.extend))).log("users.Signup", {"plan": "x"})
    results = Runner(registry, codec, store=MemoryStore(), retries=2).process(messages)
    assert [(r.handler.rpartition(".")[2], r.ok, r.attempt) for r in results] == [
        ("welcome", True, 1),
        ("count", True, 1),
        ("fails_once", True, 2),  # retried inline (no schedule_retry) and succeeded
    ]
    assert ran.count("welcome x") == 1


def test_the_request_buffer_keeps_events_until_they_are_handed_over(registry: Registry, codec: Codec) -> None:
    sent: list[str] = []
    current: list[Pending | None] = [Pending()]
    buffer = RequestBuffer(Capture(sent.extend), lambda: current[0])
    router = Router(buffer)
    dispatcher = Dispatcher(registry, codec, router)
    dispatcher.log("users.Signup", {"plan": "a"})
    assert sent == [] and len(current[0] or []) == 1
    current[0] = None  # outside a request, or after the hand-over
    dispatcher.log("users.Signup", {"plan": "b"})
    assert len(sent) == 1
    overridden: list[str] = []
    with router.override(Capture(overridden.extend)):
        dispatcher.log("users.Signup", {"plan": "c"})
    dispatcher.log("users.Signup", {"plan": "d"})
    assert len(overridden) == 1 and len(sent) == 2


def test_an_envelope_round_trips_and_a_bad_one_is_refused_field_by_field(codec: Codec) -> None:
    envelope = Envelope("2f1c0f6e-8b1a-4c5e-9f0a-3d2b1c4e5f6a", "users.Signup", {"plan": "pro"}, {"ip": "::1"})
    assert decode(encode(envelope, codec), codec) == envelope
    base: dict[str, Any] = {"v": FORMAT_VERSION, "id": "x", "name": "users.Signup", "data": {}}
    bad = {
        "id": ({"id": ["a", "list"]}, "'id' must be a non-empty string, not list"),
        "name": ({"name": 7}, "'name' must be a non-empty string, not int"),
        "data": ({"data": [1]}, "'data' must be an object, not list"),
        "context": ({"context": "x"}, "'context' must be an object, not str"),
        "logged_at": ({"logged_at": "yesterday"}, "'logged_at' is not an ISO 8601 time"),
        "version": ({"v": 99}, "Not a flask-eventlib event envelope"),
    }
    for change, message in bad.values():
        with pytest.raises(SerializationError, match=message):
            decode(codec.dumps({**base, **change}), codec)


def test_a_bad_envelope_is_dead_lettered_alone_and_its_neighbours_run(registry: Registry, codec: Codec) -> None:
    messages: list[str] = []
    dispatcher = Dispatcher(registry, codec, Router(Capture(messages.extend)))
    first = dispatcher.log("users.Signup", {"plan": "one"})
    crafted = codec.dumps({"v": FORMAT_VERSION, "id": ["not", "an", "id"], "name": "users.Signup", "data": {}})
    last = dispatcher.log("users.Signup", {"plan": "two"})
    store = MemoryStore()
    Runner(registry, codec, store=store, dedup_ttl=60).process([messages[0], crafted, messages[1]])
    assert ran == ["welcome one", f"count {first}", "welcome two", f"count {last}"]
    (letter,) = store.dead_letters()
    assert letter.handler == "" and "'id' must be a non-empty string" in letter.error


@pytest.mark.parametrize("dedup_ttl", [60, 0], ids=["dedup", "no-dedup"])
def test_a_handler_that_kills_its_worker_is_dead_lettered_after_its_attempts_and_its_neighbours_run(
    registry: Registry, codec: Codec, dedup_ttl: float
) -> None:
    registry.add_function_handler("users.Signup", kills_on_poison)  # after welcome and count
    messages: list[str] = []
    dispatcher = Dispatcher(registry, codec, Router(Capture(messages.extend)))
    ids = [dispatcher.log("users.Signup", {"plan": plan}) for plan in ["a", "b", "poison", "d", "e"]]
    store = MemoryStore()
    runner = Runner(registry, codec, store=store, retries=1, dedup_ttl=dedup_ttl)
    deliveries, results = deliver_until_it_survives(lambda: runner.process(messages))  # one message
    # The first delivery runs at full speed and cannot tell which handler died; the next ones
    # count each start: the worker dies twice (retries=1, plus one) in kills_on_poison, then the
    # fourth delivery dead-letters it instead of running it.
    assert deliveries == 4 and ran.count("killed") == 3
    (letter,) = store.dead_letters()
    assert (letter.event_id, letter.handler, letter.attempts) == (ids[2], f"{__name__}.kills_on_poison", 2)
    assert letter.error.startswith("WorkerDied(") and "the worker died 2 times while running it" in letter.error
    (dead,) = [r for r in results if r.dead_lettered]
    assert dead.handler == letter.handler and not [r for r in results if not r.ok and not r.dead_lettered]
    # The events before the poison ran once (with dedup; without, each delivery runs them again),
    # the two after it once, in the last delivery.
    before = 1 if dedup_ttl else deliveries
    for plan, event_id, times in zip(["a", "b", "d", "e"], ids[:2] + ids[3:], [before, before, 1, 1], strict=True):
        assert ran.count(f"welcome {plan}") == times and ran.count(f"count {event_id}") == times
    # The poison's own handlers before kills_on_poison: with dedup, the first delivery died before
    # marking them done and the second marked each as it finished.
    assert ran.count("welcome poison") == (2 if dedup_ttl else deliveries)
    # Every start was finished or forgotten (without dedup, with the next message's begin):
    # nothing is left counted for a later delivery.
    dispatcher.log("users.Signup", {"plan": "next"})
    runner.process(messages[-1:])
    keys = [(message_key(ids), DELIVERY), (ids[2], letter.handler)]
    assert set(store.begin(keys, 60).unfinished.values()) == {0}


def test_a_retry_that_kills_its_worker_is_counted_and_ordinary_failures_are_not(
    registry: Registry, codec: Codec
) -> None:
    registry.add_function_handler("users.Signup", fails_then_kills)
    messages: list[str] = []
    Dispatcher(registry, codec, Router(Capture(messages.extend))).log("users.Signup", {"plan": "x"})
    scheduled: list[tuple[Any, ...]] = []
    store = MemoryStore()
    runner = Runner(
        registry, codec, store=store, schedule_retry=lambda *args: scheduled.append(args), retries=2, dedup_ttl=60
    )
    results = runner.process(messages)
    assert [r.retry_in is not None for r in results] == [False, False, True]  # retried as today
    ((message, label, attempt, first_failed_at, _),) = scheduled
    deliveries, result = deliver_until_it_survives(
        lambda: runner.process_retry(message, label, attempt, first_failed_at)
    )
    # A retry counts its own start: three deaths (retries=2, plus one), then the dead letter.
    assert deliveries == 4 and ran.count("attempt") == 4
    assert result.dead_lettered and "the worker died 3 times" in repr(result.error)
    (letter,) = store.dead_letters()
    assert (letter.handler, letter.attempts, letter.first_failed_at) == (label, 3, first_failed_at)
    assert store.begin([(letter.event_id, label)], 60).unfinished == {(letter.event_id, label): 0}
