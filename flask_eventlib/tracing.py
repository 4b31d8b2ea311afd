"""OpenTelemetry traces: each event carries the trace context of the code that logged it, and the
worker runs each of its handlers in a span that continues that trace.

``EVENTLIB_TRACING = True`` (which needs ``pip install 'flask-eventlib[tracing]'``, the
OpenTelemetry API; the app sets up the SDK and its exporter) makes ``init_app`` give the app's
dispatcher a :class:`Capture` and its runner :class:`HandlerSpans`. With it off, or without the
package, none of this module is imported and ``log()`` pays one ``is None`` check.

``log()`` writes the W3C ``traceparent`` (and ``tracestate``) of the current span into the
event's envelope (its optional ``trace`` field), when there is a valid span. A request's events
travel together in one broker message, but each handler run concerns one event, so its span
(kind ``CONSUMER``, named after the handler) is a child of the span that logged that event, and
links to it too: a trace viewer shows the request with its events' handlers below it, and a
backend that draws links shows them as well. When the worker runs inside a span of its own (a
Celery instrumentation's task span), the handler's span links to it, so the delivery that ran it
is one click away. An event without a trace context (logged with no span, or by an older
version) gets a handler span under whatever span is current in the worker.

Attributes: ``eventlib.event.name``, ``eventlib.event.id``, ``eventlib.handler``,
``eventlib.attempt`` and ``eventlib.outcome`` (``succeeded``, ``retrying`` or ``dead_lettered``).
A failing handler's exception is recorded on its span (an ``exception`` event with the
traceback) and the span's status is ``ERROR``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .exceptions import ConfigurationError, DontRetry

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
    from opentelemetry.trace.span import TraceState
except ImportError as exc:  # pragma: no cover - the message is tested with the package hidden
    raise ConfigurationError(
        "flask_eventlib.tracing needs the opentelemetry-api package, which is not installed: "
        "pip install 'flask-eventlib[tracing]' (or turn EVENTLIB_TRACING off)"
    ) from exc

#: The instrumentation scope of the spans.
TRACER_NAME = "flask_eventlib"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


class Capture:
    """``capture()``: the current span's context as an envelope's ``trace`` field, or ``None``.

    Called by ``log()`` for every event: the field made for a span is kept, so a request's
    second and later events cost a context look-up and one comparison.
    """

    def __init__(self) -> None:
        self._last: tuple[Any, dict[str, str] | None] = (None, None)

    def __call__(self) -> dict[str, str] | None:
        span = trace.get_current_span()
        last = self._last
        if span is last[0]:
            return last[1]
        found = span.get_span_context()
        if not found.is_valid:
            return None
        carrier = {"traceparent": f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}"}
        if found.trace_state:
            carrier["tracestate"] = found.trace_state.to_header()
        self._last = (span, carrier)
        return carrier


def span_context(carrier: dict[str, str] | None) -> SpanContext | None:
    """The remote span context an envelope's ``trace`` field holds; ``None`` if none or malformed
    (as the W3C recommends, a bad ``traceparent`` starts no trace rather than failing anything)."""
    if not carrier:
        return None
    match = _TRACEPARENT.fullmatch(carrier.get("traceparent", ""))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or not int(trace_id, 16) or not int(span_id, 16):
        return None
    state = carrier.get("tracestate")
    return SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16) & 0xFF),
        trace_state=TraceState.from_header([state]) if state else None,
    )


class HandlerSpans:
    """Runs each handler attempt in a span (see the module doc).

    :param tracer: the tracer to use; by default the global provider's (set up by the app, at
        any time: until then the spans cost a no-op).
    """

    def __init__(self, tracer: Any = None) -> None:
        self.tracer = tracer if tracer is not None else trace.get_tracer(TRACER_NAME)
        self._last: tuple[Any, SpanContext | None] = (None, None)

    def run(self, call: Callable[[], Any], event: Any, handler: str, attempt: int, retries: int) -> None:
        """Call ``call`` (one attempt of ``handler`` for ``event``) inside its span; re-raise its error.

        :param retries: the handler's retries, which tell whether a failure is its last attempt.
        """
        created = self._created(event.trace)
        links = []
        parent = None
        if created is not None:
            links.append(Link(created, {"eventlib.link": "logged"}))
            parent = trace.set_span_in_context(NonRecordingSpan(created))
            delivery = trace.get_current_span().get_span_context()
            if delivery.is_valid and delivery.span_id != created.span_id:  # eager: the logging span itself
                links.append(Link(delivery, {"eventlib.link": "delivery"}))
        attributes = {
            "eventlib.event.name": event.name or "",
            "eventlib.event.id": event.id or "",
            "eventlib.handler": handler,
            "eventlib.attempt": attempt,
        }
        with self.tracer.start_as_current_span(
            handler,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                call()
            except Exception as exc:
                final = isinstance(exc, DontRetry) or attempt > retries
                span.set_attribute("eventlib.outcome", "dead_lettered" if final else "retrying")
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            span.set_attribute("eventlib.outcome", "succeeded")

    def _created(self, carrier: dict[str, str] | None) -> SpanContext | None:
        """:func:`span_context`, parsed once for an event's handlers (they share its ``trace``)."""
        if not carrier:
            return None
        last = self._last
        if carrier is last[0]:
            return last[1]
        found = span_context(carrier)
        self._last = (carrier, found)
        return found
