"""Publishing strategies: where ``log()`` hands an event once it is validated and encoded.

The app's :class:`Router` holds one strategy, chosen by ``init_app`` from the settings, and lets a
test put another in front of it for a while (``capture_events``). Each strategy is built before
whatever uses it; none is patched afterwards. None imports Flask: the request buffer asks a
function given by the extension for the current request's list.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .publishing import Sender
    from .runner import Runner


class Publisher(Protocol):
    """Takes encoded events; returns at once or raises."""

    def publish(self, messages: list[str]) -> None: ...


class Background:
    """Hands events to the app's background :class:`~flask_eventlib.publishing.Sender`."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    def publish(self, messages: list[str]) -> None:
        self.sender.submit(messages)


class RequestBuffer:
    """Inside a request, keeps the events for the request's end; elsewhere hands them on.

    :param then: where events go outside a request (and where the extension hands a request's
        events when it ends).
    :param current: the current request's list of events, or ``None`` outside a request and
        once the request's events were handed over (so later events are not stranded).
    """

    def __init__(self, then: Publisher, current: Callable[[], list[str] | None]) -> None:
        self.then = then
        self.current = current

    def publish(self, messages: list[str]) -> None:
        buffered = self.current()
        if buffered is None:
            self.then.publish(messages)
        else:
            buffered.extend(messages)


class Eager:
    """Runs the events' handlers at once, in the caller (``EVENTLIB_ALWAYS_EAGER``).

    :param runner: a runner that retries in the caller (:meth:`Runner.inline`).
    :param propagate: re-raise the first handler error once every handler ran.
    """

    def __init__(self, runner: Runner, *, propagate: bool = False) -> None:
        self.runner = runner
        self.propagate = propagate

    def publish(self, messages: list[str]) -> None:
        self.runner.process(messages, propagate=self.propagate)


class Capture:
    """Gives the events to ``receive`` instead of sending them (tests: ``capture_events``)."""

    def __init__(self, receive: Callable[[list[str]], None]) -> None:
        self.receive = receive

    def publish(self, messages: list[str]) -> None:
        self.receive(messages)


class Router:
    """The app's publisher: its configured strategy, or the override a test put in front of it.

    :param default: the strategy ``init_app`` chose.
    """

    def __init__(self, default: Publisher) -> None:
        self.default = default
        self._overrides: list[Publisher] = []
        self._lock = threading.Lock()
        self._active = default.publish  # the strategy's own method: one call on log()'s path

    def publish(self, messages: list[str]) -> None:
        self._active(messages)

    @contextlib.contextmanager
    def override(self, publisher: Publisher) -> Iterator[Publisher]:
        """Send events to ``publisher`` inside the ``with`` block (nested overrides stack)."""
        with self._lock:
            self._overrides = [*self._overrides, publisher]
            self._active = publisher.publish
        try:
            yield publisher
        finally:
            with self._lock:
                overrides = list(self._overrides)
                overrides.reverse()
                overrides.remove(publisher)  # the latest entry of it, even if blocks end out of order
                overrides.reverse()
                self._overrides = overrides
                self._active = (overrides[-1] if overrides else self.default).publish
