"""The console's figures: bucketing, retention (TTL), bounds, batches, heartbeats, and reading back.

Each sink (memory, SQLite, Redis) is held to the same contract; a clock the tests move stands for
time, so nothing waits.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from flask_eventlib import figures as fig
from flask_eventlib.figures import (
    BUCKET,
    TRACE_BUCKET,
    Figures,
    MemorySink,
    RedisSink,
    Sink,
    SQLiteSink,
    duration_bin,
    quantile,
    sink_for,
)
from flask_eventlib.publishing import Sender, Spool
from flask_eventlib.runner import HandlerResult
from flask_eventlib.store import MemoryStore, RedisStore, SQLiteStore
from tests.conftest import REDIS_URL, wait_for

T0 = 1_800_000_000.0  # a round number of buckets: T0 // BUCKET * BUCKET == T0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(name: str = "shop.Clicked", event_id: str | None = None) -> Any:
    return SimpleNamespace(
        name=name, id=event_id or uuid.uuid4().hex, logged_at=dt.datetime.fromtimestamp(T0 - 1, dt.UTC)
    )


@pytest.fixture(params=["memory", "sqlite", "redis"])
def sink(request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis) -> Iterator[Sink]:
    if request.param == "memory":
        yield MemorySink()
    elif request.param == "sqlite":
        found = SQLiteSink(str(tmp_path / "store.sqlite3"))
        yield found
        found.close()
    else:
        prefix = f"eventlib-test:figures:{uuid.uuid4().hex[:8]}:"
        yield RedisSink(redis_client, prefix)
        for key in redis_client.scan_iter(f"{prefix}*"):
            redis_client.delete(key)


def gathered(sink: Sink, clock: Clock, app_name: str = "shop", **options: Any) -> Figures:
    return Figures(sink, app_name=app_name, clock=clock, **options)


def ran(figures: Figures, e: Any, handler: str = "shop.count", duration: float = 0.002, error: Exception | None = None):
    # As the runner tells its watchers of an attempt.
    figures.record(HandlerResult(e, handler, error, attempt=1, duration=duration))
    figures.commit()


# -- pure helpers ------------------------------------------------------------------------------------


def test_durations_fall_in_bins_four_per_doubling_and_quantiles_come_within_a_bin() -> None:
    assert duration_bin(0) == 0 and duration_bin(1e-7) == 0
    assert duration_bin(2e-6) == 4 and duration_bin(4e-6) == 8
    assert duration_bin(10**9) == fig.MAX_BIN  # absurd durations share the last bin
    samples = [0.001] * 50 + [0.010] * 45 + [1.0] * 5
    histogram: dict[int, int] = {}
    for seconds in samples:
        histogram[duration_bin(seconds)] = histogram.get(duration_bin(seconds), 0) + 1
    p50, p95, p99 = (quantile(histogram, q) for q in (0.50, 0.95, 0.99))
    assert p50 is not None and 0.001 / 1.19 < p50 < 0.001 * 1.19
    assert p95 is not None and 0.010 / 1.19 < p95 < 0.010 * 1.19
    assert p99 is not None and 1 / 1.19 < p99 < 1.19
    assert quantile({}, 0.5) is None


def test_sink_for_follows_the_store(tmp_path: Path) -> None:
    assert isinstance(sink_for(MemoryStore()), MemorySink)
    assert isinstance(sink_for(None), MemorySink)
    sqlite = sink_for(SQLiteStore(str(tmp_path / "s.sqlite3")))
    assert isinstance(sqlite, SQLiteSink) and sqlite.path == str(tmp_path / "s.sqlite3")
    found = sink_for(RedisStore(REDIS_URL, prefix="shop:"))
    assert isinstance(found, RedisSink) and found.prefix == "shop:console:"


# -- gathering and batching ---------------------------------------------------------------------------


class CountingSink(MemorySink):
    """A memory sink that counts its writes (round trips) and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.failing = False

    def write(self, counts: Any, traces: Any, beat: Any, now: float) -> None:
        self.writes += 1
        if self.failing:
            raise ConnectionError("the store is down")
        super().write(counts, traces, beat, now)


def test_handler_runs_are_counted_in_memory_and_written_in_one_batch() -> None:
    sink, clock = CountingSink(), Clock()
    figures = gathered(sink, clock)
    for _ in range(500):
        e = event()
        figures.logged_event(e)
        ran(figures, e)
    ran(figures, event(), error=RuntimeError("boom"))
    assert sink.writes == 0  # nothing is written per handler run
    figures.flush()
    assert sink.writes == 1
    bucket = int(T0 // BUCKET)
    counts = sink.counts(bucket, bucket)[bucket]
    assert counts["l|shop.Clicked"] == 500
    assert counts["h|shop.Clicked|shop.count"] == 500
    assert counts["f|shop.Clicked|shop.count"] == 1
    assert counts[f"t|shop.count|{duration_bin(0.002)}"] == 501
    figures.flush()
    assert sink.writes == 1  # nothing new, and the heartbeat went with the batch: no write
    assert sink.counts(bucket, bucket)[bucket]["h|shop.Clicked|shop.count"] == 500


def test_counts_fall_in_the_bucket_of_their_time(sink: Sink) -> None:
    clock = Clock()
    figures = gathered(sink, clock)
    ran(figures, event())
    clock.now += BUCKET - 0.001  # still the first bucket
    ran(figures, event())
    clock.now += 0.002  # the next one
    ran(figures, event())
    ran(figures, event("shop.Bought"), "shop.bill")
    figures.flush()
    first = int(T0 // BUCKET)
    found = sink.counts(first, first + 5)
    assert found[first] == {"h|shop.Clicked|shop.count": 2, f"t|shop.count|{duration_bin(0.002)}": 2}
    assert found[first + 1]["h|shop.Clicked|shop.count"] == 1
    assert found[first + 1]["h|shop.Bought|shop.bill"] == 1
    assert sink.counts(first + 2, first + 5) == {}


def test_batches_from_several_processes_add_up(sink: Sink) -> None:
    clock = Clock()
    one, two = gathered(sink, clock), gathered(sink, clock)
    for figures in (one, two, one):
        ran(figures, event())
        figures.flush()
    bucket = int(T0 // BUCKET)
    assert sink.counts(bucket, bucket)[bucket]["h|shop.Clicked|shop.count"] == 3


def test_figures_older_than_the_retention_are_gone(sink: Sink, redis_client: redis.Redis) -> None:
    clock = Clock()
    figures = gathered(sink, clock)
    old = event()
    figures.logged_event(old)
    ran(figures, old)
    figures.flush()
    first = int(T0 // BUCKET)
    if isinstance(sink, RedisSink):
        # Redis forgets by itself: every key written has a TTL just past the retention.
        keys = list(redis_client.scan_iter(f"{sink.prefix}*"))
        assert len(keys) == 3  # the counts' bucket, the traces' bucket, the heartbeats
        for key in keys:
            assert sink.retention < redis_client.ttl(key) <= sink.retention + BUCKET + TRACE_BUCKET
        return
    clock.now += sink.retention + 2 * TRACE_BUCKET
    ran(figures, event())
    figures.flush()  # each write prunes what fell out of the retention
    assert first not in sink.counts(first, first + 10_000)
    assert sink.trace(old.id, 0, 10**9) == []
    assert [beat["seen"] for beat in sink.processes(clock.now)] == [clock.now]


def test_a_process_holds_a_bounded_number_of_counts_while_the_store_is_down() -> None:
    sink, clock = CountingSink(), Clock()
    figures = gathered(sink, clock, max_pending=10)
    sink.failing = True
    for n in range(30):
        ran(figures, event(f"shop.E{n}"))  # 2 fields each: a count and a duration bin
    figures.flush()
    # 1 duration field shared by all and 30 count fields: E0 to E8 kept, E9 to E29 dropped
    assert len(figures._counts) == 10 and figures.dropped == 21
    ran(figures, event("shop.E0"))  # a field it holds still counts
    sink.failing = False
    figures.flush()
    bucket = int(T0 // BUCKET)
    found = sink.counts(bucket, bucket)[bucket]
    assert len(found) == 10 and found["h|shop.E0|shop.count"] == 2


def test_counts_kept_through_a_failure_are_written_later_unless_too_old() -> None:
    sink, clock = CountingSink(), Clock()
    figures = gathered(sink, clock)
    sink.failing = True
    ran(figures, event())
    figures.flush()
    clock.now += 30
    ran(figures, event())
    figures.flush()
    sink.failing = False
    figures.flush()
    bucket = int(T0 // BUCKET)
    assert sink.counts(bucket, bucket + 3)[bucket]["h|shop.Clicked|shop.count"] == 1
    assert sink.counts(bucket, bucket + 3)[bucket + 3]["h|shop.Clicked|shop.count"] == 1
    sink.failing = True
    ran(figures, event())
    figures.flush()
    clock.now += sink.retention + BUCKET
    sink.failing = False
    figures.flush()
    assert sink.counts(bucket + 3, bucket + 3)[bucket + 3]["h|shop.Clicked|shop.count"] == 1  # the old one dropped


def test_a_failing_store_is_logged_once_until_it_works_again(caplog: pytest.LogCaptureFixture) -> None:
    sink, clock = CountingSink(), Clock()
    figures = gathered(sink, clock)
    sink.failing = True
    for _ in range(3):
        ran(figures, event())
        figures.flush()
    sink.failing = False
    figures.flush()
    messages = [r.getMessage() for r in caplog.records if "console's figures" in r.getMessage()]
    assert len(messages) == 2 and "cannot write" in messages[0] and "written again" in messages[1]


def test_a_redis_without_the_trace_script_gets_it_on_the_first_write(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"eventlib-test:figures:{uuid.uuid4().hex[:8]}:"
    sink = RedisSink(redis_client, prefix)
    monkeypatch.setattr(fig, "_APPEND_SHA", "0" * 40)  # a digest the server does not have
    try:
        figures = gathered(sink, Clock())
        e = event()
        ran(figures, e)
        figures.flush()
        first = int(T0 // TRACE_BUCKET)
        assert [line["k"] for line in sink.trace(e.id, first, first)] == ["run"]
    finally:
        for key in redis_client.scan_iter(f"{prefix}*"):
            redis_client.delete(key)


# -- traces -------------------------------------------------------------------------------------------


def test_each_batch_traces_at_most_max_traces_events_and_as_many_again_that_failed(sink: Sink) -> None:
    clock = Clock()
    figures = gathered(sink, clock, max_traces=3)
    events = [event() for _ in range(5)]
    for e in events:
        ran(figures, e)
        ran(figures, e, "shop.second")  # an event traced stays traced: all its handlers are
    dead = event()
    ran(figures, dead, error=RuntimeError("boom"))
    figures._on_dead_lettered(None, event=dead, handler="shop.count", attempt=1, error=RuntimeError("boom"))
    failing = [event() for _ in range(5)]
    for e in failing:
        ran(figures, e, error=RuntimeError("boom"))
    figures.flush()
    first = int(T0 // TRACE_BUCKET)
    traced = [e for e in events if sink.trace(e.id, first, first)]
    assert traced == events[:3]
    assert [line["h"] for line in sink.trace(events[0].id, first, first)] == ["shop.count", "shop.second"]
    # Failures have a budget more: the dead letter's event, then two more of the failing ones.
    assert [line["k"] for line in sink.trace(dead.id, first, first)] == ["run", "dead"]
    assert [bool(sink.trace(e.id, first, first)) for e in failing] == [True, True, False, False, False]
    ran(figures, events[4])  # a new batch, a new budget
    figures.flush()
    assert sink.trace(events[4].id, first, first)


def test_a_trace_bucket_holds_at_most_its_cap_of_events_and_each_event_a_bounded_trace(sink: Sink) -> None:
    sink.trace_cap = 4  # type: ignore[attr-defined]
    clock = Clock()
    figures = gathered(sink, clock)
    events = [event() for _ in range(6)]
    for e in events[:3]:
        ran(figures, e)
    figures.flush()
    for e in events:
        ran(figures, e)  # the first three add to their traces; one more fits
    figures.flush()
    first = int(T0 // TRACE_BUCKET)
    assert [len(sink.trace(e.id, first, first)) for e in events] == [2, 2, 2, 1, 0, 0]
    chatty = events[0]
    for _ in range(400):  # a handler retried without end
        ran(figures, chatty, duration=0, error=ValueError("x" * 200))
        figures.flush()
    lines = sink.trace(chatty.id, first, first)
    assert 10 < len(lines) < 400 and lines[-1]["k"] == "run"
    assert len("".join(json.dumps(line, separators=(",", ":")) for line in lines)) < fig.MAX_TRACE_BYTES + 1000


def test_a_published_batch_is_traced_from_the_messages_themselves() -> None:
    sink, clock = MemorySink(), Clock()
    figures = gathered(sink, clock, max_traces=2)
    sent: list[list[str]] = []
    send = figures.wrap_send(sent.append)
    logged = "2027-01-15T08:00:00.5+00:00"
    messages = [json.dumps({"v": 1, "id": f"id-{n}", "name": "shop.Clicked", "logged_at": logged}) for n in range(3)]
    send([*messages, "not json"])
    assert sent == [[*messages, "not json"]]
    figures.flush()
    first = int(T0 // TRACE_BUCKET)
    (line,) = sink.trace("id-0", first, first)
    assert line["k"] == "pub" and line["at"] == T0 and line["n"] == "shop.Clicked"
    assert line["l"] == dt.datetime.fromisoformat(logged).timestamp()
    assert sink.trace("id-1", first, first) and not sink.trace("id-2", first, first)  # past the cap


def test_the_story_of_an_event_tells_its_steps_and_each_handlers_outcome(sink: Sink) -> None:
    clock = Clock()
    figures = gathered(sink, clock)
    e = event("shop.Bought")
    figures.published([json.dumps({"v": 1, "id": e.id, "name": e.name, "logged_at": "2027-01-15T08:00:00+00:00"})])
    clock.now += 0.5
    ran(figures, e, "shop.bill", 0.25)
    ran(figures, e, "shop.mail", 0.01, error=RuntimeError("smtp down"))
    figures._on_retried(None, event=e, handler="shop.mail", attempt=1, delay=2.0)
    clock.now += 70  # the next trace bucket
    ran(figures, e, "shop.mail", 0.02)
    figures.flush()
    order = ["shop.bill", "shop.mail", "shop.stock"]
    told = fig.story(sink, e.id, labels=lambda name: order, now=clock.now)
    assert told.traced and told.name == "shop.Bought"
    assert told.published_at == T0 and told.published_by == figures.process
    assert told.logged_at == dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp()
    assert [(h.label, h.outcome, [a.ok for a in h.attempts]) for h in told.handlers] == [
        ("shop.bill", "succeeded", [True]),
        ("shop.mail", "succeeded", [False, True]),
        ("shop.stock", "not seen", []),
    ]
    assert told.handlers[1].attempts[0].error == "RuntimeError: smtp down"
    assert told.handled_at is None  # shop.stock has not run
    told = fig.story(sink, e.id, labels=lambda name: order, done=["shop.stock"], now=clock.now)
    assert told.handlers[2].outcome == "succeeded" and told.handled_at == T0 + 70.5
    told = fig.story(sink, e.id, labels=lambda name: order, dead=["shop.stock"], now=clock.now)
    assert told.handlers[2].outcome == "dead-lettered"
    nothing = fig.story(sink, "no-such-id", labels=lambda name: order, now=clock.now)
    assert not nothing.traced and nothing.handlers == [] and nothing.name is None


# -- heartbeats ---------------------------------------------------------------------------------------


def test_a_worker_beats_even_idle_a_web_process_once_it_logged_and_a_command_never() -> None:
    sink, clock = CountingSink(), Clock()
    web, worker, command = (gathered(sink, clock, name) for name in ("web", "worker", "command"))
    worker.worker_started()
    for figures in (web, worker, command):
        figures.flush()
    assert [b["role"] for b in sink.processes(clock.now)] == ["worker"]
    web.logged_event(event())
    web.flush()
    clock.now += 1
    worker.flush()  # within BEAT_INTERVAL and nothing new: no write at all
    assert sorted(b["role"] for b in sink.processes(clock.now)) == ["web", "worker"]
    writes = sink.writes
    clock.now += fig.BEAT_INTERVAL
    worker.flush()
    assert sink.writes == writes + 1


def test_a_web_processs_heartbeat_says_what_waits_where_and_since_when(tmp_path: Path) -> None:
    sink, clock = MemorySink(), Clock()
    figures = gathered(sink, clock)
    spool = Spool(str(tmp_path / "spool.sqlite3"))
    old = json.dumps({"v": 1, "id": "a", "name": "shop.Clicked", "logged_at": "2027-01-15T08:00:00+00:00"})
    new = json.dumps({"v": 1, "id": "b", "name": "shop.Clicked", "logged_at": "2027-01-15T09:00:00+00:00"})
    spool.put([old, new])
    sender = Sender(lambda batch: None, spool=spool)
    figures.tick(sender)
    (beat,) = sink.processes(clock.now)
    assert (beat["role"], beat["spool"], beat["queued"], beat["memory"], beat["local_log"]) == ("web", 2, 0, 0, 0)
    assert beat["oldest"] == dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp()
    assert beat["app"] == "shop" and beat["pid"] == figures.pid
    assert beat["behind"] is False


def test_a_web_processs_heartbeat_says_that_its_sender_fills_its_messages_while_the_workers_are_behind() -> None:
    sink, clock = MemorySink(), Clock()
    figures = gathered(sink, clock)
    sender = Sender(lambda batch: 60, backlog_depth=50)  # the broker says: 60 messages wait
    figures.logged_event(event())  # a web process beats once it logged
    sender.submit(["an event"])
    assert sender.flush(5)
    figures.tick(sender)
    (beat,) = sink.processes(clock.now)
    assert beat["behind"] is True


def test_the_senders_thread_ticks_about_once_a_second_without_events() -> None:
    ticks: list[Sender] = []
    sender = Sender(lambda batch: None, tick=ticks.append, tick_interval=0.05)
    sender.start()
    wait_for(lambda: len(ticks) >= 3, timeout=10, what="three ticks")
    assert all(found is sender for found in ticks)


def test_the_local_log_and_the_spool_name_their_oldest_event(tmp_path: Path) -> None:
    from flask_eventlib.locallog import LocalLog

    log = LocalLog(str(tmp_path / "log"))
    assert log.oldest() is None
    first = log.append(["one", "two"])
    log.append(["three"])
    assert log.oldest() == "one"
    assert first is not None
    log.release([first])
    assert log.oldest() == "three"
    log.close()
    spool = Spool(str(tmp_path / "spool.sqlite3"))
    assert spool.oldest() is None
    spool.put(["a", "b"])
    spool.put(["c"])
    assert spool.oldest() == "a"


def test_an_apps_receivers_go_with_the_app() -> None:
    import gc
    import weakref

    from flask import Flask

    from flask_eventlib import signals

    def owners() -> list[Any]:
        found = [r() if isinstance(r, weakref.ref) else r for r in signals.handler_retried.receivers.values()]
        return [getattr(receiver, "__self__", None) for receiver in found]

    app = Flask("gone")
    app.extensions["figures"] = Figures(MemorySink())  # as init_app keeps it, in the app's state
    app.extensions["figures"].connect(app)
    gc.collect()
    assert app.extensions["figures"] in owners()
    kept, before = weakref.ref(app.extensions["figures"]), len(signals.handler_retried.receivers)
    del app
    gc.collect()
    assert kept() is None and len(signals.handler_retried.receivers) == before - 1


# -- reading back ------------------------------------------------------------------------------------


def test_the_overview_adds_up_rates_totals_durations_and_processes(sink: Sink) -> None:
    clock = Clock()
    figures = gathered(sink, clock)
    figures.worker_started()
    for n in range(60):
        e = event()
        figures.logged_event(e)
        ran(figures, e, duration=0.001 if n < 50 else 0.1)
        if n % 10 == 0:
            ran(figures, e, "shop.mail", error=RuntimeError("x"))
            figures._on_retried(None, event=e, handler="shop.mail", attempt=1, delay=1)
    figures.flush()
    clock.now += 5
    view = fig.overview(sink, clock.now)
    assert view["hour"] == {"logged": 60, "handled": 60, "failed": 6, "retried": 6, "dead": 0}
    assert view["rates"]["logged"] == pytest.approx(60 / 65)  # over the buckets of the last minute
    assert len(view["series"]["logged"]) == sink.retention // BUCKET
    assert view["series"]["logged"][-1] == 60 / BUCKET and sum(view["series"]["handled"]) == 60 / BUCKET
    assert view["start"] == T0 - sink.retention + BUCKET
    count = view["handlers"]["shop.count"]
    assert (count["handled"], count["failed"], count["events"]) == (60, 0, ["shop.Clicked"])
    assert count["p50"] == pytest.approx(0.001, rel=0.19) and count["p95"] == pytest.approx(0.1, rel=0.19)
    assert view["handlers"]["shop.mail"]["failed"] == 6 and view["handlers"]["shop.mail"]["retried"] == 6
    assert view["events"]["shop.Clicked"]["logged"] == 60
    (worker,) = view["processes"]["workers"]
    assert worker["handled"] == 60 and worker["failed"] == 6 and worker["age"] == 5
    assert view["processes"]["web"] == []
    assert json.loads(json.dumps(view)) == view  # what /overview.json sends
