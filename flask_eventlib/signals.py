"""Blinker signals for metrics and monitoring; each is sent with the Flask app as sender.

As with Flask's own signals, ``event_logged.connect_via(app)(receiver)`` listens to one app and
``event_logged.connect(receiver)`` to every app; a receiver's exception is logged, never raised
into ``log()`` or a worker. The receiver gets the app, then these keyword arguments:

- ``event_logged(event)``: ``log()`` accepted the event (validated and serialized).
- ``event_rejected(name, error)``: ``log()`` refused it (unknown name, validation, serialization).
- ``events_spooled(count, reason)``: events went to the local spool because the broker failed.
- ``events_dropped(count, reason)``: events were dropped because the spool was full.
- ``spool_failed(path, error)``: the spool could not be opened, read or written; delivery to the
  broker goes on, and while the broker is down events wait in memory.
- ``local_log_failed(folder, reason)``: the local log could not keep events (a full or read-only
  disk, or its ``EVENTLIB_LOCAL_LOG_MAX_BYTES`` reached); they wait in memory only until sent.
- ``handler_succeeded(event, handler, attempt, duration)``: ``duration`` in seconds.
- ``handler_failed(event, handler, attempt, error, duration)``: every failure, retried or not.
- ``handler_retried(event, handler, attempt, delay)``: a retry was scheduled.
- ``handler_dead_lettered(event, handler, attempt, error)``: the last attempt failed.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import Namespace, Signal

logger = logging.getLogger("flask_eventlib")

signals = Namespace()

event_logged = signals.signal("event-logged")
event_rejected = signals.signal("event-rejected")
events_spooled = signals.signal("events-spooled")
events_dropped = signals.signal("events-dropped")
spool_failed = signals.signal("spool-failed")
local_log_failed = signals.signal("local-log-failed")
handler_succeeded = signals.signal("handler-succeeded")
handler_failed = signals.signal("handler-failed")
handler_retried = signals.signal("handler-retried")
handler_dead_lettered = signals.signal("handler-dead-lettered")


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` if anyone listens; a receiver's exception is logged, not raised."""
    if not signal.receivers:
        return
    try:
        signal.send(sender, **kwargs)
    except Exception:
        logger.exception("A receiver of the flask-eventlib signal %r failed", getattr(signal, "name", signal))
