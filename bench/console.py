"""Benchmark 9: the cost of the console's figures to the workers (``EVENTLIB_CONSOLE_FIGURES``).

9a: a real worker's events per second with the figures on, against the same worker with them off,
everything else alike (dedup and claims on). With the figures on, the runner hands each handler
attempt to the figures, which count a message's attempts at its end, and the worker's children
write a batch about once a second; the target is a drop of at most 5 %. The two sides take turns,
in alternating order, and the ratio is the median of the rounds' ratios, so a machine that other
work slows down touches both sides alike; still, on a busy machine the rounds scatter. 9b: the
same runs' CPU time per event (off / on), which other processes disturb less than the rate.

9c: the same work in one process, measured in CPU time (of every thread: the sender's, which
writes the figures once a second, too), which other processes disturb less than the rate: the
runner processes messages of 10 events, each handler one Redis ``INCR`` as in 9a.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from flask_eventlib import state

from . import workers
from .app import create_app, payload
from .measure import Row, Target
from .procs import BenchError

#: Rounds of (off, on) in a full run; a quick run makes one.
ROUNDS = 9


def bench_console(run: Any) -> None:
    """Add rows 9a, 9b and 9c to ``run``'s report (``run``: a :class:`bench.suite.Run`)."""
    row = Row("9a", "worker events/s, the console's figures on vs off", "", "", None, Target(0.95, at_most=False))
    cpu = Row("9c", "events per CPU second in the runner, the console's figures on vs off", "", "", None)
    worker_cpu = Row("9b", "worker events per CPU-second, the console's figures on vs off", "", "", None)
    sizes = run.sizes
    rounds = ROUNDS if sizes.worker_events >= 10_000 else 1

    def body() -> None:
        timeout = 60 + sizes.worker_events / 100
        on: list[float] = []
        off: list[float] = []
        spent: dict[bool, list[float | None]] = {False: [], True: []}
        for n in range(rounds):
            order = (False, True) if n % 2 == 0 else (True, False)
            for figures in order:
                name = f"console-{'on' if figures else 'off'}-{n}"
                config = run.config(name, EVENTLIB_CONSOLE_FIGURES=figures)
                measured = workers.throughput(
                    run.client, config, sizes.worker_events, run.folder / f"{name}.log", raw=False, timeout=timeout
                )
                (on if figures else off).append(measured.per_second)
                spent[figures].append(measured.cpu_per_event)
                if figures and not handled(run):
                    raise BenchError(f"the workers of {name} wrote no figures: were they on? (log: {name}.log)")
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        row.fill_rounds(
            f"{statistics.median(on):,.0f}/s (median of {rounds} runs of {sizes.worker_events} events)",
            f"figures off: {statistics.median(off):,.0f}/s",
            ratios,
        )
        workers.fill_cpu_row(worker_cpu, spent[True], spent[False], "figures off", lambda _: f"median of {rounds} runs")
        run.report.notes.append(
            f"9a: {rounds} rounds of the same worker as 3f (prefork, {workers.CONCURRENCY} children, the queue filled "
            "first with a message per request), `EVENTLIB_CONSOLE_FIGURES` off then on (the order alternating); "
            f"the ratio is the median of the rounds' on/off ratios, which ranged {min(ratios):.3f}-{max(ratios):.3f}."
        )

    def in_process() -> None:
        on: list[float] = []
        off: list[float] = []
        apps = {figures: _runner_app(run, figures) for figures in (False, True)}
        for n in range(rounds):
            for figures in (False, True) if n % 2 == 0 else (True, False):
                (on if figures else off).append(_events_per_cpu_second(apps[figures], sizes.worker_events))
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        cpu.fill_rounds(
            f"{statistics.median(on):,.0f} events/CPU s (median of {rounds} runs)",
            f"figures off: {statistics.median(off):,.0f} events/CPU s",
            ratios,
        )
        run.report.notes.append(
            f"9c: `Runner.process()` in this process, {sizes.worker_events} events per run, {rounds} rounds; the "
            f"rounds' on/off ratios ranged {min(ratios):.3f}-{max(ratios):.3f}."
        )

    run.step("9. worker throughput, the console's figures on vs off", [row, worker_cpu], body)
    run.step("9. the figures' CPU cost in the runner", [cpu], in_process)


def _runner_app(run: Any, figures: bool) -> Any:
    """The bench app with the figures on or off."""
    name = f"console-cpu-{'on' if figures else 'off'}"
    app, _ = create_app(**run.config(name, EVENTLIB_CONSOLE_FIGURES=figures))
    return app


def _events_per_cpu_second(app: Any, events: int) -> float:
    """Process ``events`` new events (dedup lets each run) in messages of 10; the encoding is not timed."""
    found = state.state_of(app)
    runner, figures, dispatcher = found.runner, found.figures, found.dispatcher
    with app.app_context():
        encoded = [dispatcher.encode(dispatcher.build("bench.Ping", payload(app.config, n))) for n in range(events)]
    batches = [encoded[start : start + 10] for start in range(0, events, 10)]
    with app.app_context():
        started = time.process_time()
        for batch in batches:
            runner.process(batch)
        if figures is not None:
            figures.flush()  # the last batch; the sender's thread wrote the others, once a second
        spent = time.process_time() - started
    return events / spent


def handled(run: Any) -> int:
    """The handler runs the run's workers counted in the console's figures so far."""
    total = 0
    for key in run.client.scan_iter(match=f"bench:{run.id}:store:console:c:*", count=1000):
        total += sum(int(n) for name, n in run.client.hgetall(key).items() if name.startswith(b"h|"))
    return total
