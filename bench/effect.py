"""The side effect both sides of the worker benchmark run: one Redis INCR per event.

The counter's first and last increments also store a timestamp, so the throughput is measured
from the first handler run to the last, without the worker's start-up.
"""

from __future__ import annotations

import os
import time

import redis

#: Where the counters go without ``BENCH_REDIS_URL`` (which the run sets for itself and its workers).
DEFAULT_URL = "redis://127.0.0.1:6379/0"

_clients: dict[tuple[int, str], redis.Redis[bytes]] = {}


def client() -> redis.Redis[bytes]:
    """A Redis client of this process (worker children are forked: never share a parent's), on the
    run's Redis: ``BENCH_REDIS_URL`` is read at each call, not at import, since the run sets it
    after this module was imported (its in-process benchmarks counted in db 0, out of reach of the
    run's clean-up)."""
    place = (os.getpid(), os.environ.get("BENCH_REDIS_URL") or DEFAULT_URL)
    found = _clients.get(place)
    if found is None:
        _clients.clear()
        found = _clients[place] = redis.Redis.from_url(place[1])
    return found


def touch(key: str, total: int) -> None:
    """Count one event under ``key``; the 1st and the ``total``-th also store when they ran."""
    r = client()
    count = r.incr(f"{key}:count")
    if count == 1:
        r.set(f"{key}:first", repr(time.time()))
    if count == total:
        r.set(f"{key}:last", repr(time.time()))
