"""Benchmark 3: events per second through a real ``celery worker``, from first to last handler run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .app import create_app
from .inprocess import preload_events, preload_raw
from .measure import Row, median, micros
from .procs import celery_worker, cpu_seconds, wait_for

#: Prefork children of every worker, the same on both sides.
CONCURRENCY = 2


@dataclass
class Throughput:
    events: int
    seconds: float  #: from the first handler run to the last
    messages: int
    #: CPU seconds (user + system) the worker's processes spent per event from the first handler
    #: run on; ``None`` without ``/proc``.
    cpu_per_event: float | None = None

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def throughput(
    client: redis.Redis[bytes],
    config: dict[str, Any],
    events: int,
    log_path: Path,
    *,
    raw: bool,
    timeout: float,
    worker_config: dict[str, Any] | None = None,
    per_task: int = 1,
    per_message: int = 10,
    pace: float | None = None,
) -> Throughput:
    """Fill the queue with ``events`` events (ours: 10 per message; raw: one task each), then start
    a worker and time it from the first handler run to the last (both stored by the handler).

    :param worker_config: settings of the worker only (the process that fills the queue has not them).
    :param per_task: raw: events per task (the raw batch task, when more than one).
    :param per_message: ours: events per message (10: a request's; up to the sender's 100).
    :param pace: ours, instead: a request of 10 events every ``pace`` seconds, and the messages
        the sender makes of them (:func:`bench.inprocess.preload_events`).
    """
    config = {**config, "BENCH_TOTAL": events}
    key = config["BENCH_KEY"]
    app, _ = create_app(**config)
    if raw:
        preload_raw(app, events, per_task)
        queue = config["BENCH_RAW_QUEUE"]
    else:
        preload_events(app, events, per_message, pace)
        queue = config["EVENTLIB_QUEUE"]
    messages = int(client.llen(queue))
    worker = celery_worker(
        "raw_celery" if raw else "celery", log_path, {**config, **(worker_config or {})}, CONCURRENCY
    )
    start: tuple[float | None, int] | None = None
    with worker:

        def finished() -> bool:
            nonlocal start
            worker.check_alive()
            if start is None and client.exists(f"{key}:first"):
                # From the first handler run on: the worker's start-up is not counted.
                start = (cpu_seconds([worker.process.pid, *worker.children()]), int(client.get(f"{key}:count") or 0))
            return bool(client.exists(f"{key}:last"))

        wait_for(finished, timeout=timeout, what=f"the worker to run {events} events (log: {log_path})")
        spent = cpu_seconds([worker.process.pid, *worker.children()])
    first, last, count = client.mget(f"{key}:first", f"{key}:last", f"{key}:count")
    if int(count or 0) != events:
        raise RuntimeError(f"the handlers ran {int(count or 0)} times for {events} events")
    cpu = None
    if start is not None and start[0] is not None and spent is not None and events > start[1]:
        cpu = (spent - start[0]) / (events - start[1])
    elif spent is not None:  # all done before the first look (a tiny --quick run): start-up included
        cpu = spent / events
    return Throughput(events, float(last or 0) - float(first or 0), messages, cpu)


def fill_cpu_row(
    row: Row,
    on: Sequence[float | None],
    off: Sequence[float | None],
    off_name: str,
    detail: Callable[[list[float]], str],
    detail_off: Callable[[list[float]], str] | None = None,
) -> None:
    """A row of the worker's CPU time per event, ``on`` against ``off`` (each run's
    :attr:`Throughput.cpu_per_event`, the runs of a round at the same index): a round's ratio is
    off / on (less CPU is better); ``n/a`` when a run has no figure (no ``/proc``).

    :param detail: what follows ``on``'s median, in brackets; ``detail_off`` the same for ``off``.
    """
    if not on or len(on) != len(off) or any(value is None for value in (*on, *off)):
        row.missing = "n/a (no /proc)"
        return
    on_cpu = [value for value in on if value is not None]
    off_cpu = [value for value in off if value is not None]
    after_off = f" ({detail_off(off_cpu)})" if detail_off is not None else ""
    row.fill_rounds(
        f"{micros(median(on_cpu))} CPU/event ({detail(on_cpu)})",
        f"{off_name}: {micros(median(off_cpu))} CPU/event{after_off}",
        [b / a for a, b in zip(on_cpu, off_cpu, strict=True)],
    )
