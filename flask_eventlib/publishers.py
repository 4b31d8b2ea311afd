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
    from .locallog import LocalLog, Ticket
    from .publishing import Sender
    from .runner import Runner


class Publisher(Protocol):
    """Takes encoded events; returns at once or raises."""

    def publish(self, messages: list[str]) -> None: ...


class Background:
    """Hands events to the app's background :class:`~flask_eventlib.publishing.Sender`, once the
    local log keeps them (when there is one: ``EVENTLIB_DURABILITY`` is not ``"memory"``).

    :param local_log: where each event is written before ``log()`` returns.
    """

    def __init__(self, sender: Sender, local_log: LocalLog | None = None) -> None:
        self.sender = sender
        self.local_log = local_log

    def publish(self, messages: list[str]) -> None:
        log = self.local_log
        if log is None:
            self.sender.submit(messages)
            return
        ticket = log.append(messages)
        log.sync(ticket)
        self.sender.submit(messages, None if ticket is None else [ticket])

    def hand_over(self, pending: Pending) -> None:
        """A request's events, already in the local log: synced (``"machine"``), then sent."""
        if self.local_log is not None and pending.tickets:
            self.local_log.sync(pending.tickets[-1])
        self.sender.submit(pending.messages, pending.tickets)

    def discard(self, pending: Pending) -> None:
        """A request's events that are not to be sent: the local log forgets them too."""
        if self.local_log is not None:
            self.local_log.release(pending.tickets)


class Pending:
    """One request's events, kept for its end, and where the local log keeps them."""

    __slots__ = ("messages", "tickets")

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.tickets: list[Ticket] = []

    def __len__(self) -> int:
        return len(self.messages)


class RequestBuffer:
    """Inside a request, keeps the events for the request's end; elsewhere hands them on.

    Each event is written to the local log at once, so it is safe before ``log()`` returns;
    the request's end sends them together.

    :param then: where events go outside a request (and where the extension hands a request's
        events when it ends).
    :param current: the current request's :class:`Pending` events, or ``None`` outside a request
        and once the request's events were handed over (so later events are not stranded).
    :param local_log: where each event is written as it is logged (``None``: nowhere).
    """

    def __init__(
        self, then: Publisher, current: Callable[[], Pending | None], local_log: LocalLog | None = None
    ) -> None:
        self.then = then
        self.current = current
        self.local_log = local_log

    def publish(self, messages: list[str]) -> None:
        pending = self.current()
        if pending is None:
            self.then.publish(messages)
            return
        pending.messages.extend(messages)
        if self.local_log is not None:
            tickets = pending.tickets
            last = tickets[-1] if tickets else None
            ticket = self.local_log.append(messages, after=last)
            if ticket is not None and ticket is not last:
                tickets.append(ticket)


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
        #: Publishes encoded events: the active strategy's own method, so ``log()`` makes one
        #: call, not two.
        self.publish: Callable[[list[str]], None] = default.publish

    @contextlib.contextmanager
    def override(self, publisher: Publisher) -> Iterator[Publisher]:
        """Send events to ``publisher`` inside the ``with`` block (nested overrides stack)."""
        with self._lock:
            self._overrides = [*self._overrides, publisher]
            self.publish = publisher.publish
        try:
            yield publisher
        finally:
            with self._lock:
                overrides = list(self._overrides)
                overrides.reverse()
                overrides.remove(publisher)  # the latest entry of it, even if blocks end out of order
                overrides.reverse()
                self._overrides = overrides
                self.publish = (overrides[-1] if overrides else self.default).publish
