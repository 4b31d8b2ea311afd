"""``log()``: the caller's side of an event's journey, without transport details or Flask.

find the event -> build it from a copy of the data -> ``clean()`` -> encode the envelope -> hand it
to the app's publisher. Nothing leaves the caller when a step fails, and the caller's data is never
changed (``clean()`` works on a deep copy).
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import envelope, signals
from .events import BaseEvent, EventData
from .exceptions import EventlibError, EventNotPublic, ValidationError
from .ids import new_event_id
from .registry import Registry
from .serialization import Codec

if TYPE_CHECKING:
    from .publishers import Publisher


class Dispatcher:
    """Validates and encodes events and hands them to a publisher.

    :param registry: where event names are looked up.
    :param codec: how events are encoded.
    :param publisher: where encoded events go (the app's :class:`~flask_eventlib.publishers.Router`).
    :param signal_sender: the sender of the signals it sends (the Flask app).
    :param trace: returns the trace context of the caller for each event's envelope
        (:class:`flask_eventlib.tracing.Capture`, with ``EVENTLIB_TRACING``); ``None``: none.
    :param counted: told of each event logged, before it is published (the console's figures:
        a direct call, since the ``event_logged`` signal's send costs more than the counting).
    """

    def __init__(
        self,
        registry: Registry,
        codec: Codec,
        publisher: Publisher,
        *,
        signal_sender: Any = None,
        trace: Callable[[], dict[str, str] | None] | None = None,
        counted: Callable[[BaseEvent], None] | None = None,
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.publisher = publisher
        self.signal_sender = signal_sender
        self.trace = trace
        self.counted = counted

    def build(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        context: dict[str, Any] | None = None,
        public_only: bool = False,
    ) -> BaseEvent:
        """Find the event ``name``, create it from a deep copy of ``data`` and clean it.

        :param public_only: refuse an event whose class is not ``public`` (the browser endpoint).
        :raises EventNotFound: for an unknown name.
        :raises EventNotPublic: with ``public_only``, for an event browsers may not log.
        :raises ValidationError: when ``clean()`` refuses the data.
        """
        return self._build(name, data, id, context, public_only)

    def _build(
        self, name: str, data: dict[str, Any] | None, id: str | None, context: dict[str, Any] | None, public_only: bool
    ) -> BaseEvent:
        # log()'s path: positional arguments and no more calls than needed, since it runs for
        # every event (a call a step costs here, as a cold cache costs in a real request).
        cls = self.registry.find(name)
        if public_only and cls.public is not True:
            raise EventNotPublic(
                f"The event {name} is not public: browsers may only log events whose class sets public = True.",
                name=name,
            )
        if type(data) is not dict:
            if data is None:
                data = {}
            elif not isinstance(data, dict):
                raise ValidationError(
                    f"The data of {name} must be a dict, not {type(data).__name__}",
                    messages={"_schema": ["Data must be an object."]},
                )
        try:
            copied = copy_event_data(data)
        except RecursionError:
            raise ValidationError(
                f"The data of {name} is nested too deeply", messages={"_schema": ["Data is nested too deeply."]}
            ) from None
        trace = self.trace
        event = cls._logged(
            copied, id or new_event_id(), _now(_UTC), self.registry, name, context, None if trace is None else trace()
        )
        event.full_clean()
        return event

    def encode(self, event: BaseEvent) -> str:
        """The event's envelope as a JSON string.

        :raises SerializationError: (a ``TypeError``) naming the key that cannot be serialized.
        """
        return envelope.encode_fields(
            self.codec,
            event.id or new_event_id(),
            event.name or "",
            event.data,
            event.context,
            event.logged_at,
            event.trace,
        )

    def batch(self, context: dict[str, Any] | None = None, *, public_only: bool = False) -> Batch:
        """Events to log together, sharing ``context`` (a request of the browser endpoint):
        :meth:`Batch.add` each, then :meth:`Batch.publish` them in one hand-over.

        :raises SerializationError: (a ``TypeError``) when ``context`` cannot be encoded.
        """
        return Batch(self, context or {}, public_only)

    def log(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        context: dict[str, Any] | None = None,
        public_only: bool = False,
    ) -> str:
        """Validate, encode and publish one event; return its id.

        Nothing is published when a step fails. The caller's ``data`` is not changed.
        """
        try:
            event = self._build(name, data, id, context, public_only)
            event_id: str = event.id  # type: ignore[assignment]  # _build always gives one
            message = envelope.encode_fields(
                self.codec, event_id, name, event.data, event.context, event.logged_at, event.trace
            )
        except (EventlibError, TypeError) as exc:
            signals.send(signals.event_rejected, self.signal_sender, name=name, error=exc)
            raise
        if self.counted is not None:
            self.counted(event)
        if signals.event_logged.receivers:  # checked here: the keyword call costs on every log()
            signals.send(signals.event_logged, self.signal_sender, event=event)
        self.publisher.publish([message])
        return event_id


class Batch:
    """Events logged together that share one context (the events of a browser's request).

    The context is encoded once for them all, and the events are handed to the publisher in one
    call (one append to the local log), not one each. Each event is validated on its own: one
    that :meth:`add` refuses is left out, and the others are still published.
    """

    __slots__ = ("_context", "_dispatcher", "_encoded_context", "_events", "_messages", "_public_only")

    def __init__(self, dispatcher: Dispatcher, context: dict[str, Any], public_only: bool) -> None:
        self._dispatcher = dispatcher
        # A copy: what is encoded here is what each event gets, whatever the caller changes later.
        self._context = context = dict(context)
        self._encoded_context = dispatcher.codec.encode(context, root="the events' context") if context else {}
        self._public_only = public_only
        self._events: list[BaseEvent] = []
        self._messages: list[str] = []

    def add(self, name: str, data: dict[str, Any] | None = None, id: str | None = None) -> str:
        """Validate and encode one event of the batch (each gets its own copy of the context);
        return its id. Nothing is kept of an event that is refused.

        :raises EventNotFound: for an unknown name.
        :raises EventNotPublic: with ``public_only``, for an event browsers may not log.
        :raises ValidationError: when ``clean()`` refuses the data.
        :raises SerializationError: (a ``TypeError``) naming the key that cannot be serialized.
        """
        dispatcher = self._dispatcher
        try:
            event = dispatcher._build(name, data, id, dict(self._context), self._public_only)
            event_id: str = event.id  # type: ignore[assignment]  # _build always gives one
            message = envelope.encode_fields(
                dispatcher.codec,
                event_id,
                name,
                event.data,
                event.context,
                event.logged_at,
                event.trace,
                encoded_context=self._encoded_context,
            )
        except (EventlibError, TypeError) as exc:
            signals.send(signals.event_rejected, dispatcher.signal_sender, name=name, error=exc)
            raise
        self._events.append(event)
        self._messages.append(message)
        return event_id

    def publish(self) -> None:
        """Hand the events added so far to the publisher, in one call, as :meth:`Dispatcher.log`
        does one: counted and signalled first. The batch is empty afterwards."""
        events, messages = self._events, self._messages
        if not messages:
            return
        self._events, self._messages = [], []
        dispatcher = self._dispatcher
        if dispatcher.counted is not None:
            for event in events:
                dispatcher.counted(event)
        if signals.event_logged.receivers:
            for event in events:
                signals.send(signals.event_logged, dispatcher.signal_sender, event=event)
        dispatcher.publisher.publish(messages)


_now = dt.datetime.now
_UTC = dt.UTC


#: Types whose values cannot change, so a copy may share them.
_IMMUTABLE = frozenset(
    {str, int, float, bool, type(None), bytes, dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal, uuid.UUID}
)


def copy_event_data(data: dict[str, Any]) -> EventData:
    """:func:`copy_data` of an event's data, straight into the :class:`EventData` the event keeps;
    the immutable values at its top level (most of them, in most events) without a call each."""
    out = EventData()
    for key, item in data.items():
        out[key] = item if type(item) in _IMMUTABLE else copy_data(item)
    return out


def copy_data(value: Any) -> Any:
    """A deep copy of ``value``, so ``clean()`` never changes the caller's data.

    Dicts and lists (subclasses become plain ones, as the codec sends them), tuples, sets and
    frozensets are copied all the way down by hand (the common case, several times faster than
    :func:`copy.deepcopy`); immutable values are shared; anything else (a registered type, say)
    goes through :func:`copy.deepcopy`.
    """
    kind = type(value)
    if kind is dict:  # the data itself, and most containers in it
        return {key: copy_data(item) for key, item in value.items()}
    if kind in _IMMUTABLE:
        return value
    if isinstance(value, dict):
        return {key: copy_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_data(item) for item in value]
    if kind is tuple:
        return tuple(copy_data(item) for item in value)
    if kind is set:
        return {copy_data(item) for item in value}
    if kind is frozenset:
        return frozenset(copy_data(item) for item in value)
    return copy.deepcopy(value)
