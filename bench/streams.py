"""``python -m bench.streams [--quick]``: the streams' rows, apart from the main suite.

8a. Events per second through stream consumers against the Celery worker, on the same events:
    the worker runs with ``EVENTLIB_STREAMS`` on and so fills a stream with the events it ran;
    then as many ``python -m flask_eventlib.consume`` processes, in one group, as the worker has
    prefork children read that stream, each running what ``bench.Ping``'s handler does (one Redis
    ``INCR``). The baseline is the worker without streams, in the same round.
8b. What streaming costs the worker: its events per second with ``EVENTLIB_STREAMS`` against
    without. 8c: the same as CPU time per event of the worker's processes, which other processes
    on a shared machine disturb less than the rate. 8d: the consumers' CPU time per event against
    the worker's.

Both sides are timed as benchmark 3 is: the events wait first (in the queue, in the stream), and
the clock runs from the first handler run to the last. The runs take turns, in rounds (worker
without streams, with, then the consumers; the next round starts with the worker with streams);
each ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import at_exit, workers
from .app import create_app
from .inprocess import preload_events
from .measure import Row, Target, machine, micros
from .procs import Child, celery_worker, cpu_seconds, wait_for
from .suite import Run, Sizes

#: Events each run takes through the worker (and the consumers), and rounds of runs.
FULL = (5_000, 6)
QUICK = (300, 1)


@dataclass
class Timed:
    """One run: events, seconds from the first handler run to the last, CPU seconds meanwhile."""

    events: int
    seconds: float
    cpu: float | None

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_event(self) -> float | None:
        return None if self.cpu is None else self.cpu / self.events


def _timed(run: Run, key: str, events: int, processes: list[Child], what: str) -> Timed:
    """Wait for the first handler run, then the last (``touch`` stores both), sampling the CPU
    time of ``processes`` (and their children) at each."""
    client = run.client

    def alive_and(check: str) -> bool:
        for child in processes:
            child.check_alive()
        return bool(client.exists(check))

    def cpu() -> float | None:
        pids = [pid for child in processes for pid in (child.process.pid, *child.children())]
        return cpu_seconds(pids)

    timeout = 60 + events / 100
    wait_for(lambda: alive_and(f"{key}:first"), timeout=timeout, what=f"{what} to start (log: {processes[0].log_path})")
    started = cpu()
    wait_for(lambda: alive_and(f"{key}:last"), timeout=timeout, what=f"{what} to run {events} events")
    ended = cpu()
    first, last, count = client.mget(f"{key}:first", f"{key}:last", f"{key}:count")
    if int(count or 0) != events:
        raise RuntimeError(f"{what} ran {int(count or 0)} times for {events} events")
    used = None if started is None or ended is None else ended - started
    return Timed(events, float(last or 0) - float(first or 0), used)


def worker_run(run: Run, name: str, events: int, **extra: Any) -> Timed:
    """Benchmark 3's worker (its queue filled first) on ``events`` events of its own."""
    config = {**run.config(name, **extra), "BENCH_TOTAL": events}
    app, _ = create_app(**config)
    preload_events(app, events)
    with celery_worker("celery", run.folder / f"{name}.log", config, workers.CONCURRENCY) as worker:
        return _timed(run, config["BENCH_KEY"], events, [worker], f"the worker ({name})")


def consumers_run(run: Run, stream: str, key: str, events: int, tag: str, processes: int) -> Timed:
    """``processes`` consumers of a new group read ``stream``, which holds ``events`` events of
    ``key``; they join the group before it moves to the stream's start, so they begin together."""
    client = run.client
    group = f"bench-{tag}"
    client.xgroup_create(stream, group, id="$")
    children: list[Child] = []
    os.environ["BENCH_CONSUMER_TAG"] = tag  # bench.consumer counts under <key>:<tag>
    try:
        for n in range(processes):
            command = [sys.executable, "-m", "flask_eventlib.consume", stream, "--group", group]
            command += ["--consumer", f"c{n}", "-m", "bench.consumer", "--url", run.redis_url]
            command += ["--loglevel", "WARNING", "--block", "0.2"]
            children.append(Child(command, run.folder / f"{tag}-c{n}.log", {}))

        def joined() -> bool:
            for child in children:
                child.check_alive()
            return len(client.xinfo_consumers(stream, group)) == processes  # type: ignore[no-untyped-call]

        wait_for(joined, timeout=60, what=f"{processes} consumers to join {group}")
        client.xgroup_setid(stream, group, id="0")  # every entry is theirs now
        return _timed(run, f"{key}:{tag}", events, children, f"the consumers ({tag})")
    finally:
        for child in children:
            child.stop()
        os.environ.pop("BENCH_CONSUMER_TAG", None)


def runner_cpu(run: Run, messages: int, rounds: int) -> tuple[float, float, list[float]]:
    """The worker's own code, in this process: CPU time per message of 10 events of
    ``Runner.process`` (the store in Redis, dedup and claims on, ``bench.Ping``'s handler) with
    streams and without, in alternating rounds; returns both medians and the median of the rounds'
    ratios. Only this thread's CPU counts: other processes disturb it much less than a rate."""
    import dataclasses
    import datetime as dt
    import uuid

    from flask_eventlib import envelope
    from flask_eventlib.streams import StreamPublisher

    config = {**run.config("streams-cpu"), "BENCH_TOTAL": 0}
    app, _ = create_app(**config)
    state = app.extensions["eventlib"]
    stream = f"bench:{run.id}:stream-cpu"
    off = state.runner
    on = dataclasses.replace(off, streams=StreamPublisher(run.redis_url, {stream: ["bench.*"]}))

    def batch() -> list[str]:
        now = dt.datetime.now(dt.UTC)
        return [
            envelope.encode(
                envelope.Envelope(str(uuid.uuid4()), "bench.Ping", {"key": config["BENCH_KEY"], "n": n}, {}, now),
                state.codec,
            )
            for n in range(10)
        ]

    times: dict[str, list[float]] = {"off": [], "on": []}
    for n in range(rounds + 1):
        for name in ("off", "on") if n % 2 else ("on", "off"):
            runner = on if name == "on" else off
            batches = [batch() for _ in range(messages)]
            started = time.thread_time()
            for messages_ in batches:
                runner.process(messages_)
            if n:  # the first round warms up (connections, the script loaded)
                times[name].append((time.thread_time() - started) / messages)
    ratios = [a / b for a, b in zip(times["on"], times["off"], strict=True)]
    return statistics.median(times["on"]), statistics.median(times["off"]), ratios


def bench_streams(run: Run, events: int, rounds: int) -> list[Row]:
    """Rows 8a to 8e."""
    rows = [
        _row("8a", "stream consumers events/s vs the Celery worker, the same events", Target(1.0, at_most=False)),
        _row("8b", "worker events/s with `EVENTLIB_STREAMS` vs without", Target(0.90, at_most=False)),
        _row("8c", "worker CPU time per event with `EVENTLIB_STREAMS` vs without"),
        _row("8d", "stream consumers' CPU time per event vs the Celery worker's (without streams)"),
        _row("8e", "the runner's CPU time per message of 10 events with `EVENTLIB_STREAMS` vs without, in process"),
    ]
    off: list[Timed] = []
    on: list[Timed] = []
    read: list[Timed] = []

    def body() -> None:
        for n in range(1, rounds + 1):
            stream = f"bench:{run.id}:stream-{n}"
            streaming = {"EVENTLIB_STREAMS": {stream: ["bench.*"]}, "EVENTLIB_STREAMS_URL": run.redis_url}
            first_off = n % 2 == 1  # the order alternates, so a drift of the machine touches both sides
            if first_off:
                off.append(worker_run(run, f"streams-off-{n}", events))
            on.append(worker_run(run, f"streams-on-{n}", events, **streaming))
            if not first_off:
                off.append(worker_run(run, f"streams-off-{n}", events))
            if run.client.xlen(stream) != events:
                raise RuntimeError(f"the worker put {run.client.xlen(stream)} of {events} events in {stream}")
            key = run.config(f"streams-on-{n}")["BENCH_KEY"]
            read.append(consumers_run(run, stream, key, events, f"consumer-{n}", workers.CONCURRENCY))
        per = f"median of {rounds} rounds of {events} events" if rounds > 1 else f"{events} events"

        def median(values: list[float]) -> float:
            return statistics.median(values)

        rate_off = median([t.per_second for t in off])
        rate_on = median([t.per_second for t in on])
        rate_read = median([t.per_second for t in read])
        consumers, cost, cpu_cost, cpu_read, in_process = rows
        cpu_on_message, cpu_off_message, cpu_ratios = runner_cpu(run, 20 if events < 1000 else 200, max(4, 2 * rounds))
        in_process.fill_rounds(
            f"{micros(cpu_on_message)}/message",
            f"without: {micros(cpu_off_message)}/message",
            cpu_ratios,
        )
        consumers.fill_rounds(
            f"{rate_read:,.0f}/s ({workers.CONCURRENCY} consumers, {per})",
            f"worker: {rate_off:,.0f}/s",
            [r.per_second / o.per_second for r, o in zip(read, off, strict=True)],
        )
        cost.fill_rounds(
            f"{rate_on:,.0f}/s ({per})",
            f"without: {rate_off:,.0f}/s",
            [a.per_second / b.per_second for a, b in zip(on, off, strict=True)],
        )
        if all(t.cpu is not None for t in (*off, *on, *read)):
            cpu_off = median([t.cpu_per_event or 0 for t in off])
            cpu_on = median([t.cpu_per_event or 0 for t in on])
            cpu_consumed = median([t.cpu_per_event or 0 for t in read])
            cpu_cost.fill_rounds(
                f"{micros(cpu_on)}/event",
                f"without: {micros(cpu_off)}/event",
                [(a.cpu_per_event or 0) / (b.cpu_per_event or 1) for a, b in zip(on, off, strict=True)],
            )
            cpu_read.fill_rounds(
                f"{micros(cpu_consumed)}/event",
                f"worker: {micros(cpu_off)}/event",
                [(r.cpu_per_event or 0) / (o.cpu_per_event or 1) for r, o in zip(read, off, strict=True)],
            )
        else:
            cpu_cost.missing = cpu_read.missing = "n/a (no /proc)"
        rounds_text = "; ".join(
            f"off {o.per_second:,.0f}/s, on {a.per_second:,.0f}/s, consumers {r.per_second:,.0f}/s"
            for o, a, r in zip(off, on, read, strict=True)
        )
        run.report.notes.append(
            f"8, each round: {rounds_text}. The worker is benchmark 3's (`--concurrency={workers.CONCURRENCY}`, "
            f"10 events a message, dedup and claims on); the consumers are {workers.CONCURRENCY} `python -m "
            "flask_eventlib.consume` processes of one group (batches of 100, dedup and claims on) reading the "
            "stream the worker filled; both sides' handler does one Redis INCR. CPU time is the worker's "
            "processes' (main and children) or the consumers', between the first and the last handler run; "
            "Redis's own is not counted. 8e: `Runner.process` called in the benchmark's process on messages of "
            "10 events, the store in Redis, with streams and without in alternating rounds, this thread's CPU "
            "time (the median of the rounds' ratios): what streaming adds to the worker's own code."
        )

    run.step("8. streams: consumers vs the worker, and the worker with and without streams", rows, body)
    return rows


def _row(id: str, what: str, target: Target | None = None) -> Row:
    return Row(id, what, "", "", None, target)


def _cleanup(run: Run) -> None:
    """The run's streams, their dedup keys and seq counters, the consumer groups' keys, then the rest."""
    client = run.client
    for key in client.scan_iter(match=f"bench:{run.id}:stream-*", count=1000):
        if client.type(key) == b"stream":  # type: ignore[no-untyped-call]
            ids = [fields[b"id"] for _, fields in client.xrange(key)]
            for start in range(0, len(ids), 500):
                client.delete(*(b"eventlib:streamed:" + i for i in ids[start : start + 500]))
    for pattern in (f"eventlib:seq:bench:{run.id}:*", f"eventlib:consumer:bench:{run.id}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    run.cleanup()
    at_exit(run.cleanup)  # again once this process's apps wrote their last figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the code runs, figures mean little")
    parser.add_argument("--events", type=int, help=f"events per run (default {FULL[0]}; {QUICK[0]} with --quick)")
    parser.add_argument("--rounds", type=int, help=f"rounds of runs (default {FULL[1]}; {QUICK[1]} with --quick)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL")
        or os.environ.get("EVENTLIB_TEST_REDIS_URL")
        or "redis://127.0.0.1:6379/0",
    )
    args = parser.parse_args(argv)
    events, rounds = QUICK if args.quick else FULL
    events, rounds = args.events or events, args.rounds or rounds
    with tempfile.TemporaryDirectory(prefix="eventlib-bench-streams-") as tmp:
        run = Run(args.redis_url, _SIZES, Path(tmp), install=False)
        print(
            f"[bench] run {run.id}: queues bench-{run.id}-*, keys bench:{run.id}:* (deleted at the end)",
            file=sys.stderr,
        )
        started = time.perf_counter()
        try:
            bench_streams(run, events, rounds)
        finally:
            _cleanup(run)
        print(f"[bench] {time.perf_counter() - started:.1f} s in all", file=sys.stderr)
        run.report.machine = machine(args.redis_url, run.load_at_start)
        load_now = os.getloadavg()[0]
        run.report.notes.append(
            f"Load average {run.load_at_start:.2f} when the run began and {load_now:.2f} when it ended, on "
            f"{os.cpu_count()} cores: above about 1, other processes shared the machine and the rates are noisy "
            "(the CPU rows less so)."
        )
    print(run.report.render())
    return 1 if run.errors else 0


#: The main suite's sizes do not apply here; ``Run`` wants some.
_SIZES = Sizes(0, 0, 0, 0, 0, 0.0, 0, 0)

if __name__ == "__main__":
    sys.exit(main())
