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
from flask_eventlib.publishers import Capture, Eager, RequestBuffer, Router
from flask_eventlib.registry import Registry
from flask_eventlib.runner import Runner
from flask_eventlib.serialization import register_builtins
from flask_eventlib.store import MemoryStore

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
    current: list[list[str] | None] = [[]]
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
