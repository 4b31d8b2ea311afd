"""How an encoded event leaves the process: a background sender, and a spool for broker outages.

``log()`` never waits for the broker. Encoded events are handed to a :class:`Sender`, whose
thread publishes them in batches (one broker message for all the events waiting, up to
``max_batch``). When the broker fails or takes longer than ``timeout``, the batch goes to a
durable local :class:`Spool` (SQLite), and everything after it too, so order is kept; the thread
drains the spool to the broker, oldest first, once the broker answers again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable

from . import signals

logger = logging.getLogger("flask_eventlib")

#: Publishes one list of encoded events as one broker message; raises when it cannot.
Send = Callable[[list[str]], None]


class SpoolFull(Exception):
    """The spool holds its maximum number of events."""


class Spool:
    """A durable FIFO of event batches in a SQLite file, shared safely by the processes using it.

    :param path: the SQLite file.
    :param max_events: the most events it holds; past that :meth:`put` raises :class:`SpoolFull`.
    """

    def __init__(self, path: str, max_events: int = 100_000) -> None:
        self.path = path
        self.max_events = max_events
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.RLock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS spool ("
                "id INTEGER PRIMARY KEY AUTOINCREMENT, count INTEGER NOT NULL, body TEXT NOT NULL)"
            )
            self._db, self._pid = db, os.getpid()
        return self._db

    def put(self, messages: list[str]) -> None:
        """Append a batch durably.

        :raises SpoolFull: when it would hold more than ``max_events`` events.
        """
        with self._lock:
            self._put(messages)

    def _put(self, messages: list[str]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            (held,) = db.execute("SELECT COALESCE(SUM(count), 0) FROM spool").fetchone()
            if held + len(messages) > self.max_events:
                raise SpoolFull(f"the spool {self.path} holds {held} events (max {self.max_events})")
            db.execute("INSERT INTO spool (count, body) VALUES (?, ?)", (len(messages), json.dumps(messages)))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def pending(self) -> int:
        """How many events it holds."""
        with self._lock:
            (held,) = self._conn().execute("SELECT COALESCE(SUM(count), 0) FROM spool").fetchone()
        return int(held)

    def drain(self, send: Send, limit: int = 100) -> int:
        """Send the oldest batches, oldest first, removing each once sent; return events sent.

        Stops at the first failure (which propagates) so order is kept. A batch is claimed in a
        transaction, so two processes sharing the spool never send the same batch.
        """
        with self._lock:
            return self._drain(send, limit)

    def _drain(self, send: Send, limit: int) -> int:
        db = self._conn()
        sent = 0
        for _ in range(limit):
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT id, body FROM spool ORDER BY id LIMIT 1").fetchone()
            if row is None:
                db.execute("COMMIT")
                break
            try:
                messages = json.loads(row[1])
                send(messages)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("DELETE FROM spool WHERE id = ?", (row[0],))
            db.execute("COMMIT")
            sent += len(messages)
        return sent


class Sender:
    """A background thread that publishes batches of encoded events and spools what fails.

    :param send: publishes one batch as one message; raises on failure.
    :param spool: where batches wait while the broker is down (``None``: keep retrying in memory).
    :param max_batch: the most events in one message.
    :param retry_interval: seconds between attempts to reach a broker that failed; meanwhile
        new events go straight to the spool.
    :param linger: the least time between two messages: events arriving within ``linger`` of the
        last message wait for the next one, so under load each message carries many requests'
        events; after a quiet spell an event goes at once. :meth:`flush` cuts the wait short.
    """

    def __init__(
        self,
        send: Send,
        *,
        spool: Spool | None = None,
        max_batch: int = 100,
        retry_interval: float = 1.0,
        linger: float = 0.0,
    ) -> None:
        self.send = send
        self.spool = spool
        self.max_batch = max_batch
        self.retry_interval = retry_interval
        self.linger = linger
        self._hurry = threading.Event()
        self._next_retry = 0.0
        self._last_send = 0.0
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._submitted = 0
        self._done = 0
        self._done_cond = threading.Condition()
        self._backlog: list[str] = []  # in memory, when there is no spool
        self._broker_down = False
        self.dropped = 0

    # -- the caller's side -------------------------------------------------------------------

    def submit(self, messages: list[str]) -> None:
        """Hand over encoded events; returns at once."""
        if not messages:
            return
        self._ensure_thread()
        with self._done_cond:
            self._submitted += len(messages)
        self._queue.put(messages)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything submitted so far is published or spooled; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._hurry.set()
        with self._done_cond:
            target = self._submitted
            while self._done < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._done_cond.wait(remaining)
        return True

    def pending(self) -> int:
        """Events submitted but not yet published or spooled, plus those waiting in the spool."""
        with self._done_cond:
            waiting = self._submitted - self._done
        return waiting + len(self._backlog) + (self.spool.pending() if self.spool else 0)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                # After a fork the parent's thread is gone: start afresh in this process.
                self._queue = queue.SimpleQueue()
                self._submitted = self._done = 0
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="flask-eventlib-sender", daemon=True)
                self._thread.start()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        if self.spool is not None and self.spool.pending():
            self._broker_down = True  # left over by an earlier process: drain it first
        while True:
            timeout = self.retry_interval if self._has_backlog() else None
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._retry_backlog()
                continue
            batch = list(first or [])
            self._take_waiting(batch)
            if self.linger and len(batch) < self.max_batch and not self._hurry.is_set():
                # At most one message per `linger` seconds: events that come after a quiet spell
                # go at once; under load, those of the requests ending meanwhile join the next
                # message. Waiting on an Event, not the queue, so later submits don't wake the thread.
                wait = self._last_send + self.linger - time.monotonic()
                if wait > 0:
                    self._hurry.wait(wait)
                    self._take_waiting(batch)
            self._hurry.clear()
            self._last_send = time.monotonic()
            for start in range(0, len(batch), self.max_batch):
                self._deliver(batch[start : start + self.max_batch])
            with self._done_cond:
                self._done += len(batch)
                self._done_cond.notify_all()

    def _take_waiting(self, batch: list[str]) -> None:
        """Move submitted events into ``batch`` without waiting, up to ``max_batch``."""
        while len(batch) < self.max_batch:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return
            batch.extend(more or [])

    def _has_backlog(self) -> bool:
        return bool(self._backlog) or self._broker_down

    def _deliver(self, batch: list[str]) -> None:
        # While the broker is down, events go straight to the spool; the broker is tried again
        # once per retry_interval, not for every batch (a dead broker can take a timeout to say no).
        if self._has_backlog() and time.monotonic() >= self._next_retry:
            self._retry_backlog()
        if not self._has_backlog():
            try:
                self.send(batch)
                return
            except Exception as exc:
                self._broker_down = True
                self._next_retry = time.monotonic() + self.retry_interval
                logger.warning("The broker refused %d events (%s); keeping them in the spool", len(batch), exc)
        self._keep(batch, "broker unavailable")

    def _keep(self, batch: list[str], reason: str) -> None:
        if self.spool is None:
            self._backlog.extend(batch)
            signals.send(signals.events_spooled, self, count=len(batch), reason=reason)
            return
        try:
            self.spool.put(batch)
        except SpoolFull as exc:
            self.dropped += len(batch)
            logger.error("Dropped %d events: %s (%d dropped so far)", len(batch), exc, self.dropped)
            signals.send(signals.events_dropped, self, count=len(batch), reason=str(exc))
        except Exception:
            self.dropped += len(batch)
            logger.exception("Dropped %d events: the spool %s failed", len(batch), self.spool.path)
            signals.send(signals.events_dropped, self, count=len(batch), reason="spool failed")
        else:
            signals.send(signals.events_spooled, self, count=len(batch), reason=reason)

    def _retry_backlog(self) -> None:
        try:
            if self._backlog:
                while self._backlog:
                    batch = self._backlog[: self.max_batch]
                    self.send(batch)
                    del self._backlog[: len(batch)]
            if self.spool is not None:
                while self.spool.drain(self.send):
                    pass
            if self._broker_down:
                logger.warning("The broker answers again; the spooled events were sent")
            self._broker_down = False
        except Exception as exc:
            self._broker_down = True
            self._next_retry = time.monotonic() + self.retry_interval
            logger.debug("The broker is still unavailable: %s", exc)
