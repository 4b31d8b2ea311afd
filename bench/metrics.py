"""Benchmark 7: a real worker's events per second with Prometheus metrics on, against the same
worker with them off.

Both sides are benchmark 3's flask-eventlib worker (prefork, 2 children, dedup on, one Redis INCR
per handler run), on the same queue contents; "on" sets ``EVENTLIB_METRICS = True`` in the worker
and ``PROMETHEUS_MULTIPROC_DIR`` in its environment (multiprocess mode, what a prefork worker
needs), so each handler run costs its signals' receivers, a counter and a histogram written to a
memory-mapped file. Each round runs both sides, in alternating order, so a drift of the (shared)
machine touches both; a row's ratio is the median of its rounds'. 7a compares the rates; 7b the
CPU time the worker's processes spent per event, which other processes on the machine disturb less.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import workers
from .measure import Row, Target, median, micros
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
    config = run.config(name)
    log_path = run.folder / f"{name}.log"
    events = run.sizes.worker_events
    with tempfile.TemporaryDirectory(prefix="eventlib-bench-prometheus-", dir=run.folder) as folder:
        with _environment(MULTIPROC_DIR, folder if metrics else None):
            measured = workers.throughput(
                run.client,
                config,
                events,
                log_path,
                raw=False,
                timeout=60 + events / 100,
                worker_config={"EVENTLIB_METRICS": metrics},
            )
        if metrics and not any(entry.startswith("histogram_") for entry in os.listdir(folder)):
            raise RuntimeError(f"the worker with metrics on wrote no histogram to {folder} (log: {log_path})")
    return measured


def bench_metrics(run: Run) -> None:
    """7. Worker events per second, metrics on against off, in rounds (one run of each side)."""
    rate = Row(
        "7a", "worker events/s, Prometheus metrics on (multiprocess) vs off", "", "", None, Target(0.95, at_most=False)
    )
    cpu = Row(
        "7b",
        "worker events per CPU-second, metrics on vs off (the rate an idle machine would reach)",
        "",
        "",
        None,
        Target(0.95, at_most=False),
    )

    def body() -> None:
        # The ratio sits near 1 with its target 5 % away, and one run of a worker swings by 10-20 %
        # on a shared machine: many more rounds than benchmark 3 needs, so the median holds.
        rounds = run.sizes.worker_rounds if run.sizes.worker_rounds < 3 else 9
        measured: dict[bool, list[Throughput]] = {False: [], True: []}
        for number in range(rounds):
            # Off then on, then on then off: a drift of the machine falls on both sides.
            for metrics in (False, True) if number % 2 == 0 else (True, False):
                name = f"metrics-{number}-{'on' if metrics else 'off'}"
                measured[metrics].append(throughput(run, name, metrics))
        rates = {side: [found.per_second for found in measured[side]] for side in measured}
        rate.fill_rounds(
            f"{median(rates[True]):,.0f}/s ({run.sizes.worker_events} events; runs {_rates(rates[True])})",
            f"metrics off: {median(rates[False]):,.0f}/s (runs {_rates(rates[False])})",
            [on / off for on, off in zip(rates[True], rates[False], strict=True)],
        )
        spent = {side: [found.cpu_per_event for found in measured[side]] for side in measured}

        def runs(values: list[float]) -> str:
            return "runs " + ", ".join(micros(value) for value in values)

        workers.fill_cpu_row(cpu, spent[True], spent[False], "metrics off", runs, runs)
        run.report.notes.append(
            f"7: benchmark 3's worker (prefork, {CONCURRENCY} children, dedup on), {rounds} rounds of one run "
            f"with metrics off and one with them on (the order alternating), {run.sizes.worker_events} events "
            "each; on = EVENTLIB_METRICS and PROMETHEUS_MULTIPROC_DIR in the worker. 7a: rate on / rate off. "
            "7b: the CPU time (user + system) of the worker's processes per event, off / on, from the first "
            "handler run to the last, which other processes on a shared machine disturb less than the rate."
        )

    run.step("7. worker throughput, metrics on vs off (real workers)", [rate, cpu], body)


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)
