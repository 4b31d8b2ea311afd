"""The worker's side of an event's journey: decode, run each handler, retry, dead-letter, dedup.

A :class:`Runner` is one app's; it needs no Flask app, broker or Celery: the Celery task (or the
eager publisher, or a test) hands it encoded messages, inside whatever context the caller sets up.

A handler that kills its worker (an OOM kill, a segfault) raises nothing to catch: the broker
redelivers the message, and the handler would kill the next worker too. So the store counts
starts that never finish. Each delivery counts that it began the message, with the dedup read,
and forgets it with the last event's dedup write: the usual path costs no extra round trip. A
delivery that finds the message begun and never finished runs the handlers not yet done one at a
time, counting each handler's start, and dead-letters a handler whose worker already died
``retries + 1`` times while running it, instead of running it again.

Two deliveries of the same event at the same moment (a redelivery while the first still runs, a
client's retry, a batch sent twice) must not both run a handler. So with dedup on, a delivery
claims each (event id, handler) it is about to run, in the same atomic step that reads the dedup
marks, and gives the claim up in the step that marks the handler done (or, if it failed, without
a mark, so that its retry or another delivery can run it). A claim has a lease, renewed by a
thread of the process while the delivery runs: a worker that dies renews nothing, and its claims
end with their lease. A delivery that finds a handler claimed by another leaves it to the holder
and checks again when the lease would end (a retry task; in the caller without one): by then the
holder has marked it done (nothing to do), given it up, or died (the claim expired: it runs it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import random
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from . import envelope, signals
from .events import BaseEvent
from .exceptions import DontRetry, WorkerDied
from .forks import fork_waits
from .handlers import policy_of
from .registry import Registry
from .serialization import Codec
from .store import DELIVERY, SETTLED, Begun, DeadLetter, RunKey, Store
from .streams import STEP as STREAM_STEP
from .streams import Sent, StreamPublisher

logger = logging.getLogger("flask_eventlib")
#: One INFO line per event a worker processed, with each handler's outcome (a child of
#: ``flask_eventlib``: set its level to WARNING to silence it alone).
outcomes = logging.getLogger("flask_eventlib.outcomes")

#: ``(message, handler, attempt, first_failed_at, delay)``: run one handler again later.
ScheduleRetry = Callable[[str, str, int, "float | None", float], None]


class Spans(Protocol):
    """Runs one attempt of a handler inside a trace span (:class:`flask_eventlib.tracing.HandlerSpans`)."""

    def run(self, call: Callable[[], Any], event: BaseEvent, handler: str, attempt: int, retries: int) -> None: ...


class Watcher(Protocol):
    """Told of every attempt of a handler, straight from the runner (the console's figures and
    Prometheus metrics): cheaper than a signal a run, and the counts of a message go together.

    ``record`` is called in the worker right after each attempt, so it must be quick (keep the
    result, count it); ``commit`` once the attempts of a message, or of a retry, were recorded.
    """

    def record(self, result: HandlerResult) -> None: ...

    def commit(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Runner:
    """Runs the handlers of encoded events for one app.

    :param registry: the app's events and function handlers.
    :param codec: how the events were encoded.
    :param store: where dedup marks and dead letters are kept (``None``: neither).
    :param schedule_retry: sends one handler's retry to the workers; ``None`` retries at once, in
        the caller (eager mode and tests).
    :param retries: default number of retries of a failing handler.
    :param backoff: default seconds before the first retry (doubling, with jitter).
    :param backoff_max: the longest wait between two attempts.
    :param dedup_ttl: seconds during which a handler that succeeded for an event id is not run
        again for the same id; 0 turns dedup off.
    :param mark_interval: the longest time, in seconds, the dedup marks of a message's finished
        events wait to be written together (what a worker killed mid-message may re-run besides
        the handler it was in); 0 writes them after each event. All are written before the
        message is acknowledged.
    :param signal_sender: the sender of the signals it sends (the Flask app).
    :param starts_ttl: seconds a start that never finished is remembered in the store: longer
        than the broker takes to redeliver a dead worker's message.
    :param claim_ttl: the lease, in seconds, of a delivery's claim on a handler it is about to
        run, renewed every third of it while the delivery runs; what a crashed worker's claims
        outlive it by at most. 0 turns claims off; they need dedup (``dedup_ttl``) and a store.
    :param spans: runs each handler attempt in a trace span (:class:`flask_eventlib.tracing.HandlerSpans`,
        with ``EVENTLIB_TRACING``); ``None``: no spans.
    :param streams: publishes each event to the Redis Streams its name is routed to, in one
        round trip a message, sent before the handlers run and read after (``None``: no streams).
        A publish that fails is retried and dead-lettered as a handler named ``flask_eventlib.streams``.
    :param watchers: told of every attempt of a handler (:class:`Watcher`); the signals
        ``handler_succeeded`` and ``handler_failed`` are sent as well, for the app's own receivers.
    """

    registry: Registry
    codec: Codec
    store: Store | None = None
    schedule_retry: ScheduleRetry | None = None
    retries: int = 3
    backoff: float = 1.0
    backoff_max: float = 300.0
    dedup_ttl: float = 0.0
    mark_interval: float = 0.0
    signal_sender: Any = None
    starts_ttl: float = 86_400.0
    claim_ttl: float = 0.0
    spans: Spans | None = None
    streams: StreamPublisher | None = None
    watchers: tuple[Watcher, ...] = ()
    #: Without dedup, the delivery counts of finished messages, forgotten with the next begin.
    _finished: collections.deque[RunKey] = dataclasses.field(
        default_factory=collections.deque, init=False, repr=False, compare=False
    )
    #: Renews the claims of the deliveries running in this process.
    _keeper: _Keeper = dataclasses.field(default_factory=lambda: _Keeper(), init=False, repr=False, compare=False)

    def inline(self) -> Runner:
        """This runner with retries run at once, in the caller, instead of sent to the workers."""
        return dataclasses.replace(self, schedule_retry=None)

    def decode(self, message: str | bytes) -> BaseEvent:
        """Rebuild the event an encoded message stands for (its data is trusted, not cleaned).

        :raises SerializationError: for a message that is not a valid envelope.
        :raises EventNotFound: for an event this app does not know.
        """
        found = envelope.decode(message, self.codec)
        cls = self.registry.find(found.name)
        return cls(
            found.data,
            id=found.id,
            context=found.context,
            logged_at=found.logged_at,
            registry=self.registry,
            name=found.name,
            trace=found.trace,
        )

    def process(self, messages: Iterable[str], *, propagate: bool = False) -> list[HandlerResult]:
        """Decode each message and run its event's handlers; return what happened.

        Every handler gets its chance: a failing handler is logged at ERROR with its traceback on
        the ``flask_eventlib`` logger, retried alone later (or at once without ``schedule_retry``),
        and dead-lettered after its last attempt; the next handler runs meanwhile. Handlers that
        already succeeded for an event id (within ``dedup_ttl``) are skipped, and so are those an
        earlier delivery saw fail: their retries or their dead letter own them. A message that
        cannot be decoded is logged and dead-lettered alone; the others are still processed. When
        an earlier delivery of the same messages began and never finished (its worker died), the
        handlers run one at a time, each start counted, and a handler whose worker died
        ``retries + 1`` times while running it is dead-lettered (:class:`WorkerDied`). With
        claims on, a handler another delivery is running is left to it and checked again when its
        claim's lease would end (:meth:`process_retry`). With ``streams``, the events routed to
        streams are published in one round trip, sent before the handlers run and read after.

        :param propagate: re-raise the first error once every handler of every message has run.
        """
        try:
            return self._process(messages, propagate)
        finally:
            for watcher in self.watchers:
                watcher.commit()

    def _process(self, messages: Iterable[str], propagate: bool) -> list[HandlerResult]:
        decoded: list[tuple[str, BaseEvent]] = []
        first_error: BaseException | None = None
        for message in messages:
            try:
                decoded.append((message, self.decode(message)))
            except Exception as exc:
                self._undecodable(message, exc)
                first_error = first_error or exc
        event_ids = list(dict.fromkeys(event.id or "" for _, event in decoded))
        # One count for the whole message: a redelivery after a death needs care only for the
        # events not done yet, and the dedup marks already tell which those are.
        keys = [(message_key(event_ids), DELIVERY)] if event_ids else []
        calls = [list(event._handler_calls()) for _, event in decoded]
        owner = uuid.uuid4().hex
        claims: list[RunKey] = []
        if self._claiming:
            claims = [
                (event.id or "", label) for (_, event), found in zip(decoded, calls, strict=True) for label, _ in found
            ]
        # One round trip: the message's count, the dedup marks and the claims of all its events.
        begun = self._begin(
            keys,
            done=event_ids if self.dedup_ttl else [],
            forget=self._take_finished(),
            claims=claims,
            owner=owner,
        )
        held = begun.held
        # The claims this delivery got: on handlers to run, and on handlers whose failure is
        # settled (their retries run them, not this delivery), given up with the first write so
        # that a retry does not wait for their lease. A done handler's claim is never taken.
        taken: list[RunKey] = []
        stray: list[RunKey] = []
        for run in claims:
            event_marks = begun.done.get(run[0], set())
            if run not in held and run[1] not in event_marks:
                (stray if SETTLED + run[1] in event_marks else taken).append(run)
        self._hold(owner, taken)
        died = begun.unfinished.get(keys[0], 0) if keys else 0
        if died and (taken or not claims):
            logger.warning(
                "A message of %s was left unfinished by %s (a worker died): running the handlers not "
                "yet done one at a time, counting each start",
                _count(len(event_ids), "event"),
                _count(died, "earlier delivery", "earlier deliveries"),
                extra={"event_ids": event_ids},
            )
        # Sent now, read once the handlers ran: the answer comes while they run.
        streaming = self._send_to_streams(decoded)
        results: list[HandlerResult] = []
        deferred: list[tuple[str, BaseEvent, str, float]] = []
        # The marks (and claims to release) of finished events not written yet, and when the last
        # write went: after a death every event is marked as it ends.
        unmarked: dict[str, list[str]] = {}
        unreleased: list[RunKey] = stray
        interval = 0.0 if died else self.mark_interval
        marked_at = time.monotonic()
        try:
            for position, ((message, event), found) in enumerate(zip(decoded, calls, strict=True), 1):
                event_id = event.id or ""
                skip = begun.done.setdefault(event_id, set())
                marks: list[str] = []
                ran: list[RunKey] = []
                start = len(results)
                for label, call in found:
                    if label in skip or SETTLED + label in skip:
                        continue
                    if (event_id, label) in held:
                        deferred.append((message, event, label, held[event_id, label]))
                        skip.add(label)
                        continue
                    ran.append((event_id, label))
                    if died:
                        result = self._counted_attempt(message, event, label, call, 1, None)
                    else:
                        result = self._attempt(message, event, label, call, 1, None)
                    results.append(result)
                    # A failure is settled too: retried (the retry runs it) or dead-lettered.
                    marks.append(label if result.error is None else SETTLED + label)
                    if result.error is not None:
                        first_error = first_error or result.error
                    # A retried or dead-lettered handler is not run again for a duplicate either.
                    skip.add(label)
                log_outcome(event, results[start:])
                if self.dedup_ttl:
                    # Marked once `mark_interval` has passed since the last write, so a worker killed
                    # mid-message re-runs little: the handlers of that interval and the one it was in
                    # (a slow handler's event is marked as it ends). The claims go in the same write,
                    # and the last event's write also forgets the message's count (a round trip of its
                    # own only when there is nothing to mark). Sent without waiting for the store's
                    # answer but the last, which reads them all before the message is acknowledged.
                    unmarked[event_id] = [*unmarked.get(event_id, ()), *marks]
                    if claims:
                        unreleased += ran
                    last = position == len(decoded)
                    if last or not interval or time.monotonic() - marked_at >= interval:
                        self._finish(keys if last else [], unmarked, unreleased, owner, wait=last)
                        unmarked, unreleased = {}, []
                        if interval:  # no clock read per event with 0 (a write an event)
                            marked_at = time.monotonic()
        except BaseException:
            if unmarked or unreleased:
                # An exception escaped (not a handler's: those are caught): what finished is
                # marked all the same, so a redelivery does not run it again.
                self._finish([], unmarked, unreleased, owner, wait=True)
            raise
        finally:
            if claims:
                # An exception that escaped (not a handler's: those are caught) leaves claims
                # unreleased: stop renewing them, so they end with their lease.
                self._keeper.forget(owner)
            streamed = streaming.wait() if streaming is not None else None
        if streamed is not None and streaming is not None:
            for result in self._stream_failed(streaming, streamed):
                results.append(result)
                first_error = first_error or result.error
        if deferred:
            results += self._defer(deferred)
        if not self.dedup_ttl and self.store is not None:
            # Without dedup there is no write to ride on, and the count need not go before the
            # acknowledgement: a redelivery runs every handler again anyway. So it goes with this
            # process's next begin, in its round trip; only a duplicate of the message could read
            # it first, and it would run its handlers one at a time.
            self._finished.extend(keys)
        if propagate and first_error is not None:
            raise first_error
        return results

    def process_retry(
        self, message: str, handler: str, attempt: int, first_failed_at: float | None
    ) -> HandlerResult | None:
        """Run one handler of an encoded event again (a retry, a replay, the check of a handler
        another delivery had claimed); ``None`` if already done, or left to another delivery.

        Its start is counted, as in a redelivered event, and a handler whose worker died
        ``retries + 1`` times while retrying it is dead-lettered (:class:`WorkerDied`). With claims
        on, a handler another delivery holds is checked again when that claim's lease would end:
        by a retry task, or here, waiting, without ``schedule_retry``.
        """
        try:
            return self._process_retry(message, handler, attempt, first_failed_at)
        finally:
            for watcher in self.watchers:
                watcher.commit()

    def _process_retry(
        self, message: str, handler: str, attempt: int, first_failed_at: float | None
    ) -> HandlerResult | None:
        event = self.decode(message)
        event_id = event.id or ""
        key = (event_id, handler)
        owner = uuid.uuid4().hex
        claims = [key] if self._claiming else []
        pause = _FIRST_PAUSE
        while True:
            begun = self._begin([key], done=[event_id] if self.dedup_ttl else [], claims=claims, owner=owner)
            marks = begun.done.get(event_id, set())
            if handler in marks:
                if not claims:  # a claimed start that was done was not counted
                    self._finish([key], {})
                return None
            if first_failed_at is None and SETTLED + handler in marks:
                # A retry and a replay (they carry the first failure's time) run a handler whose
                # failure is settled; the check of a handler a duplicate delivery found claimed
                # does not. Its start was counted, and its claim taken unless another holds it.
                if not claims or key not in begun.held:
                    self._finish([key], {}, claims, owner)
                return None
            if key not in begun.held:
                break
            if self.schedule_retry is not None:
                self._log_deferred(1, [event_id], begun.held[key])
                self._schedule_check(message, event, handler, attempt, first_failed_at, begun.held[key])
                return None
            # No workers to send the check to: wait here, polling a little less often each time.
            time.sleep(min(pause, self._check_delay(begun.held[key])))
            pause *= 2
        self._hold(owner, claims)
        for label, call in self._calls(message, event):
            if label == handler:
                died = begun.unfinished.get(key, 0)
                try:
                    return self._counted_attempt(
                        message, event, label, call, attempt, first_failed_at, died=died, owner=owner, release=claims
                    )
                finally:
                    self._keeper.forget(owner)
        self._finish([key], {}, claims, owner)
        error = LookupError(f"The event {event.name} has no handler {handler} any more")
        self._dead_letter(message, event, handler, attempt, error, "", first_failed_at or time.time())
        return HandlerResult(event, handler, error, attempt=attempt, dead_lettered=True)

    def replay(self, letter: DeadLetter) -> None:
        """Run a dead letter's handler again, through the workers (at once without ``schedule_retry``)."""
        # The first failure's time makes it a retry, which runs a handler whose failure is settled.
        first_failed_at = letter.first_failed_at or time.time()
        if self.schedule_retry is None:
            self.process_retry(letter.message, letter.handler, 1, first_failed_at)
        else:
            self.schedule_retry(letter.message, letter.handler, 1, first_failed_at, 0.0)

    def _counted_attempt(
        self,
        message: str,
        event: BaseEvent,
        label: str,
        call: Callable[[], Any],
        attempt: int,
        first_failed_at: float | None,
        *,
        died: int | None = None,
        owner: str = "",
        release: list[RunKey] | None = None,
    ) -> HandlerResult:
        """:meth:`_attempt`, its start counted in the store first and forgotten once it returns.

        :param died: the earlier starts that never finished, when the caller already counted
            this start; otherwise it is counted here (a round trip).
        :param release: claims of ``owner`` to give up with the handler's mark.
        """
        event_id = event.id or ""
        key = (event_id, label)
        if died is None:
            died = self._begin([key]).unfinished.get(key, 0)
        budget = self._retries(call) + 1
        if died >= budget:
            error = WorkerDied(
                f"Handler {label} for event {event.name} (id {event_id}) is not run again: the worker died "
                f"{_count(died, 'time')} while running it. Fix the handler (its memory use, a crashing "
                "extension), then replay this dead letter"
            )
            logger.error(
                "Handler %s for event %s (id %s) killed its worker %s: dead-lettered without running it again",
                label,
                event.name,
                event_id,
                _count(died, "time"),
                extra={"event_name": event.name, "event_id": event_id, "handler": label, "attempt": attempt},
            )
            # The dead letter first: dying in between leaves a duplicate dead letter, not a loop.
            self._dead_letter(message, event, label, died, error, "", first_failed_at or time.time())
            self._finish([key], {event_id: [SETTLED + label]}, release or [], owner)
            return HandlerResult(event, label, error, attempt=attempt, dead_lettered=True)
        if died:
            logger.error(
                "Handler %s for event %s (id %s): the worker died %s while running it; start %d of %d",
                label,
                event.name,
                event_id,
                _count(died, "time"),
                died + 1,
                budget,
                extra={"event_name": event.name, "event_id": event_id, "handler": label, "attempt": attempt},
            )
        result = self._attempt(message, event, label, call, attempt, first_failed_at)
        self._finish([key], {event_id: [label if result.error is None else SETTLED + label]}, release or [], owner)
        return result

    def _attempt(
        self,
        message: str,
        event: BaseEvent,
        label: str,
        call: Callable[[], Any],
        attempt: int,
        first_failed_at: float | None,
    ) -> HandlerResult:
        """Run one handler; on failure log it and retry it (inline or later) or dead-letter it."""
        policy = policy_of(_target(call))
        retries = self._retries(call)
        backoff = policy.backoff if policy and policy.backoff is not None else self.backoff
        sender = self.signal_sender
        spans = self.spans
        while True:
            started = time.perf_counter()
            try:
                if spans is None:
                    call()
                else:
                    spans.run(call, event, label, attempt, retries)
            except Exception as exc:
                duration = time.perf_counter() - started
                now = time.time()
                first_failed_at = first_failed_at or now
                final = isinstance(exc, DontRetry) or attempt > retries
                delay = 0.0 if final else self._delay(backoff, attempt)
                if isinstance(exc, DontRetry):
                    outcome = "dead-lettered (DontRetry)"
                elif final:
                    outcome = "dead-lettered"
                else:
                    outcome = "retrying" if self.schedule_retry is None else f"retrying in {delay:.2f}s"
                logger.error(
                    "Handler %s failed for event %s (id %s), attempt %d of %d: %s",
                    label,
                    event.name,
                    event.id,
                    attempt,
                    retries + 1,
                    outcome,
                    exc_info=True,
                    extra={"event_name": event.name, "event_id": event.id, "handler": label, "attempt": attempt},
                )
                tried = HandlerResult(event, label, exc, attempt=attempt, duration=duration)
                for watcher in self.watchers:
                    watcher.record(tried)
                signals.send(
                    signals.handler_failed,
                    sender,
                    event=event,
                    handler=label,
                    attempt=attempt,
                    error=exc,
                    duration=duration,
                )
                if final:
                    self._dead_letter(message, event, label, attempt, exc, traceback.format_exc(), first_failed_at)
                    tried.dead_lettered = True
                    return tried
                signals.send(signals.handler_retried, sender, event=event, handler=label, attempt=attempt, delay=delay)
                if self.schedule_retry is None:
                    attempt += 1
                    continue
                try:
                    self.schedule_retry(message, label, attempt + 1, first_failed_at, delay)
                except Exception as publish_error:
                    logger.error("Cannot schedule a retry of %s for event %s: %s", label, event.id, publish_error)
                    self._dead_letter(message, event, label, attempt, exc, traceback.format_exc(), first_failed_at)
                    tried.dead_lettered = True
                    return tried
                tried.retry_in = delay
                return tried
            else:
                duration = time.perf_counter() - started
                result = HandlerResult(event, label, None, attempt=attempt, duration=duration)
                for watcher in self.watchers:
                    watcher.record(result)
                signals.send(
                    signals.handler_succeeded, sender, event=event, handler=label, attempt=attempt, duration=duration
                )
                return result

    def _retries(self, call: Callable[[], Any]) -> int:
        """The handler's retries: its policy's, or the app's default."""
        policy = policy_of(_target(call))
        return policy.retries if policy and policy.retries is not None else self.retries

    def _delay(self, backoff: float, attempt: int) -> float:
        """Exponential backoff with jitter: half the step fixed, half random."""
        step = min(self.backoff_max, backoff * 2 ** (attempt - 1))
        return float(step / 2 + random.uniform(0, step / 2))

    def _dead_letter(
        self,
        message: str,
        event: BaseEvent | None,
        handler: str,
        attempts: int,
        error: BaseException,
        trace: str,
        first_failed_at: float,
    ) -> None:
        letter = DeadLetter(
            event_id=(event.id if event else None) or "",
            event_name=(event.name if event else None) or "",
            handler=handler,
            message=message if isinstance(message, str) else bytes(message).decode("utf-8", "replace"),
            error=repr(error),
            traceback=trace,
            attempts=attempts,
            first_failed_at=first_failed_at,
            last_failed_at=time.time(),
        )
        if self.store is None:
            logger.error(
                "No dead-letter store: the failed event %s for %s is only in this log", letter.event_id, handler
            )
            return
        try:
            self.store.add_dead_letter(letter)
        except Exception:
            # The message is not logged: it may hold personal data sent by a browser.
            logger.exception("Cannot store the dead letter of event %s for %s", letter.event_id, handler)
            return
        if event is not None:
            signals.send(
                signals.handler_dead_lettered,
                self.signal_sender,
                event=event,
                handler=handler,
                attempt=attempts,
                error=error,
            )

    def _undecodable(self, message: str | bytes, error: Exception) -> None:
        logger.error("Cannot process an event message: %s", error, exc_info=True)
        self._dead_letter(str(message), None, "", 1, error, traceback.format_exc(), time.time())

    # -- streams (EVENTLIB_STREAMS): the publish step, after the begin and around the handlers -----

    def _send_to_streams(self, decoded: list[tuple[str, BaseEvent]]) -> Sent | None:
        """Send the publish of the events routed to streams, without waiting for its answer."""
        if self.streams is None:
            return None
        routed = [(message, event) for message, event in decoded if self.streams.streams_for(event.name or "")]
        if not routed:
            return None
        items = [(message, event.id or "", event.name or "") for message, event in routed]
        return self.streams.send(items, paired=routed)

    def _stream_failed(self, sent: Sent, error: BaseException) -> list[HandlerResult]:
        """A publish failed: each of its events gets the attempts of a handler, starting with this one."""
        results = []
        for message, event in sent.items:
            call = _failed_once(error, self._stream_call(message, event))
            results.append(self._attempt(message, event, STREAM_STEP, call, 1, None))
        return results

    def _stream_call(self, message: str, event: BaseEvent) -> Callable[[], Any]:
        assert self.streams is not None
        return functools.partial(self.streams.publish, [(message, event.id or "", event.name or "")])

    def _calls(self, message: str, event: BaseEvent) -> list[tuple[str, Callable[[], Any]]]:
        """The event's handlers, and the publish step when it goes to streams: what a retry may name."""
        calls = event._handler_calls()
        if self.streams is not None and self.streams.streams_for(event.name or ""):
            calls.append((STREAM_STEP, self._stream_call(message, event)))
        return calls

    @property
    def _claiming(self) -> bool:
        return self.store is not None and self.dedup_ttl > 0 and self.claim_ttl > 0

    def _begin(
        self,
        keys: list[RunKey],
        *,
        done: list[str] | None = None,
        forget: list[RunKey] | None = None,
        claims: list[RunKey] | None = None,
        owner: str = "",
    ) -> Begun:
        if self.store is None or not (keys or done or forget or claims):
            return Begun({}, {})
        try:
            return self.store.begin(
                keys,
                self.starts_ttl,
                done=done or (),
                forget=forget or (),
                claims=claims or (),
                owner=owner,
                lease=self.claim_ttl,
            )
        except Exception:
            logger.exception("Cannot count the starts of handlers, nor read which ones already ran; running them all")
            return Begun({}, {})

    def _hold(self, owner: str, claims: list[RunKey]) -> None:
        """Keep ``owner``'s claims alive while it runs them."""
        if claims and self.store is not None:
            self._keeper.hold(owner, claims, self.store, self.claim_ttl)

    def _check_delay(self, left: float) -> float:
        """When to look again at a handler another delivery claimed: once its lease would end,
        and no later than the longest retry backoff (a Redis broker redelivers a task that waits
        longer than its visibility timeout, which the README asks to keep above that backoff)."""
        return min(left + _CHECK_MARGIN, max(self.backoff_max, 1.0))

    def _defer(self, deferred: list[tuple[str, BaseEvent, str, float]]) -> list[HandlerResult]:
        """Leave handlers claimed by another delivery to it, and check them again later."""
        ids = list(dict.fromkeys(event.id or "" for _, event, _, _ in deferred))
        self._log_deferred(len(deferred), ids, max(left for *_, left in deferred))
        results: list[HandlerResult] = []
        for message, event, label, left in deferred:
            if self.schedule_retry is None:
                result = self.process_retry(message, label, 1, None)
                if result is not None:
                    results.append(result)
            else:
                self._schedule_check(message, event, label, 1, None, left)
        return results

    def _log_deferred(self, handlers: int, event_ids: list[str], left: float) -> None:
        logger.info(
            "%s of %s claimed by another delivery, which is running them: checking again in %.1fs",
            _count(handlers, "handler"),
            _count(len(event_ids), "event"),
            self._check_delay(left) if self.schedule_retry is not None else left,
            extra={"event_ids": event_ids, "deferred": handlers},
        )

    def _schedule_check(
        self, message: str, event: BaseEvent, label: str, attempt: int, first_failed_at: float | None, left: float
    ) -> None:
        """Send the workers a check of one handler for when another delivery's claim would end."""
        assert self.schedule_retry is not None
        try:
            self.schedule_retry(message, label, attempt, first_failed_at, self._check_delay(left))
        except Exception as exc:
            # If the holder dies, nothing else would run it: keep it as a dead letter. A replay
            # of a handler the holder finished finds it done and runs nothing.
            logger.error(
                "Cannot schedule a check of %s for event %s, claimed by another delivery: %s", label, event.id, exc
            )
            self._dead_letter(
                message, event, label, attempt, exc, traceback.format_exc(), first_failed_at or time.time()
            )

    def _take_finished(self) -> list[RunKey]:
        """Empty ``_finished``; ``popleft`` is atomic, so threads sharing the runner need no lock."""
        taken: list[RunKey] = []
        with contextlib.suppress(IndexError):
            while True:
                taken.append(self._finished.popleft())
        return taken

    def _finish(
        self,
        keys: list[RunKey],
        marks: dict[str, list[str]],
        release: list[RunKey] | None = None,
        owner: str = "",
        *,
        wait: bool = True,
    ) -> None:
        if self.store is None:
            return
        if not (keys or release or (self.dedup_ttl and any(marks.values()))):
            if wait:
                keys = []  # nothing to write, but the answers to earlier writes must be read
            else:
                return
        try:
            self.store.finish(keys, marks, self.dedup_ttl, release=release or (), owner=owner, wait=wait)
        except Exception:
            logger.exception("Cannot record which handlers ran; a redelivery may run them again, one at a time")
        finally:
            if release:
                self._keeper.drop(owner, release)


#: The first wait, in seconds, of a caller that waits for another delivery's claim (no workers).
_FIRST_PAUSE = 0.01
#: Past the end of another delivery's lease, so that the check finds it ended.
_CHECK_MARGIN = 0.1


class _Keeper:
    """Renews the claims of the deliveries running in this process, every third of their lease.

    A thread, started with the first claim and gone after a renewal period with none (and
    started again in a forked child, which has no threads): a process that dies renews nothing,
    so its claims end with their lease.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, set[RunKey]] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0
        _keepers.add(self)

    def hold(self, owner: str, claims: Iterable[RunKey], store: Store, lease: float) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's claims and thread are not its own
                self._pid, self._held, self._thread = os.getpid(), {}, None
            self._held.setdefault(owner, set()).update(claims)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._renew, args=(store, lease), name="flask-eventlib-claims", daemon=True
                )
                self._thread.start()

    def forget(self, owner: str) -> None:
        with self._lock:
            self._held.pop(owner, None)

    def drop(self, owner: str, claims: Iterable[RunKey]) -> None:
        with self._lock:
            held = self._held.get(owner)
            if held is not None:
                held.difference_update(claims)
                if not held:
                    del self._held[owner]

    def _renew(self, store: Store, lease: float) -> None:
        idle = failing = False
        while True:
            time.sleep(lease / 3)  # the renewal period, not a wait for work
            with self._lock:
                snapshot = {owner: list(runs) for owner, runs in self._held.items()}
                if not snapshot:
                    if idle:
                        self._thread = None
                        return
                    idle = True
                    continue
                idle = False
            try:
                with fork_waits():  # a child must not copy the store client's locks mid-call
                    store.renew(snapshot, lease)
            except Exception:
                if not failing:
                    logger.warning(
                        "Cannot renew the claims of running handlers; if this lasts longer than their "
                        "lease (%.0fs), another delivery may run them too",
                        lease,
                        exc_info=True,
                    )
                failing = True
            else:
                failing = False


#: Every keeper of this process: a forked child gives each a new lock (the parent's thread may
#: have held it at the fork, and is not in the child to release it).
_keepers: weakref.WeakSet[_Keeper] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for keeper in list(_keepers):
        keeper._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class HandlerResult:
    """What one attempt of one handler did with one event."""

    __slots__ = ("attempt", "dead_lettered", "duration", "error", "event", "handler", "retry_in")

    def __init__(
        self,
        event: BaseEvent,
        handler: str,
        error: BaseException | None,
        *,
        attempt: int = 1,
        retry_in: float | None = None,
        dead_lettered: bool = False,
        duration: float = 0.0,
    ) -> None:
        self.event = event
        self.handler = handler
        self.error = error
        self.attempt = attempt
        self.retry_in = retry_in
        self.dead_lettered = dead_lettered
        #: Seconds the attempt took (0 when the handler did not run: a dead letter without a run).
        self.duration = duration

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        state = "ok" if self.error is None else f"failed: {self.error!r}"
        return f"<HandlerResult {self.event.name} {self.handler} attempt {self.attempt} {state}>"


def log_outcome(event: BaseEvent, results: list[HandlerResult], *, retry: bool = False) -> None:
    """Log, at INFO on ``flask_eventlib.outcomes``, what each handler of ``event`` did in one delivery.

    ``results`` are the attempts made; a handler without one was skipped, done by an earlier
    delivery (dedup).

    :param retry: ``results`` are retries of some handlers only: name those alone.
    """
    if not outcomes.isEnabledFor(logging.INFO):
        return
    by_label = {result.handler: result for result in results}
    labels = [] if retry else [label for label, _ in event._handler_calls()]
    labels += [label for label in by_label if label not in labels]
    parts = []
    for label in labels:
        result = by_label.get(label)
        if result is None:
            state = "skipped (done before)"
        elif result.error is None:
            state = "ok" if result.attempt == 1 else f"ok at attempt {result.attempt}"
        else:
            error = f"{type(result.error).__name__}: {result.error}"
            if result.dead_lettered:
                state = f"failed ({error}), dead-lettered after {_count(result.attempt, 'attempt')}"
            elif result.retry_in is not None:
                state = f"failed ({error}), retry in {result.retry_in:.1f}s"
            else:
                state = f"failed ({error})"
        parts.append(f"{label} {state}")
    outcome = "; ".join(parts) if parts else "no handlers (is its handlers' module in EVENTLIB_HANDLER_MODULES?)"
    failed = sum(1 for result in results if result.error is not None)
    outcomes.info(
        "%s %s (id %s): %s",
        "Retried event" if retry else "Event",
        event.name,
        event.id,
        outcome,
        extra={"event_name": event.name, "event_id": event.id, "handlers_failed": failed},
    )


def message_key(event_ids: Iterable[str]) -> str:
    """The key the store counts a message's deliveries under: the same for each redelivery."""
    digest = hashlib.blake2b("\n".join(event_ids).encode(), digest_size=16).hexdigest()
    return f"message:{digest}"


def _count(n: int, one: str, many: str | None = None) -> str:
    """``1 time``, ``2 times``: a count in words for the logs and the dead letters."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _target(call: Callable[[], Any]) -> Any:
    """The handler function behind a zero-argument call from ``BaseEvent._handler_calls``."""
    return call.func if isinstance(call, functools.partial) else call


def _failed_once(error: BaseException, then: Callable[[], Any]) -> Callable[[], Any]:
    """A call that raises ``error`` (what already happened to its first attempt), then does ``then``."""
    pending = [error]

    def call() -> Any:
        if pending:
            raise pending.pop()
        return then()

    return call
