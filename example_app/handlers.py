"""Function handlers, imported through ``EVENTLIB_HANDLER_MODULES``; they run in the worker.

An event's method handlers (in its ``events`` module) run first, then these: those of its own
name, then ``app.*``, then ``*``.
"""

from __future__ import annotations

from flask_eventlib import BaseEvent, handler

from . import redis_counters, store


@handler("deals.DealClick")
def count_click_in_redis(event: BaseEvent) -> None:
    """Clicks per deal in Redis too, when ``EXAMPLE_REDIS_URL`` is set."""
    if redis_counters.enabled():
        redis_counters.incr(f"clicks:{event.data['deal_id']}")


@handler("deals.*")
def journal_deal_event(event: BaseEvent) -> None:
    """One row per event of the ``deals`` blueprint."""
    _journal(event)


@handler("accounts.*")
def journal_account_event(event: BaseEvent) -> None:
    """One row per event of the ``accounts`` blueprint."""
    _journal(event)


@handler("*")
def count_event_in_redis(event: BaseEvent) -> None:
    """Every event counted by name in Redis, when ``EXAMPLE_REDIS_URL`` is set."""
    if redis_counters.enabled():
        redis_counters.incr(f"events:{event.name}")


def _journal(event: BaseEvent) -> None:
    assert event.id is not None and event.name is not None  # set by log(), carried to the worker
    store.add_event(event.id, event.name, event.data, event.logged_at)
