"""Benchmark 7: a real worker's events per second with Prometheus metrics on, against the same
worker with them off.

Both sides are benchmark 3's flask-eventlib worker (prefork, 2 children, dedup on, one Redis INCR
per handler run), on the same queue contents; "on" sets ``EVENTLIB_METRICS = True`` in the worker
and ``PROMETHEUS_MULTIPROC_DIR`` in its environment (multiprocess mode, what a prefork worker
needs), so each handler run costs its signals' receivers, a counter and a histogram written to a
memory-mapped file. The runs alternate off, on, on, off, so a drift of the (shared) machine
touches both sides; the ratio is that of the two sides' mean rates.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .app import create_app
from .inprocess import preload_events
from .measure import Row, Target
from .procs import celery_worker, wait_for
from .workers import CONCURRENCY, Throughput

if TYPE_CHECKING:
    from .suite import Run

#: The environment variable of prometheus_client's multiprocess mode.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` (unset for ``None``) for the processes started inside."""
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def throughput(run: Run, name: str, metrics: bool) -> Throughput:
    """Fill a queue with the run's worker events (metrics off in this process), then time a worker."""
    events = run.sizes.worker_events
    config = run.config(name, BENCH_TOTAL=events)
    key = config["BENCH_KEY"]
    app, _ = create_app(**config)
    preload_events(app, events)
    messages = int(run.client.llen(config["EVENTLIB_QUEUE"]))
    worker_config = {**config, "EVENTLIB_METRICS": metrics}
    log_path = run.folder / f"{name}.log"
    with tempfile.TemporaryDirectory(prefix="eventlib-bench-prometheus-", dir=run.folder) as folder:
        with _environment(MULTIPROC_DIR, folder if metrics else None):
            worker = celery_worker("celery", log_path, worker_config, CONCURRENCY)
        with worker:

            def finished() -> bool:
                worker.check_alive()
                return bool(run.client.exists(f"{key}:last"))

            wait_for(finished, timeout=60 + events / 100, what=f"the worker to run {events} events (log: {log_path})")
        if metrics and not any(entry.startswith("histogram_") for entry in os.listdir(folder)):
            raise RuntimeError(f"the worker with metrics on wrote no histogram to {folder} (log: {log_path})")
    first, last, count = run.client.mget(f"{key}:first", f"{key}:last", f"{key}:count")
    if int(count or 0) != events:
        raise RuntimeError(f"the handlers ran {int(count or 0)} times for {events} events")
    return Throughput(events, float(last or 0) - float(first or 0), messages)


def bench_metrics(run: Run) -> None:
    """7. Worker events per second, metrics on against off."""
    row = Row(
        "7",
        "worker events/s, Prometheus metrics on (multiprocess) vs off",
        "",
        "",
        None,
        Target(0.95, at_most=False),
    )

    def body() -> None:
        measured: dict[bool, list[float]] = {False: [], True: []}
        for n, metrics in enumerate((False, True, True, False)):
            found = throughput(run, f"metrics-{n}-{'on' if metrics else 'off'}", metrics)
            measured[metrics].append(found.per_second)
        on, off = (sum(measured[side]) / len(measured[side]) for side in (True, False))
        row.ours = f"{on:,.0f}/s ({run.sizes.worker_events} events, runs {_rates(measured[True])})"
        row.baseline = f"metrics off: {off:,.0f}/s (runs {_rates(measured[False])})"
        row.ratio = on / off
        run.report.notes.append(
            f"7: benchmark 3's worker (prefork, {CONCURRENCY} children, dedup on) run 4 times on "
            f"{run.sizes.worker_events} events each, metrics off, on, on, off; on = EVENTLIB_METRICS and "
            "PROMETHEUS_MULTIPROC_DIR in the worker. "
            "The ratio is the mean rate on over the mean rate off."
        )

    run.step("7. worker throughput, metrics on vs off (real workers)", [row], body)


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)
