"""The south app's function handlers, listed in its EVENTLIB_HANDLER_MODULES only."""

from __future__ import annotations

from flask_eventlib import BaseEvent, handler
from tests.sample.recorder import record


@handler("deals.DealClick")
def thank(event: BaseEvent) -> None:
    record("south.thank", event)


@handler("*")
def everything(event: BaseEvent) -> None:
    record("south.everything", event)
