"""``log()`` and ``process()``: an event's journey, without transport details or Flask."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from .events import BaseEvent
from .exceptions import EventlibError, SerializationError, ValidationError
from .registry import Registry
from .serialization import FORMAT_VERSION, Codec

logger = logging.getLogger("flask_eventlib")

#: Sends encoded events on their way (to the broker, or a buffer in front of it).
Publish = Callable[[list[str]], None]


class Dispatcher:
    """Validates, encodes and publishes events; decodes and processes them in workers.

    :param registry: where event names are looked up.
    :param codec: how events are encoded.
    :param publish: sends a list of encoded events; not used in eager mode.
    :param eager: process events in the caller (still through encode and decode).
    :param propagate: in eager mode, re-raise the first handler error after every handler ran.
    """

    def __init__(
        self,
        registry: Registry,
        codec: Codec,
        publish: Publish,
        *,
        eager: bool = False,
        propagate: bool = False,
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.publish = publish
        self.eager = eager
        self.propagate = propagate

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
        event = cls(
            _copy(data),
            id=id or str(uuid.uuid4()),
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
            "context": self.codec.encode(event.context, root=f"{event.name} context"),
            "logged_at": event.logged_at.isoformat() if event.logged_at else None,
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
        event = self.build(name, data, id=id, context=context)
        message = self.encode(event)
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

    def process(self, messages: Iterable[str | bytes], *, propagate: bool = False) -> list[HandlerResult]:
        """Decode each message and run its event's handlers; return what happened.

        Every handler gets its chance: a failing handler is logged at ERROR with its traceback on
        the ``flask_eventlib`` logger and the next one runs. A message that cannot be decoded is
        logged and skipped; the others are still processed.

        :param propagate: re-raise the first error once every handler of every message has run.
        """
        results: list[HandlerResult] = []
        first_error: BaseException | None = None
        for message in messages:
            try:
                event = self.decode(message)
            except EventlibError as exc:
                logger.error("Cannot process an event message: %s", exc, exc_info=True)
                first_error = first_error or exc
                continue
            for result in run_handlers(event):
                results.append(result)
                if result.error is not None:
                    first_error = first_error or result.error
        if propagate and first_error is not None:
            raise first_error
        return results


class HandlerResult:
    """What one handler did with one event."""

    __slots__ = ("error", "event", "handler")

    def __init__(self, event: BaseEvent, handler: str, error: BaseException | None) -> None:
        self.event = event
        self.handler = handler
        self.error = error

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        state = "ok" if self.error is None else f"failed: {self.error!r}"
        return f"<HandlerResult {self.event.name} {self.handler} {state}>"


def run_handlers(event: BaseEvent) -> list[HandlerResult]:
    """Run each handler of ``event`` in order, isolating and logging each failure."""
    results = []
    for label, call in event._handler_calls():
        try:
            call()
        except Exception as exc:
            logger.error(
                "Handler %s failed for event %s (id %s)",
                label,
                event.name,
                event.id,
                exc_info=True,
                extra={"event_name": event.name, "event_id": event.id, "handler": label},
            )
            results.append(HandlerResult(event, label, exc))
        else:
            results.append(HandlerResult(event, label, None))
    return results


def _copy(value: Any) -> Any:
    """Copy dicts and lists all the way down, so ``clean()`` never changes the caller's data."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
