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


@handler("deals.Purchase", retries=2, backoff=0.5)
def redeem_coupon(event: BaseEvent) -> None:
    """A coupon the shop no longer honours fails: buy with ``EXPIRED`` to watch the handler retried
    twice, then dead-lettered, in the console, and replay it from there."""
    coupon = event.data.get("coupon")
    if coupon and coupon.upper().startswith("EXPIRED"):
        raise LookupError(f"the coupon {coupon!r} has expired")


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
