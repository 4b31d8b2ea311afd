"""The whole run: each benchmark against its baseline, in one process, into one table."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from . import at_exit, inprocess, serving, workers
from .app import create_app
from .console import bench_console
from .measure import CpuTimes, Report, Row, Target, chunks, machine, median, micros, percentile
from .metrics import bench_metrics
from .procs import ROOT, BenchError, free_port, gunicorn

#: The JS client the extension serves; benchmark 5 measures it gzipped.
JS_CLIENT = ROOT / "flask_eventlib" / "static" / "eventlib.js"
JS_BUDGET = 1024
#: A rate limit high enough never to answer 429 during the ingest benchmark.
HIGH_RATE_LIMIT = "1000000/minute"
#: An address where no broker listens (benchmark 6).
DEAD_BROKER = "redis://127.0.0.1:1/0"


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does."""

    log_requests: int  #: 1: requests of 10 log() calls (and as many of 10 delay() calls)
    work_requests: int  #: 2, total work: requests of each kind, in this process
    http_requests: int  #: 2, time to response: sequential HTTP requests of each kind
    worker_events: int  #: 3: events through flask-eventlib's worker (each run)
    raw_events: int  #: 3: raw tasks through the baseline worker
    load_seconds: float  #: 4: seconds of load on each endpoint (each run)
    load_rounds: int  #: 4: alternations bare / ingest in those seconds
    down_requests: int  #: 6: requests of 10 log() calls with the broker down
    rounds: int = 5  #: 1, 2, 6: rounds whose ratios give each row's median and spread
    http_blocks: int = 20  #: 2, time to response: blocks of requests of each kind, taking turns
    worker_rounds: int = 3  #: 3: rounds of (raw, each of ours, ceiling) workers


FULL = Sizes(
    log_requests=2000,
    work_requests=1000,
    http_requests=2000,
    worker_events=10000,
    raw_events=3000,
    load_seconds=15,
    load_rounds=5,
    down_requests=2000,
)
QUICK = Sizes(
    log_requests=100,
    work_requests=50,
    http_requests=30,
    worker_events=300,
    raw_events=100,
    load_seconds=2,
    load_rounds=2,
    down_requests=50,
    rounds=2,
    http_blocks=4,
    worker_rounds=1,
)
#: Benchmarks by number, in the order they run.
ALL = ("1", "2", "3", "4", "5", "6", "7", "9")


class Run:
    """Names and clean-up of one run: unique queues and Redis keys, a temporary folder."""

    def __init__(self, redis_url: str, sizes: Sizes, folder: Path, install: bool) -> None:
        self.redis_url = redis_url
        self.sizes = sizes
        self.folder = folder
        self.install = install
        self.id = uuid.uuid4().hex[:8]
        self.client = redis.Redis.from_url(redis_url)
        self.report = Report([])
        self.load_at_start = os.getloadavg()[0]
        self.errors = 0
        self.cpu_at_start = CpuTimes.now()
        #: The share of each benchmark's CPU time the hypervisor took (its steal), by title.
        self.steal: dict[str, float] = {}
        # Read by bench.effect in this process and in the workers it starts.
        os.environ["BENCH_REDIS_URL"] = redis_url

    def config(self, name: str, **extra: Any) -> dict[str, Any]:
        """Settings of the bench app for one benchmark: its own queues, keys, spool and store."""
        base = f"bench-{self.id}-{name}"
        return {
            "EVENTLIB_BROKER_URL": self.redis_url,
            "EVENTLIB_QUEUE": base,
            "EVENTLIB_STORE_URL": f"{self.redis_url}?prefix=bench:{self.id}:store:",
            "EVENTLIB_SPOOL_PATH": str(self.folder / f"{name}-spool.sqlite3"),
            "BENCH_RAW_QUEUE": f"{base}-raw",
            "BENCH_KEY": f"bench:{self.id}:{name}",
            **extra,
        }

    def cleanup(self) -> None:
        """Delete every queue and key of this run (kombu keeps a queue's bindings in ``_kombu.binding*``)."""
        for pattern in (f"bench-{self.id}-*", f"_kombu.binding*.bench-{self.id}-*", f"bench:{self.id}:*"):
            keys = list(self.client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                self.client.delete(*keys[start : start + 500])

    def step(self, title: str, rows: list[Row], body: Callable[[], None]) -> None:
        """Run one benchmark; if it fails, its rows say so and the run goes on."""
        print(f"[bench] {title}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        cpu = CpuTimes.now()
        try:
            body()
        except Exception as exc:
            self.errors += 1
            traceback.print_exc()
            for row in rows:
                if row.ratio is None and not row.missing:
                    row.missing = f"n/a (error: {type(exc).__name__})"
            self.report.notes.append(f"{title} failed: {exc}")
        self.report.rows.extend(rows)
        after = CpuTimes.now()
        steal = after.steal_since(cpu) if after is not None else None
        if steal is not None:
            self.steal[title] = steal
        took = f"{time.perf_counter() - started:.1f} s" + ("" if steal is None else f", steal {steal:.1%}")
        print(f"[bench]   {took}", file=sys.stderr, flush=True)


def _cpu(load: serving.Load) -> str:
    per_request = load.cpu_per_request
    return "" if per_request is None else f", {micros(per_request)} CPU/req"


def _total(compared: serving.Comparison, loads: list[serving.Load], what: str) -> serving.Load:
    """The rounds ``loads`` of ``compared`` together; a :class:`BenchError` if any request failed."""
    found = compared.total(loads)
    if found.failed:
        raise BenchError(f"{found.failed} {what} requests failed")
    return found


def _row(id: str, what: str, target: Target | None = None) -> Row:
    return Row(id, what, "", "", None, target)


def _fill(row: Row, ours: str, baseline: str, ratio: float) -> None:
    row.ours, row.baseline, row.ratio = ours, baseline, ratio


# -- the benchmarks ---------------------------------------------------------------------------------


def bench_log_call(run: Run) -> dict[str, float]:
    """1. log() in a request against a raw delay() of the same payload."""
    p50 = _row("1a", "`log()` in a request, p50 (durability `process`: the local log)", Target(0.03))
    p99 = _row("1b", "`log()` in a request, p99 (durability `process`)", Target(0.10))
    memory = _row("1c", "`log()` in a request, durability `memory`, p50")
    machine = _row("1d", "`log()` outside a request, durability `machine` (a sync each), p50")
    figures: dict[str, float] = {}

    def body() -> None:
        app, samples = inprocess.timed_app(**run.config("call"))
        times = inprocess.log_vs_delay(app, samples, run.sizes.log_requests, run.sizes.rounds)
        for row, pct in ((p50, 50), (p99, 99)):
            ours, base = percentile(times.log, pct), percentile(times.delay, pct)
            ratios = [percentile(log, pct) / percentile(delay, pct) for log, delay in times.rounds]
            row.fill_rounds(micros(ours), f"raw `delay()` p{pct}: {micros(base)}", ratios)
            figures[f"delay_p{pct}"] = base

    def levels() -> None:
        app, samples = inprocess.timed_app(**run.config("memory", EVENTLIB_DURABILITY="memory"))
        times = inprocess.log_vs_delay(app, samples, run.sizes.log_requests, run.sizes.rounds)
        ours, base = percentile(times.log, 50), percentile(times.delay, 50)
        ratios = [percentile(log, 50) / percentile(delay, 50) for log, delay in times.rounds]
        memory.fill_rounds(micros(ours), f"raw `delay()` p50: {micros(base)}", ratios)
        app, _ = inprocess.timed_app(**run.config("machine", EVENTLIB_DURABILITY="machine"))
        synced_times = inprocess.log_outside_request(app, run.sizes.log_requests)
        synced = percentile(synced_times, 50)
        ratios = [percentile(part, 50) / base for part in chunks(synced_times, run.sizes.rounds)]
        machine.fill_rounds(micros(synced), f"raw `delay()` p50: {micros(base)}", ratios)

    run.step("1. log() in a request vs raw delay()", [p50, p99], body)
    run.step("1. log() at the other durability levels", [memory, machine], levels)
    return figures


def bench_request(run: Run) -> None:
    """2. A request logging 10 events against one logging none and one doing 10 raw delay() calls."""
    response = _row("2a", "request logging 10 events vs none: time to response, p50", Target(1.15))
    delays = _row("2b", "request doing 10 raw `delay()` vs none: time to response, p50")
    floor = _row(
        "2d", "floor: request writing 10 events to the local log only (no lookup, validation, codec) vs none, p50"
    )
    work = _row("2c", "request logging 10 events, publish included, vs 10 raw `delay()`: work, p50", Target(0.20))
    response.bound = floor

    def timed() -> None:
        config = run.config("request")
        port = free_port()
        # Blocks of 100 requests of each kind taking turns: 20 rounds, so the median holds when the
        # machine drifts (a single round's ratio moved by +-20 % on the shared machine).
        blocks = run.sizes.http_blocks
        with gunicorn(port, run.folder / "gunicorn-request.log", config, workers=2):
            times = serving.response_times(
                port, ["/log/10", "/log/0", "/delay/10", "/floor/10"], run.sizes.http_requests, rounds=blocks
            )
        none = percentile(times["/log/0"], 50)
        # A round: a block of each kind, one after the other (response_times alternates them).
        parts = {path: chunks(found, blocks) for path, found in times.items()}
        for row, path in ((response, "/log/10"), (delays, "/delay/10"), (floor, "/floor/10")):
            row.fill_rounds(
                micros(percentile(times[path], 50)),
                f"logging none: {micros(none)}",
                [percentile(a, 50) / percentile(b, 50) for a, b in zip(parts[path], parts["/log/0"], strict=True)],
            )

    def in_process() -> None:
        app, _ = create_app(**run.config("work"))
        measured = inprocess.request_work(app, run.sizes.work_requests)
        ours = percentile(measured.log_and_publish, 50)
        raw = percentile(measured.delay, 50)
        empty = percentile(measured.empty, 50)
        rounds = run.sizes.rounds
        ratios = [
            percentile(a, 50) / percentile(b, 50)
            for a, b in zip(chunks(measured.log_and_publish, rounds), chunks(measured.delay, rounds), strict=True)
        ]
        work.fill_rounds(micros(ours), f"10 raw `delay()`: {micros(raw)}", ratios)
        run.report.notes.append(
            f"2c runs in one process (WSGI calls, no sockets): the request logging 10 events took "
            f"{micros(ours)} at p50 including the wait for its message to be published (`flush()`); the "
            f"same request logging none took {micros(empty)}."
        )

    run.step("2. a request logging 10 events: time to response (gunicorn)", [response, delays, floor], timed)
    run.step("2. a request logging 10 events: total work (in process)", [work], in_process)


#: 3: the pace of the app filling the queue, a request of 10 events every ``PACE`` seconds, and
#: its sender's linger: 10 times an app at 50 requests a second with the default 20 ms linger,
#: whose sender sends each request's events alone while the workers keep up.
PACE = 0.002
PACED_LINGER = 0.001


def bench_worker(run: Run) -> None:
    """3. Events per second through a real worker, against raw Celery tasks one per event."""
    shape = "the queue an app at a modest rate fills while the workers are down"
    dedup = _row(
        "3a", f"worker events/s, dedup on, vs raw Celery, 1 task per event: {shape}", Target(6.0, at_most=False)
    )
    no_dedup = _row("3b", f"worker events/s, dedup off, vs raw Celery, 1 task per event: {shape}")
    ceiling = _row(
        "3c",
        "ceiling of 3f: raw Celery, 1 task per 10 events (only their side effects), acks late and prefetch 1, "
        "vs 1 task per event",
    )
    strict = _row(
        "3d",
        "worker events/s, dedup on with each event's marks written as it ends "
        f"(`EVENTLIB_DEDUP_MARK_INTERVAL = 0`), vs raw Celery, 1 task per event: {shape}",
    )
    full = _row(
        "3e",
        "worker events/s, dedup on, messages of 100 events (the sender's largest, what it sends under load), "
        "vs raw Celery, 1 task per event",
    )
    single = _row(
        "3f",
        "worker events/s, dedup on, vs raw Celery, 1 task per event: 3a's app with the backlog linger off "
        "(`EVENTLIB_PUBLISH_BACKLOG_DEPTH = 0`): a message per request",
    )
    single.bound = ceiling
    sizes = run.sizes

    def body() -> None:
        timeout = 60 + sizes.worker_events / 100

        def measure(
            name: str,
            events: int,
            raw: bool,
            per_task: int = 1,
            per_message: int = 10,
            pace: float | None = None,
            **extra: Any,
        ) -> workers.Throughput:
            if pace is not None:
                extra = {"EVENTLIB_PUBLISH_LINGER": PACED_LINGER, **extra}
            config = run.config(name, **extra)
            log_path = run.folder / f"{name}.log"
            return workers.throughput(
                run.client,
                config,
                events,
                log_path,
                raw=raw,
                timeout=timeout,
                per_task=per_task,
                per_message=per_message,
                pace=pace,
            )

        # Rounds of (raw, each of ours, ceiling): each round's ratios compare workers that ran
        # side by side, so a drift of the machine touches both sides of a ratio alike.
        raws: list[float] = []
        ceilings: list[float] = []
        ours: dict[str, list[workers.Throughput]] = {"dedup": [], "nodedup": [], "strict": [], "full": [], "single": []}
        for number in range(1, sizes.worker_rounds + 1):
            raws.append(measure(f"worker-raw-{number}", sizes.raw_events, raw=True).per_second)
            for name, settings in (
                ("dedup", {}),  # the defaults
                ("nodedup", {"EVENTLIB_DEDUP_TTL": 0}),
                ("strict", {"EVENTLIB_DEDUP_MARK_INTERVAL": 0}),
                ("single", {"EVENTLIB_PUBLISH_BACKLOG_DEPTH": 0}),
            ):
                got = measure(f"worker-{name}-{number}", sizes.worker_events, raw=False, pace=PACE, **settings)
                ours[name].append(got)
            ours["full"].append(measure(f"worker-full-{number}", sizes.worker_events, raw=False, per_message=100))
            batched = measure(
                f"worker-ceiling-{number}", sizes.worker_events, raw=True, per_task=10, BENCH_RAW_CRASH_SAFE=True
            )
            ceilings.append(batched.per_second)
        raw = median(raws)
        base = f"{raw:,.0f}/s ({sizes.worker_rounds} runs of {sizes.raw_events} tasks)"
        for row, name in (
            (dedup, "dedup"),
            (no_dedup, "nodedup"),
            (strict, "strict"),
            (full, "full"),
            (single, "single"),
        ):
            measured = ours[name]
            per_second = median([m.per_second for m in measured])
            shapes = sorted(round(m.events / max(1, m.messages)) for m in measured)
            per_message = f"{shapes[0]}" if shapes[0] == shapes[-1] else f"{shapes[0]} to {shapes[-1]}"
            ours_text = f"{per_second:,.0f}/s ({measured[0].events} events, {per_message} per message)"
            row.fill_rounds(ours_text, base, [m.per_second / r for m, r in zip(measured, raws, strict=True)])
        ceiling.fill_rounds(
            f"{median(ceilings):,.0f}/s ({sizes.worker_events} events, 10 per task)",
            base,
            [c / r for c, r in zip(ceilings, raws, strict=True)],
        )
        run.report.notes.append(
            f"3: `celery worker --pool=prefork --concurrency={workers.CONCURRENCY}` on both sides, the queue "
            "filled first, timed from the first handler run to the last; each handler and each raw task does "
            "one Redis INCR. flask-eventlib's worker runs its crash-safe settings (acks late, prefetch 1); the "
            "raw one Celery's defaults, but for 3c's (raw tasks of 10 events each), which has flask-eventlib's. "
            f"3a, 3b, 3d and 3f: the app filling the queue logs a request of 10 events every {PACE * 1000:g} ms "
            f"with its linger at {PACED_LINGER * 1000:g} ms (10 times an app at 50 requests/s with the default "
            "20 ms), and its sender makes the messages: one per request until 50 wait in the queue, then full "
            "ones (3f: one per request throughout)."
        )

    run.step("3. worker throughput (real workers)", [dedup, no_dedup, ceiling, strict, full, single], body)


def bench_ingest(run: Run) -> None:
    """4. POST /event/log requests per second under gunicorn, against a bare endpoint of the same app."""
    off = _row("4a", "`POST /event/log` req/s vs a bare 204 endpoint, rate limit off", Target(0.85, at_most=False))
    on = _row("4b", "`POST /event/log` req/s vs a bare 204 endpoint, rate limit on", Target(0.85, at_most=False))
    floor = _row(
        "4c",
        "floor of a view: a Flask view that only reads and parses the JSON body and answers as the ingest does, "
        "vs bare",
    )
    viewed = _row(
        "4e",
        "`POST /event/log` through Flask's dispatch (`EVENTLIB_HTTP_THROUGH_FLASK`: the view), rate limit on, vs bare",
    )
    viewed.bound = floor  # the front door (4a, 4b) skips the Flask dispatch that the floor 4c pays
    batches = _row(
        "4d",
        f"`POST /event/log` with batches of {serving.BATCH_EVENTS} events (the JS client's shape), rate limit off: "
        "events/s vs bare req/s",
    )

    def body() -> None:
        probe, _ = create_app(**run.config("probe"))
        if "eventlib.log" not in probe.view_functions:
            for row in (off, on, floor, batches, viewed):
                row.missing = "n/a (no /event/log)"
            return
        wrk = serving.ensure_wrk(run.install)
        connections = 4
        for row, limit, through_flask in (
            (off, None, False),
            (on, HIGH_RATE_LIMIT, False),
            (viewed, HIGH_RATE_LIMIT, True),
        ):
            name = "ingest-view" if through_flask else "ingest-limited" if limit else "ingest"
            config = run.config(name, EVENTLIB_RATE_LIMIT=limit, EVENTLIB_HTTP_THROUGH_FLASK=through_flask)
            posted = serving.ingest_body(config["BENCH_KEY"])
            port = free_port()
            with gunicorn(port, run.folder / f"gunicorn-{name}.log", config, workers=2) as server:
                compared = serving.compare_load(
                    server,
                    port,
                    wrk,
                    posted,
                    run.sizes.load_seconds,
                    run.folder,
                    connections,
                    run.sizes.load_rounds,
                    floor=limit is None,
                    batch=serving.batch_body(config["BENCH_KEY"]) if limit is None else None,
                )
            bare = _total(compared, compared.bare, f"bare ({name})")
            against_bare = f"bare: {bare.per_second:,.0f} req/s{_cpu(bare)}"
            ingest = _total(compared, compared.ingest, f"ingest ({name})")
            row.fill_rounds(f"{ingest.per_second:,.0f} req/s{_cpu(ingest)}", against_bare, compared.ratios)
            if compared.parsed:
                parsed = _total(compared, compared.parsed, "floor endpoint")
                floor.fill_rounds(f"{parsed.per_second:,.0f} req/s{_cpu(parsed)}", against_bare, compared.parsed_ratios)
            if compared.batch:
                batched = _total(compared, compared.batch, "batch ingest")
                each = batched.cpu_per_request
                per_event = "" if each is None else f", {micros(each / serving.BATCH_EVENTS)} CPU/event"
                events_per_second = serving.BATCH_EVENTS * batched.per_second
                batches.fill_rounds(
                    f"{events_per_second:,.0f} events/s in {batched.per_second:,.0f} req/s{per_event}",
                    against_bare,
                    compared.batch_ratios,
                )
        tool = "wrk (1 thread)" if wrk else "Python threads (wrk unavailable)"
        run.report.notes.append(
            f"4: gunicorn, 2 sync workers, {connections} connections from {tool}, "
            f"{run.sizes.load_seconds:g} s per endpoint in {run.sizes.load_rounds} alternating rounds (the ratio is "
            "the median of the rounds' ratios; CPU/req is the gunicorn workers' CPU time per request, which "
            "other processes on the machine disturb less than the rate); each POST carries one event "
            '(`{"event": "bench.Ping", "data": {...}}`, application/json, no Origin); 4a, 4b and 4d are answered '
            "by the front door, in front of Flask's dispatch (the default); 4e by the view, through Flask, on a "
            "server of its own; 4c runs on 4a's server, between each bare round and its ingest round; 4d on the "
            f"same server, after each ingest round, posting {serving.BATCH_EVENTS} such events at a time as "
            '`{"events": [...]}`.'
        )

    run.step("4. ingest throughput (gunicorn + load generator)", [off, on, floor, batches, viewed], body)


def bench_js(run: Run) -> None:
    """5. The JS client's gzipped size against its budget."""
    row = _row("5", "JS client (`flask_eventlib/static/eventlib.js`), gzip -9, vs budget", Target(1.0))

    def body() -> None:
        if not JS_CLIENT.exists():
            row.missing = "n/a (not built)"
            return
        size = len(gzip.compress(JS_CLIENT.read_bytes(), compresslevel=9, mtime=0))
        _fill(row, f"{size} B", f"budget: {JS_BUDGET} B", size / JS_BUDGET)

    run.step("5. JS client size", [row], body)


def bench_broker_down(run: Run, delay: dict[str, float]) -> None:
    """6. log() while the broker is unreachable, against raw delay() with a working broker."""
    p50 = _row("6a", "`log()` in a request, broker down, p50", Target(0.05))
    p99 = _row("6b", "`log()` in a request, broker down, p99", Target(0.10))

    def body() -> None:
        if not delay:
            app, samples = inprocess.timed_app(**run.config("call-again"))
            times = inprocess.log_vs_delay(app, samples, run.sizes.log_requests)
            delay.update(delay_p50=percentile(times.delay, 50), delay_p99=percentile(times.delay, 99))
        config = run.config("down", EVENTLIB_BROKER_URL=DEAD_BROKER, EVENTLIB_STORE_URL="memory://")
        command = [sys.executable, "-m", "bench.inprocess", "down", json.dumps(config), str(run.sizes.down_requests)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BenchError(f"bench.inprocess down exited with {done.returncode}: {done.stderr[-1000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        for row, pct in ((p50, 50), (p99, 99)):
            ours, base = percentile(result["log"], pct), delay[f"delay_p{pct}"]
            ratios = [percentile(part, pct) / base for part in chunks(result["log"], run.sizes.rounds)]
            row.fill_rounds(micros(ours), f"raw `delay()` p{pct}, broker up: {micros(base)}", ratios)
        once = result["delay_down"]
        run.report.notes.append(
            f"6: a raw `delay()` against the same dead broker blocked {once['seconds']:.2f} s and raised "
            f"{once['error']}. While down, the sender had spooled {result['spooled_after_logging']} of the "
            f"{result['logged']} events logged in {result['logging_took']:.2f} s, and "
            f"{result['spooled_after_2s']} two seconds later ({result['logged'] - result['spooled_after_2s']} "
            "still only in memory)."
        )

    run.step("6. log() while the broker is down", [p50, p99], body)


def run_all(redis_url: str, sizes: Sizes, only: tuple[str, ...] = ALL, install: bool = True) -> tuple[Report, int]:
    """Run the benchmarks in ``only``; return the report and how many benchmarks failed."""
    with tempfile.TemporaryDirectory(prefix="eventlib-bench-") as tmp:
        run = Run(redis_url, sizes, Path(tmp), install)
        names = f"queues bench-{run.id}-*, keys bench:{run.id}:*"
        print(f"[bench] run {run.id}: {names} (deleted at the end)", file=sys.stderr)
        try:
            delay: dict[str, float] = {}
            if "1" in only:
                delay = bench_log_call(run)
            if "2" in only:
                bench_request(run)
            if "3" in only:
                bench_worker(run)
            if "4" in only:
                bench_ingest(run)
            if "5" in only:
                bench_js(run)
            if "6" in only:
                bench_broker_down(run, delay)
            if "7" in only:
                bench_metrics(run)
            if "9" in only:
                bench_console(run)
        finally:
            run.cleanup()
            # Again at exit: this process's apps write their figures' last counts and heartbeat then.
            at_exit(run.cleanup)
        run.report.notes.insert(
            0,
            "Each row runs in rounds that alternate ours and the baseline: its ratio is the median of the "
            "rounds' ratios, its spread their lowest to highest (and how many rounds). `borderline`: the "
            "median meets the target but a round does not.",
        )
        run.report.machine = machine(redis_url, run.load_at_start)
        at_end = CpuTimes.now()
        steal = at_end.steal_since(run.cpu_at_start) if at_end is not None else None
        if steal is not None:
            worst = max(run.steal.items(), key=lambda item: item[1], default=None)
            run.report.notes.append(
                f"The hypervisor took {steal:.1%} of the CPU time this run wanted (steal, from /proc/stat)"
                + ("" if worst is None else f'; the most in "{worst[0]}": {worst[1]:.1%}')
                + ". Steal moves with the host's other machines: it makes rounds differ, which the spreads show."
            )
        if run.load_at_start > 0.5 * (os.cpu_count() or 1):
            run.report.notes.append(
                f"Other processes kept the machine busy (load average {run.load_at_start:.2f} on {os.cpu_count()} "
                "cores when the run began): absolute figures are noisy; the ratios, measured side by side, less so."
            )
        return run.report, run.errors
