"""Events for the delivery tests: handlers that fail, recover, refuse, take time, or kill their worker."""

from __future__ import annotations

import os
import signal
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


class KillsItsWorker(BaseEvent):
    """``kill`` kills its own worker process, as an OOM kill or a segfault does; ``before`` and
    ``after`` count their runs. Each kill is counted under ``kills:<id>`` first."""

    @handler
    def before(self) -> None:
        client().hincrby(key("runs"), f"{self.id}:before", 1)

    @handler(retries=1)
    def kill(self) -> None:
        client().incr(key(f"kills:{self.id}"))
        os.kill(os.getpid(), signal.SIGKILL)

    @handler
    def after(self) -> None:
        client().hincrby(key("runs"), f"{self.id}:after", 1)


class LogsOnward(BaseEvent):
    """``onward`` logs ``ops.Work`` (id ``<id>:next``) from inside the worker; with
    ``data['kill']`` it then kills its own worker process on its first run, as an OOM kill does,
    before the process had time to send the event it logged."""

    @handler
    def onward(self) -> None:
        from flask_eventlib.state import state_of

        state_of().log("ops.Work", {"ms": 0}, id=f"{self.id}:next")
        if self.data("kill", False) and client().incr(key(f"kills:{self.id}")) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
