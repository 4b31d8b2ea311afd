"""``log()`` and ``process()``: an event's journey, without transport details or Flask."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from . import signals
from .events import BaseEvent
from .exceptions import DontRetry, EventlibError, SerializationError, ValidationError
from .handlers import policy_of
from .registry import Registry
from .serialization import FORMAT_VERSION, Codec
from .store import DeadLetter, Store

logger = logging.getLogger("flask_eventlib")

#: Sends encoded events on their way (to the broker, or a buffer in front of it).
Publish = Callable[[list[str]], None]
#: ``(message, handler, attempt, first_failed_at, delay)``: run one handler again later.
ScheduleRetry = Callable[[str, str, int, "float | None", float], None]


class Dispatcher:
    """Validates, encodes and publishes events; decodes and processes them in workers.

    :param registry: where event names are looked up.
    :param codec: how events are encoded.
    :param publish: sends a list of encoded events; not used in eager mode.
    :param eager: process events in the caller (still through encode and decode).
    :param propagate: in eager mode, re-raise the first handler error after every handler ran.
    :param store: where dedup marks and dead letters are kept (``None``: neither).
    :param schedule_retry: ``(message, handler, attempt, first_failed_at, delay)`` sends a retry
        to the workers; ``None`` retries at once, in the caller.
    :param retries: default number of retries of a failing handler.
    :param backoff: default seconds before the first retry (doubling, with jitter).
    :param backoff_max: the longest wait between two attempts.
    :param dedup_ttl: seconds during which a handler that succeeded for an event id is not run
        again for the same id; 0 turns dedup off.
    """

    def __init__(
        self,
        registry: Registry,
        codec: Codec,
        publish: Publish,
        *,
        eager: bool = False,
        propagate: bool = False,
        store: Store | None = None,
        schedule_retry: ScheduleRetry | None = None,
        retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        dedup_ttl: float = 0.0,
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.publish = publish
        self.eager = eager
        self.propagate = propagate
        self.store = store
        self.schedule_retry = schedule_retry
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.dedup_ttl = dedup_ttl

    # -- the caller's side ------------------------------------------------------------------

    def build(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> BaseEvent:
        """Find the event ``name``, create it from a copy of ``data`` and clean it.

        :raises EventNotFound: for an unknown name.
        :raises ValidationError: when ``clean()`` refuses the data.
        """
        cls = self.registry.find(name)
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise ValidationError(
                f"The data of {name} must be a dict, not {type(data).__name__}",
                messages={"_schema": ["Data must be an object."]},
            )
        try:
            copied = _copy(data)
        except RecursionError:
            raise ValidationError(
                f"The data of {name} is nested too deeply", messages={"_schema": ["Data is nested too deeply."]}
            ) from None
        event = cls(
            copied,
            id=id or new_event_id(),
            context=context,
            logged_at=dt.datetime.now(dt.UTC),
            registry=self.registry,
        )
        event.name = name
        event.full_clean()
        return event

    def encode(self, event: BaseEvent) -> str:
        """The event's envelope as a JSON string.

        :raises SerializationError: (a ``TypeError``) naming the key that cannot be serialized.
        """
        data = self.codec.encode(event.data, root=f"{event.name} data")
        envelope = {
            "v": FORMAT_VERSION,
            "id": event.id,
            "name": event.name,
            "data": data,
            "context": self.codec.encode(event.context, root=f"{event.name} context") if event.context else {},
            # orjson writes an aware datetime as ISO 8601 itself, faster than isoformat().
            "logged_at": event.logged_at,
        }
        return self.codec.serialize(envelope)

    def log(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> str:
        """Validate, encode and send one event; return its id.

        Nothing is sent when validation or encoding fails. The caller's ``data`` is not changed.
        """
        try:
            event = self.build(name, data, id=id, context=context)
            message = self.encode(event)
        except (EventlibError, TypeError) as exc:
            signals.send(signals.event_rejected, name, error=exc)
            raise
        signals.send(signals.event_logged, event)
        if self.eager:
            self.process([message], propagate=self.propagate)
        else:
            self.publish([message])
        return event.id  # type: ignore[return-value]

    # -- the worker's side ------------------------------------------------------------------

    def decode(self, message: str | bytes) -> BaseEvent:
        """Rebuild the event an encoded message stands for (its data is trusted, not cleaned)."""
        envelope = self.codec.loads(message)
        if not isinstance(envelope, dict) or envelope.get("v") != FORMAT_VERSION:
            raise SerializationError(
                f"Not a flask-eventlib event envelope of format {FORMAT_VERSION}: {str(message)[:80]!r}"
            )
        name = envelope["name"]
        cls = self.registry.find(name)
        logged_at = envelope.get("logged_at")
        event = cls(
            envelope.get("data"),
            id=envelope["id"],
            context=envelope.get("context"),
            logged_at=dt.datetime.fromisoformat(logged_at) if logged_at else None,
            registry=self.registry,
        )
        event.name = name
        return event

    def process(self, messages: Iterable[str], *, propagate: bool = False) -> list[HandlerResult]:
        """Decode each message and run its event's handlers; return what happened.

        Every handler gets its chance: a failing handler is logged at ERROR with its traceback on
        the ``flask_eventlib`` logger, retried alone later (or at once in eager mode), and
        dead-lettered after its last attempt; the next handler runs meanwhile. Handlers that
        already succeeded for an event id (within ``dedup_ttl``) are skipped. A message that
        cannot be decoded is logged and dead-lettered; the others are still processed.

        :param propagate: re-raise the first error once every handler of every message has run.
        """
        decoded: list[tuple[str, BaseEvent]] = []
        first_error: BaseException | None = None
        for message in messages:
            try:
                decoded.append((message, self.decode(message)))
            except Exception as exc:
                self._undecodable(message, exc)
                first_error = first_error or exc
        done = self._completed([event.id or "" for _, event in decoded])
        results: list[HandlerResult] = []
        for message, event in decoded:
            event_id = event.id or ""
            skip = done.setdefault(event_id, set())
            succeeded: list[str] = []
            for label, call in event._handler_calls():
                if label in skip:
                    continue
                result = self._attempt(message, event, label, call, 1, None)
                results.append(result)
                if result.error is None:
                    succeeded.append(label)
                else:
                    first_error = first_error or result.error
                # A retried or dead-lettered handler is not run again for a duplicate either.
                skip.add(label)
            # Marked per event, so a worker killed mid-message re-runs as little as possible.
            self._mark_completed({event_id: succeeded})
        if propagate and first_error is not None:
            raise first_error
        return results

    def process_retry(
        self, message: str, handler: str, attempt: int, first_failed_at: float | None
    ) -> HandlerResult | None:
        """Run one handler of an encoded event again (a retry or a replay); ``None`` if already done."""
        event = self.decode(message)
        if handler in self._completed([event.id or ""]).get(event.id or "", set()):
            return None
        for label, call in event._handler_calls():
            if label == handler:
                result = self._attempt(message, event, label, call, attempt, first_failed_at)
                if result.error is None:
                    self._mark_completed({event.id or "": [label]})
                return result
        error = LookupError(f"The event {event.name} has no handler {handler} any more")
        self._dead_letter(message, event, handler, attempt, error, "", first_failed_at or time.time())
        return HandlerResult(event, handler, error, attempt=attempt, dead_lettered=True)

    def replay(self, letter: DeadLetter) -> None:
        """Run a dead letter's handler again, through the workers (at once in eager mode)."""
        if self.schedule_retry is None or self.eager:
            self.process_retry(letter.message, letter.handler, 1, None)
        else:
            self.schedule_retry(letter.message, letter.handler, 1, None, 0.0)

    def _attempt(
        self,
        message: str,
        event: BaseEvent,
        label: str,
        call: Callable[[], Any],
        attempt: int,
        first_failed_at: float | None,
    ) -> HandlerResult:
        """Run one handler; on failure log it and retry it (inline in eager mode) or dead-letter it."""
        policy = policy_of(_target(call))
        retries = policy.retries if policy and policy.retries is not None else self.retries
        backoff = policy.backoff if policy and policy.backoff is not None else self.backoff
        while True:
            try:
                call()
            except Exception as exc:
                now = time.time()
                first_failed_at = first_failed_at or now
                final = isinstance(exc, DontRetry) or attempt > retries
                delay = 0.0 if final else self._delay(backoff, attempt)
                if isinstance(exc, DontRetry):
                    outcome = "dead-lettered (DontRetry)"
                elif final:
                    outcome = "dead-lettered"
                else:
                    outcome = "retrying" if self.eager else f"retrying in {delay:.2f}s"
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
                signals.send(signals.handler_failed, event, handler=label, attempt=attempt, error=exc)
                if final:
                    self._dead_letter(message, event, label, attempt, exc, traceback.format_exc(), first_failed_at)
                    return HandlerResult(event, label, exc, attempt=attempt, dead_lettered=True)
                signals.send(signals.handler_retried, event, handler=label, attempt=attempt, delay=delay)
                if self.eager or self.schedule_retry is None:
                    attempt += 1
                    continue
                try:
                    self.schedule_retry(message, label, attempt + 1, first_failed_at, delay)
                except Exception as publish_error:
                    logger.error("Cannot schedule a retry of %s for event %s: %s", label, event.id, publish_error)
                    self._dead_letter(message, event, label, attempt, exc, traceback.format_exc(), first_failed_at)
                    return HandlerResult(event, label, exc, attempt=attempt, dead_lettered=True)
                return HandlerResult(event, label, exc, attempt=attempt, retry_in=delay)
            else:
                signals.send(signals.handler_succeeded, event, handler=label, attempt=attempt)
                return HandlerResult(event, label, None, attempt=attempt)

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
            signals.send(signals.handler_dead_lettered, event, handler=handler, attempt=attempts, error=error)

    def _undecodable(self, message: str | bytes, error: Exception) -> None:
        logger.error("Cannot process an event message: %s", error, exc_info=True)
        self._dead_letter(str(message), None, "", 1, error, traceback.format_exc(), time.time())

    def _completed(self, event_ids: list[str]) -> dict[str, set[str]]:
        if self.store is None or not self.dedup_ttl or not event_ids:
            return {}
        try:
            return self.store.completed(event_ids)
        except Exception:
            logger.exception("Cannot read which handlers already ran; running them all")
            return {}

    def _mark_completed(self, marks: dict[str, list[str]]) -> None:
        if self.store is None or not self.dedup_ttl or not marks:
            return
        try:
            self.store.mark_completed(marks, self.dedup_ttl)
        except Exception:
            logger.exception("Cannot record which handlers ran; a redelivery may run them again")


class HandlerResult:
    """What one attempt of one handler did with one event."""

    __slots__ = ("attempt", "dead_lettered", "error", "event", "handler", "retry_in")

    def __init__(
        self,
        event: BaseEvent,
        handler: str,
        error: BaseException | None,
        *,
        attempt: int = 1,
        retry_in: float | None = None,
        dead_lettered: bool = False,
    ) -> None:
        self.event = event
        self.handler = handler
        self.error = error
        self.attempt = attempt
        self.retry_in = retry_in
        self.dead_lettered = dead_lettered

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        state = "ok" if self.error is None else f"failed: {self.error!r}"
        return f"<HandlerResult {self.event.name} {self.handler} attempt {self.attempt} {state}>"


def _target(call: Callable[[], Any]) -> Any:
    """The handler function behind a zero-argument call from ``BaseEvent._handler_calls``."""
    return call.func if isinstance(call, functools.partial) else call


class _IdPool:
    """Random version-4 UUIDs from a pool of ``os.urandom`` bytes.

    ``uuid.uuid4()`` calls ``os.urandom`` for every id, which releases the GIL and lets the
    background sender take it for a whole publish in the middle of a request; a pool reads the
    OS's randomness once per 256 ids. A forked child starts with an empty pool, so it never repeats
    its parent's ids. Not :mod:`random`: an application's ``random.seed()`` would repeat ids, and
    dedup would then skip handlers.
    """

    _SIZE = 4096

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A fresh lock too: a fork can copy the parent's lock while another thread holds it.
        self._lock = threading.Lock()
        self._pool = b""
        self._pos = self._SIZE

    def __call__(self) -> str:
        with self._lock:
            pos = self._pos
            if pos >= self._SIZE:
                self._pool, pos = os.urandom(self._SIZE), 0
            self._pos = pos + 16
            h = self._pool[pos : pos + 16].hex()
        # The version (4) and variant (10xx) bits of RFC 4122.
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab89ab89ab89ab"


#: A new event id: a random (version 4) UUID as a string.
new_event_id = _IdPool()


def _copy(value: Any) -> Any:
    """Copy dicts and lists all the way down, so ``clean()`` never changes the caller's data."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
