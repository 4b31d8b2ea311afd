"""Events for the delivery tests: handlers that fail, recover, refuse, or take time."""

from __future__ import annotations

import time

from flask_eventlib import BaseEvent, DontRetry, handler

from ..recorder import client, key, record


class FailsTwice(BaseEvent):
    """``flaky`` fails on its first two attempts, then succeeds; ``steady`` always succeeds."""

    @handler
    def steady(self) -> None:
        record("FailsTwice.steady", self)

    @handler(retries=3)
    def flaky(self) -> None:
        attempt = client().incr(key(f"attempts:{self.id}"))
        if attempt <= 2:
            raise RuntimeError(f"attempt {attempt} fails")
        record("FailsTwice.flaky", self, attempt=attempt)


class AlwaysFails(BaseEvent):
    """``broken`` fails until the key ``fixed:<data['fix']>`` is set."""

    @handler
    def fine(self) -> None:
        record("AlwaysFails.fine", self)

    @handler(retries=2)
    def broken(self) -> None:
        client().incr(key(f"attempts:{self.id}"))
        if not client().get(key(f"fixed:{self.data('fix')}")):
            raise RuntimeError("still broken")
        record("AlwaysFails.broken", self)


class Permanent(BaseEvent):
    @handler(retries=5)
    def refuse(self) -> None:
        client().incr(key(f"attempts:{self.id}"))
        raise DontRetry("customer 7 was deleted")


class Work(BaseEvent):
    """Counts each run per event id, after ``ms`` milliseconds of work."""

    @handler
    def work(self) -> None:
        time.sleep(self.data("ms", 0) / 1000)  # the handler's own work, not a wait for work
        client().hincrby(key("runs"), self.id or "", 1)
