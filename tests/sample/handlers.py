"""Function handlers, in a module of their own."""

from __future__ import annotations

from flask_eventlib import BaseEvent, handler

from .recorder import record


@handler("deals.DealClick")
def on_click(event: BaseEvent) -> None:
    record("handlers.on_click", event)


@handler("deals.Flaky")
def flaky_function(event: BaseEvent) -> None:
    record("handlers.flaky_function", event)


@handler("deals.Flaky")
def flaky_function_fails(event: BaseEvent) -> None:
    raise ValueError("function handler failed too")


@handler("deals.*")
def audit(event: BaseEvent) -> None:
    record("handlers.audit", event)
