"""Helpers for the tests of apps that use flask-eventlib.

- :func:`capture_events` catches the events logged while it is active, without a broker and
  without running their handlers (unless asked), and offers ``assert_logged`` /
  ``assert_not_logged``. Captured events went through ``clean()`` and the serialization round
  trip, so a test still fails on data the real ``log()`` would refuse.
- The pytest fixture ``eventlib_events`` does the same around a test; it needs an ``app`` fixture.
  Make it available with ``pytest_plugins = ["flask_eventlib.testing"]`` in your ``conftest.py``.
- :func:`check_events` lists what is wrong with the registered events: events nobody handles,
  public events without a schema, handlers whose target matches no event, ``@handler`` methods of
  classes that are not events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload

from flask import Flask

from . import checks
from .events import BaseEvent
from .publishers import Capture
from .registry import Registry
from .state import state_of

_MISSING = object()


class CapturedEvents(Sequence[BaseEvent]):
    """The events logged while :func:`capture_events` was active, in the order they were logged.

    Each one is the event as a handler would receive it: name, ``data`` (cleaned, then encoded and
    decoded), ``id``, ``context`` and ``logged_at``.
    """

    def __init__(self) -> None:
        self._events: list[BaseEvent] = []
        #: The encoded messages, as they would have gone to the broker.
        self.messages: list[str] = []

    @overload
    def __getitem__(self, index: int) -> BaseEvent: ...
    @overload
    def __getitem__(self, index: slice) -> list[BaseEvent]: ...
    def __getitem__(self, index: int | slice) -> BaseEvent | list[BaseEvent]:
        return self._events[index]

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"<CapturedEvents {self.names}>"

    @property
    def names(self) -> list[str]:
        """The names of the captured events, in order."""
        return [event.name or "" for event in self._events]

    def named(self, name: str) -> list[BaseEvent]:
        """The captured events called ``name``."""
        return [event for event in self._events if event.name == name]

    def clear(self) -> None:
        """Forget the events captured so far."""
        self._events.clear()
        self.messages.clear()

    def assert_logged(self, name: str, /, **data: Any) -> BaseEvent:
        """Assert that an event ``name`` whose data has these items was logged; return the last one.

        ``events.assert_logged("deals.DealClick", deal_id=7)`` passes for ``{"deal_id": 7, ...}``;
        values are compared with the data the handlers receive (after the schema loaded it).

        :raises AssertionError: naming what was logged instead.
        """
        matches = self._matching(name, data)
        if not matches:
            raise AssertionError(f"No {_describe(name, data)} was logged; {self._summary()}")
        return matches[-1]

    def assert_not_logged(self, name: str, /, **data: Any) -> None:
        """Assert that no event ``name`` (with these data items, if given) was logged.

        :raises AssertionError: showing the events that match.
        """
        matches = self._matching(name, data)
        if matches:
            found = "; ".join(f"{event.name} {dict(event.data)!r}" for event in matches)
            raise AssertionError(f"Expected no {_describe(name, data)}, but {len(matches)} was logged: {found}")

    def _matching(self, name: str, data: dict[str, Any]) -> list[BaseEvent]:
        return [
            event
            for event in self.named(name)
            if all(event.data.get(key, _MISSING) == value for key, value in data.items())
        ]

    def _summary(self) -> str:
        if not self._events:
            return "no event was logged at all"
        listed = "; ".join(f"{event.name} {dict(event.data)!r}" for event in self._events)
        return f"logged: {listed}"

    def _add(self, message: str, event: BaseEvent) -> None:
        self.messages.append(message)
        self._events.append(event)


@contextmanager
def capture_events(app: Flask | None = None, *, run_handlers: bool = False) -> Iterator[CapturedEvents]:
    """Capture the events ``app`` logs inside the ``with`` block instead of sending them.

    ::

        with capture_events(app) as events:
            client.post("/deals/7/click")
        events.assert_logged("deals.DealClick", deal_id=7)

    Events are still found, cleaned and serialized as ``log()`` always does, so unknown names,
    invalid data and unserializable values raise as they would in production. They are captured
    at once, even inside a request (request batching is bypassed), and never reach the broker.

    :param app: the app whose events to capture (default: the current app).
    :param run_handlers: also run each event's handlers at once, in the caller, as eager mode
        does; the first handler error is raised after every handler ran.
    """
    state = state_of(app, caller="capture_events()")
    runner = state.runner.inline()  # a failing handler is retried at once in the caller, never sent
    captured = CapturedEvents()

    def receive(messages: list[str]) -> None:
        for message in messages:
            captured._add(message, runner.decode(message))
        if run_handlers:
            runner.process(messages, propagate=True)

    # Every log() goes through the app's publisher, so events a handler logs are captured too.
    with state.publisher.override(Capture(receive)):
        yield captured


# -- checking the registry ----------------------------------------------------------------------


def handler_labels(registry: Registry, name: str) -> list[str]:
    """The handlers of the event ``name`` in the order they run, named as the logs name them."""
    return registry.handler_labels(name)


def check_events(app: Flask | Registry | None = None) -> list[str]:
    """What is wrong with the registered events, one sentence each (empty when all is well).

    Reported: an event without any handler; a public event without a schema (browsers could
    send it anything); a ``schema`` that is not a Marshmallow schema; a function handler whose
    target matches no event (a misspelled name never runs); a ``@handler`` method in a class
    that is not a :class:`~flask_eventlib.BaseEvent` subclass (it never runs either); for an app,
    a module of its package with ``@handler`` functions that no setting lists.

    In a test: ``assert check_events(app) == []``. On the command line: ``flask eventlib check``.

    :param app: the app (default: the current one) or a :class:`~flask_eventlib.Registry`.
    """
    if isinstance(app, Registry):
        return checks.problems(app)
    state = state_of(app, caller="check_events()")
    return checks.problems(state.registry, package=state.package)


def _describe(name: str, data: dict[str, Any]) -> str:
    items = ", ".join(f"{key}={value!r}" for key, value in data.items())
    return f"{name} event with {items}" if items else f"{name} event"


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixture
    pass
else:

    @pytest.fixture
    def eventlib_events(app: Flask) -> Iterator[CapturedEvents]:
        """The events the test's ``app`` logs, captured instead of sent (see :func:`capture_events`)."""
        with capture_events(app) as events:
            yield events
