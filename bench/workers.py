"""Benchmark 3: events per second through a real ``celery worker``, from first to last handler run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .app import create_app
from .inprocess import preload_events, preload_raw
from .procs import celery_worker, wait_for

#: Prefork children of every worker, the same on both sides.
CONCURRENCY = 2


@dataclass
class Throughput:
    events: int
    seconds: float  #: from the first handler run to the last
    messages: int

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def throughput(
    client: redis.Redis, config: dict[str, Any], events: int, log_path: Path, *, raw: bool, timeout: float
) -> Throughput:
    """Fill the queue with ``events`` events (ours: 10 per message; raw: one task each), then start
    a worker and time it from the first handler run to the last (both stored by the handler)."""
    config = {**config, "BENCH_TOTAL": events}
    key = config["BENCH_KEY"]
    app, _ = create_app(**config)
    if raw:
        preload_raw(app, events)
        queue = config["BENCH_RAW_QUEUE"]
    else:
        preload_events(app, events)
        queue = config["EVENTLIB_QUEUE"]
    messages = int(client.llen(queue))
    with celery_worker("raw_celery" if raw else "celery", log_path, config, CONCURRENCY) as worker:

        def finished() -> bool:
            worker.check_alive()
            return bool(client.exists(f"{key}:last"))

        wait_for(finished, timeout=timeout, what=f"the worker to run {events} events (log: {log_path})")
    first, last, count = client.mget(f"{key}:first", f"{key}:last", f"{key}:count")
    if int(count or 0) != events:
        raise RuntimeError(f"the handlers ran {int(count or 0)} times for {events} events")
    return Throughput(events, float(last or 0) - float(first or 0), messages)
