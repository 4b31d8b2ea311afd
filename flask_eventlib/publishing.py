"""How an encoded event leaves the process: the background sender, with the spool
(:mod:`flask_eventlib.spool`) behind it for broker outages.

``log()`` never waits for the broker. Encoded events are handed to a :class:`Sender`, whose
thread publishes them in batches (one broker message for all the events waiting, up to
``max_batch``). When the broker fails or takes longer than ``timeout``, the batch goes to a
durable local :class:`Spool` (SQLite), and everything after it too, so order is kept; the thread
drains the spool to the broker, oldest first, once the broker answers again.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import signals
from .forks import fork_waits, this_process
from .locallog import LocalLog, Ticket
from .spool import Send, Spool, SpoolError, SpoolFull

__all__ = ["Send", "Sender", "Spool", "SpoolError", "SpoolFull", "Waiting"]

logger = logging.getLogger("flask_eventlib")


class Sender:
    """A background thread that publishes batches of encoded events and spools what fails.

    :param send: publishes one batch as one message; raises on failure.
    :param spool: where batches wait while the broker is down (``None``: keep them in memory).
    :param max_batch: the most events in one message.
    :param retry_interval: seconds between attempts to reach a broker that failed; meanwhile
        new events go straight to the spool.
    :param linger: the least time between two messages: events arriving within ``linger`` of the
        last message wait for the next one, so under load each message carries many requests'
        events; after a quiet spell an event goes at once. :meth:`flush` cuts the wait short.
    :param backlog_depth: how many messages waiting in the broker's queue (as ``send`` reports
        it) mean that the workers are behind; then the sender waits ``backlog_linger`` instead of
        ``linger`` between two messages, or until it has ``max_batch`` events, so the queue the
        workers catch up on holds full messages, which they run faster than a message per
        request (each message has a cost of its own). An event waiting then waits behind those
        messages anyway. ``0``: never.
    :param backlog_linger: the least time between two messages while the workers are behind.
    :param max_memory: the most events held in memory while the broker is down and there is no
        working spool; past that new events are dropped, counted and signalled. Default: the
        spool's ``max_events`` (100,000 without a spool).
    :param spool_retry_interval: seconds before a spool that failed is tried again. The spool is
        needed only while the broker is down: until then delivery to the broker goes on.
    :param local_log: where ``log()`` wrote the events it submits (:mod:`flask_eventlib.locallog`);
        the sender releases them there once the broker or the spool has them, and every
        ``recover_interval`` seconds sends the events dead processes left in it.
    :param recover_interval: seconds between two looks for what other processes left behind:
        dead processes' events in the local log, and events in the spool (shared by the
        processes of a machine) that the process that put them there did not send.
    :param signal_sender: the sender of the signals it sends (the Flask app).
    :param tick: called from the thread with the sender about every ``tick_interval`` seconds
        (the console's figures: a heartbeat and a batch of counts); it must not block for long.
    :param stall_after: seconds events may wait for a thread that took none of them; then the
        next :meth:`submit` logs an error with where the thread is stuck (its stack), once per
        ``stall_after``. A healthy thread takes events within ``linger`` (a broker that does not
        answer within its timeout sends them to the spool).
    """

    def __init__(
        self,
        send: Send,
        *,
        spool: Spool | None = None,
        max_batch: int = 100,
        retry_interval: float = 1.0,
        linger: float = 0.0,
        backlog_depth: int = 0,
        backlog_linger: float = 0.5,
        max_memory: int | None = None,
        spool_retry_interval: float = 30.0,
        local_log: LocalLog | None = None,
        recover_interval: float = 1.0,
        signal_sender: Any = None,
        tick: Callable[[Sender], None] | None = None,
        tick_interval: float = 1.0,
        stall_after: float = 30.0,
    ) -> None:
        self.send = send
        self.signal_sender = signal_sender
        self.spool = spool
        self.max_batch = max_batch
        self.retry_interval = retry_interval
        self.linger = linger
        self.backlog_depth = backlog_depth
        self.backlog_linger = backlog_linger
        #: The last depth ``send`` reported was ``backlog_depth`` or more: the workers are behind.
        self.behind = False
        self.max_memory = max_memory if max_memory is not None else (spool.max_events if spool else 100_000)
        self.spool_retry_interval = spool_retry_interval
        self.local_log = local_log
        self.recover_interval = recover_interval
        self.tick = tick
        self.tick_interval = tick_interval
        self.stall_after = stall_after
        self._next_tick = 0.0
        self._next_retry = 0.0
        self._next_recover = 0.0
        self._last_send = 0.0
        self._backed_up = False  # the last message was full: events may be waiting for the next
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._fresh_state()
        self._broker_down = False
        self._spool_usable_at = 0.0  # a failed spool rests until then
        self._spool_failing = False
        self._spool_dirty = False  # the spool may hold events a drain has not reached yet
        #: Events dropped because the spool (or the memory backlog) was full.
        self.dropped = 0
        #: Times the spool failed to open, read or write.
        self.spool_failures = 0
        self._retries_done = 0
        _senders.add(self)

    def _fresh_state(self) -> None:
        """Locks, queue and counts of this process (a forked child starts with new ones: a lock
        a parent's thread held at the fork would never be released in the child)."""
        self._hurry = threading.Event()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[list[str], list[Ticket]] | None] = queue.SimpleQueue()
        self._submitted = 0
        self._done = 0
        self._done_cond = threading.Condition()
        self._retried = threading.Condition()
        self._backlog: list[str] = []  # in memory, when there is no working spool
        self._backlog_tickets: list[Ticket] = []  # released once the backlog is sent
        self._held = False
        #: Since when the events not yet done have waited for the thread (a look, not a lock:
        #: for the stall report only), and when a stall was last reported.
        self._waiting_since = 0.0
        self._stall_reported = 0.0

    # -- the caller's side -------------------------------------------------------------------

    def submit(self, messages: list[str], tickets: list[Ticket] | None = None) -> None:
        """Hand over encoded events (and where the local log keeps them); returns at once."""
        if not messages:
            return
        self._ensure_thread()
        with self._done_cond:
            if self._submitted == self._done:
                self._waiting_since = time.monotonic()
            elif time.monotonic() - self._waiting_since > self.stall_after:
                self._report_stall()
            self._submitted += len(messages)
            full = self.behind and self._submitted - self._done >= self.max_batch
        self._queue.put((messages, tickets or []))
        if full:  # the workers are behind, and a full message waits: no need to linger for more
            self._hurry.set()

    def _report_stall(self) -> None:
        """Say that the thread took no events for ``stall_after`` seconds, and where it is."""
        now = time.monotonic()
        if now - self._stall_reported < self.stall_after:
            return
        self._stall_reported = now
        thread = self._thread
        frame = sys._current_frames().get(thread.ident) if thread is not None and thread.ident else None
        where = "".join(traceback.format_stack(frame)) if frame is not None else "(no thread)\n"
        logger.error(
            "flask-eventlib: %d events have waited %.0fs for the sender's thread, which took none of them; "
            "it is at:\n%s",
            self._submitted - self._done,
            now - self._waiting_since,
            where.rstrip(),
        )

    def start(self) -> None:
        """Start the thread now, not at the first event: it recovers dead processes' events."""
        self._ensure_thread()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything submitted so far is published or spooled; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._hurry.set()
        with self._done_cond:
            target = self._submitted
            while self._done < target:
                self._ensure_thread()  # a thread that stopped is replaced, and picks up the queue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._done_cond.wait(remaining if remaining is None else min(remaining, 1.0))
        return True

    def shutdown(self, timeout: float = 5.0) -> int:
        """At exit: send what was submitted, try the broker once more for what waits (in memory or
        in the spool), and log how many events are left and where; return that number.

        Called for every sender at interpreter exit. Events left in the spool or the local log are
        sent by the next process that uses the same file; events only in memory are lost.
        """
        deadline = time.monotonic() + timeout
        if self.local_log is not None and self._pid == os.getpid():
            self._recover()  # a last look for dead siblings' events, which would wait for the next start
        self.flush(timeout)
        if self._thread is not None and (self._backlog or self._broker_down or self._spooled()):
            with self._retried:
                target = self._retries_done + 1
                self._queue.put(None)  # asks the thread for one more attempt, now
                while self._retries_done < target and (left := deadline - time.monotonic()) > 0:
                    self._retried.wait(left)
        with self._done_cond:
            queued = self._submitted - self._done
        in_memory, spooled = len(self._backlog) + queued, self._spooled()
        if self.local_log is not None:
            kept = self.local_log.pending()  # in memory too, but safe: not lost
            self.local_log.close()
            if kept:
                logger.warning(
                    "flask-eventlib: %d events are left in the local log %s at exit; the next process using it sends "
                    "them",
                    kept,
                    self.local_log.folder,
                )
                in_memory = max(in_memory - kept, 0)
        if spooled:
            logger.warning(
                "flask-eventlib: %d events are left in the spool %s at exit; the next process using it sends them",
                spooled,
                self.spool.path if self.spool else None,
            )
        if in_memory:
            logger.error("flask-eventlib: %d events in memory were not sent before exit: they are lost", in_memory)
        return in_memory + spooled

    def _spooled(self) -> int:
        if self.spool is None:
            return 0
        with contextlib.suppress(SpoolError):  # the thread logs the spool's failures
            return self.spool.pending()
        return 0

    def pending(self) -> int:
        """Events submitted but not yet published or spooled, plus those waiting in memory or the spool."""
        with self._done_cond:
            waiting = self._submitted - self._done
        return waiting + len(self._backlog) + self._spooled()

    def waiting(self) -> Waiting:
        """What waits for the broker here, and the oldest event of each place it waits in."""
        with self._done_cond:
            queued = self._submitted - self._done
        oldest = self._backlog[:1]  # the thread may change it meanwhile: a look, not a count to trust
        spooled = self._spooled()
        if spooled and self.spool is not None:
            with contextlib.suppress(SpoolError):  # the thread logs the spool's failures
                first = self.spool.oldest()
                oldest += [first] if first else []
        logged = 0
        if self.local_log is not None:
            logged = self.local_log.pending()
            first = self.local_log.oldest() if logged else None
            oldest += [first] if first else []
        return Waiting(queued, len(self._backlog), spooled, logged, oldest, self.behind)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == this_process[0]:  # on every hand-over: no os.getpid() call
            return
        with self._lock:
            if self._pid != os.getpid():
                # After a fork the parent's thread is gone, and what it held is the parent's to send.
                self._pid = os.getpid()
                self._thread = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flask-eventlib-sender", daemon=True)
                self._thread.start()
                _running.add(self)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        """The thread's body: it outlives any error; should it end anyway, it says so and the next
        :meth:`submit` starts another, which takes over the queue."""
        try:
            self._check_leftovers()
            while True:
                try:
                    self._step()
                except Exception:
                    logger.exception("The flask-eventlib sender failed unexpectedly; it goes on")
                    self._hurry.wait(self.retry_interval)  # no busy loop if it keeps failing
        except BaseException:  # logged here; raising on would only print it again on stderr
            logger.exception("The flask-eventlib sender thread stopped; the next log() starts another")
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _check_leftovers(self) -> None:
        if self.spool is None:
            return
        try:
            if self.spool.pending():
                self._broker_down = True  # left over by an earlier process: drain it first
        except Exception as exc:
            self._spool_dirty = True  # it may hold an earlier process's events: tried again later
            self._spool_failed(exc)

    def _step(self) -> None:
        timeout = self.retry_interval if self._needs_retry() else None
        if self.local_log is not None or self.spool is not None:
            now = time.monotonic()
            if now >= self._next_recover:
                self._next_recover = now + self.recover_interval
                if self.local_log is not None:
                    self._recover()
                self._look_at_spool()
            timeout = min(timeout or self.recover_interval, self.recover_interval)
        if self.tick is not None:
            now = time.monotonic()
            if now >= self._next_tick:
                self._next_tick = now + self.tick_interval
                try:
                    with fork_waits():  # it writes to Redis
                        self.tick(self)
                except Exception:
                    logger.exception("flask-eventlib: the sender's tick (the console's figures) failed")
            timeout = min(timeout or self.tick_interval, self.tick_interval)
        linger = self.backlog_linger if self.behind else self.linger
        if linger and not self._backed_up:
            # Right after a message, the linger is slept out before the queue is looked at: the
            # requests that end meanwhile do not wake the thread (each wake takes the GIL, and
            # the CPU, from the requests); they all go in the next message. After a quiet spell
            # the queue's first event still goes at once; after a full message (more waits) the
            # next goes at once too. A flush() cuts the wait short.
            wait = self._last_send + linger - time.monotonic()
            if wait > 0:
                self._hurry.wait(wait)
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            if self._needs_retry():
                self._retry_backlog()
            return
        if first is None:  # shutdown() asks for one more attempt at once
            try:
                self._retry_backlog()
            finally:
                with self._retried:
                    self._retries_done += 1
                    self._retried.notify_all()
            return
        batch, tickets = list(first[0]), list(first[1])
        self._take_waiting(batch, tickets)
        if linger and len(batch) < self.max_batch and not self._hurry.is_set():
            # At most one message per `linger` seconds: events that come after a quiet spell
            # go at once; under load, those of the requests ending meanwhile join the next
            # message. Waiting on an Event, not the queue, so later submits don't wake the thread.
            wait = self._last_send + linger - time.monotonic()
            if wait > 0:
                self._hurry.wait(wait)
                self._take_waiting(batch, tickets)
        self._hurry.clear()
        self._last_send = time.monotonic()
        self._backed_up = len(batch) >= self.max_batch
        handled = 0
        self._held = False
        try:
            for start in range(0, len(batch), self.max_batch):
                self._deliver(batch[start : start + self.max_batch])
                handled = start + self.max_batch
        except BaseException:
            self._hold(batch[handled:])  # not lost with the thread: the next one sends them
            raise
        finally:
            # What the broker or the spool took is released from the local log; what waits
            # in memory stays in it until the backlog is sent.
            if self._held:
                self._backlog_tickets.extend(tickets)
            elif tickets and self.local_log is not None:
                self.local_log.release(tickets)
            with self._done_cond:
                self._done += len(batch)
                self._waiting_since = time.monotonic()  # what still waits, waits from now
                self._done_cond.notify_all()

    def _take_waiting(self, batch: list[str], tickets: list[Ticket]) -> None:
        """Move submitted events into ``batch`` without waiting, up to ``max_batch``."""
        while len(batch) < self.max_batch:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return
            if more is not None:
                batch.extend(more[0])
                tickets.extend(more[1])

    def _recover(self) -> None:
        """Send what dead processes left in the local log (each segment taken by one process)."""
        assert self.local_log is not None
        try:
            self.local_log.recover(self.submit, self.max_batch)
        except Exception:
            logger.exception("flask-eventlib: recovering the local log %s failed", self.local_log.folder)

    def _look_at_spool(self) -> None:
        """Drain what another process left in the shared spool: one that died before it could
        (a SIGKILL a moment after its broker timed out), or one that cannot reach the broker
        while this one can. Without this look, such events would wait for a process to start.
        Each batch is claimed in a transaction, so processes draining together send each once."""
        if self.spool is None or self._needs_retry() or not self._spool_usable():
            return  # draining already, or resting a spool that failed
        try:
            found = self.spool.pending()
        except SpoolError as exc:
            self._spool_failed(exc)
            return
        if found:
            logger.info(
                "flask-eventlib: sending the %d events another process left in the spool %s", found, self.spool.path
            )
            self._spool_dirty = True

    def _has_backlog(self) -> bool:
        """Events wait for a broker that failed: new ones queue up behind them, in order."""
        return bool(self._backlog) or self._broker_down

    def _needs_retry(self) -> bool:
        """Something waits to be sent: the backlog, or a spool whose drain failed part way."""
        return self._has_backlog() or self._spool_dirty

    def _deliver(self, batch: list[str]) -> None:
        # While the broker is down, events go straight to the spool; the broker is tried again
        # once per retry_interval, not for every batch (a dead broker can take a timeout to say no).
        if self._needs_retry() and time.monotonic() >= self._next_retry:
            self._retry_backlog()
        if not self._has_backlog():
            try:
                self._send(batch)
                return
            except Exception as exc:
                self._broker_down = True
                self._next_retry = time.monotonic() + self.retry_interval
                logger.warning("%s; keeping them in the spool", _broker_failure(len(batch), exc))
        self._keep(batch, "broker unavailable")

    def _send(self, batch: list[str]) -> None:
        # A fork waits until the publish is done: the child would copy the locks kombu, Celery
        # and redis-py hold meanwhile, held by a thread it does not have (see flask_eventlib.forks).
        with fork_waits():
            depth = self.send(batch)
        if isinstance(depth, int) and self.backlog_depth:
            self._workers_behind(depth >= self.backlog_depth, depth)

    def _workers_behind(self, behind: bool, depth: int) -> None:
        if behind == self.behind:
            return
        self.behind = behind
        if behind:
            logger.info(
                "flask-eventlib: %d messages wait in the broker's queue: the workers are behind; the sender now "
                "fills its messages (up to %d events, or %gs)",
                depth,
                self.max_batch,
                self.backlog_linger,
            )
        else:
            logger.info(
                "flask-eventlib: the workers have caught up (%d messages wait); the sender is back to its %gs linger",
                depth,
                self.linger,
            )

    def _spool_usable(self) -> bool:
        return self.spool is not None and time.monotonic() >= self._spool_usable_at

    def _keep(self, batch: list[str], reason: str) -> None:
        """Keep a batch the broker did not take: in the spool, or in memory if it has failed."""
        if self.spool is not None and self._spool_usable():
            try:
                self.spool.put(batch)
            except SpoolFull as exc:
                self._drop(batch, str(exc))
                return
            except Exception as exc:
                self._spool_failed(exc)
            else:
                self._spool_works()
                signals.send(signals.events_spooled, self.signal_sender, count=len(batch), reason=reason)
                return
        self._hold(batch)
        signals.send(signals.events_spooled, self.signal_sender, count=len(batch), reason=reason)

    def _hold(self, batch: list[str]) -> None:
        """Keep events in memory, up to ``max_memory``; drop (count, log, signal) the rest."""
        self._held = True
        room = max(self.max_memory - len(self._backlog), 0)
        self._backlog.extend(batch[:room])
        if len(batch) > room:
            self._drop(batch[room:], f"{self.max_memory} events already wait in memory")

    def _drop(self, batch: list[str], reason: str) -> None:
        self.dropped += len(batch)
        logger.error("Dropped %d events: %s (%d dropped so far)", len(batch), reason, self.dropped)
        signals.send(signals.events_dropped, self.signal_sender, count=len(batch), reason=reason)

    def _spool_failed(self, exc: Exception) -> None:
        """A spool that cannot be used rests a while; delivery to a healthy broker goes on."""
        self.spool_failures += 1
        self._spool_usable_at = time.monotonic() + self.spool_retry_interval
        path = self.spool.path if self.spool is not None else None
        if not self._spool_failing:
            self._spool_failing = True
            logger.error(
                "The spool %s failed (%s); events still go to the broker, and while it is down they "
                "wait in memory (at most %d). Trying the spool again every %gs.",
                path,
                exc,
                self.max_memory,
                self.spool_retry_interval,
            )
        else:
            logger.debug("The spool %s still fails: %s", path, exc)
        signals.send(signals.spool_failed, self.signal_sender, path=path, error=exc)

    def _spool_works(self) -> None:
        if self._spool_failing:
            self._spool_failing = False
            logger.warning("The spool %s works again", self.spool.path if self.spool else None)

    def _retry_backlog(self) -> None:
        try:
            while self._backlog:
                batch = self._backlog[: self.max_batch]
                self._send(batch)
                del self._backlog[: len(batch)]
            if self._backlog_tickets and self.local_log is not None:
                tickets, self._backlog_tickets = self._backlog_tickets, []
                self.local_log.release(tickets)
            if self.spool is not None and self._spool_usable():
                try:
                    while self.spool.drain(self._send, max_batch=self.max_batch):
                        pass
                except SpoolError as exc:
                    self._spool_dirty = True  # drained again once it rests, while the broker is used
                    self._spool_failed(exc)
                else:
                    self._spool_dirty = False
                    self._spool_works()
            if self._broker_down and not self._spool_dirty:
                logger.warning("The broker answers again; the events kept meanwhile were sent")
            elif self._broker_down:
                logger.warning("Trying the broker again; the spool's events wait until the spool can be read")
            self._broker_down = False
        except Exception as exc:
            self._broker_down = True
            self._next_retry = time.monotonic() + self.retry_interval
            logger.debug("The broker is still unavailable: %s", exc)


@dataclass(frozen=True)
class Waiting:
    """What :meth:`Sender.waiting` found: events not yet at the broker, by where they wait."""

    queued: int  #: handed to the sender, not yet published nor kept
    memory: int  #: held in memory (no working spool)
    spool: int  #: in the spool
    local_log: int  #: in this process's local log (including those queued)
    #: The oldest encoded event of each place that holds any (memory, spool, local log).
    oldest: list[str]
    #: The workers are behind: the sender fills its messages (:attr:`Sender.behind`).
    behind: bool = False


#: The senders whose thread runs in this process, told to finish at interpreter exit.
_running: weakref.WeakSet[Sender] = weakref.WeakSet()
#: Every sender of this process.
_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_senders):
        sender._fresh_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _shut_down_all() -> None:
    for sender in list(_running):
        if sender._pid != os.getpid():
            continue  # a forked child's copy: its parent's to finish
        try:  # one sender's failure must not keep the others from finishing
            sender.shutdown(timeout=5.0)
        except Exception:
            logger.exception("flask-eventlib: a sender failed to finish at exit")


def _broker_failure(count: int, exc: BaseException) -> str:
    """What the sender says when a publish failed: a timeout is not a refusal, and counts agree."""
    events = f"{count} event{'' if count == 1 else 's'}"
    text = f"{type(exc).__name__}: {exc}"
    # redis-py's "Timeout reading from socket" comes as its own TimeoutError, py-amqp's as "timed out".
    said = f"{type(exc).__name__} {exc}".lower()
    if isinstance(exc, TimeoutError) or "timeout" in said or "timed out" in said:
        return f"The broker did not answer in time, for {events} ({text})"
    return f"The broker refused {events} ({text})"
