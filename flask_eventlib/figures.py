"""The console's figures: what the events did, counted in time buckets, and each process's heartbeat.

Each process of an app (a web process, a worker's child) keeps a :class:`Figures`: ``log()``
tells it of each event logged and the runner of each handler run with its duration (direct
calls, on the paths every event takes), the blinker signals of :mod:`flask_eventlib.signals` of
retries and dead letters; it adds them up in memory, and about once a second the
background sender's thread writes what it gathered in one batch (:meth:`Figures.tick`): one round
trip to Redis, one transaction in SQLite, never one per handler run.

Where the figures live follows the store (:func:`sink_for`): a :class:`RedisSink` beside a
Redis store (the default with a Redis broker), a :class:`SQLiteSink` in a SQLite store's file,
a :class:`MemorySink` with a memory store (one process: tests, eager mode). Every kind is bounded:

- counts go in buckets of :data:`BUCKET` seconds, kept :data:`RETENTION` seconds (a Redis hash per
  bucket, with a TTL); their fields are named by events and handlers, which the registry bounds;
- handler durations are histograms of a few dozen bins (four per doubling), whence p50 and p95;
- the traces of single events (for the console's "one event" page) go in buckets of
  :data:`TRACE_BUCKET` seconds, at most :data:`MAX_TRACES_PER_FLUSH` events per process per batch
  and :data:`MAX_TRACES_PER_BUCKET` per bucket in all: beyond that an event is not traced;
- heartbeats are one entry per process, dropped :data:`RETENTION` seconds after it was last seen.

Reading them back (:func:`overview`, :func:`story`) needs no Flask either.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import signals
from .spool import Send
from .sqlite import SQLiteFile
from .store import RedisStore, SQLiteStore, Store

logger = logging.getLogger("flask_eventlib")

#: Seconds per bucket of counts.
BUCKET = 10
#: Seconds the figures (counts, traces, heartbeats) are kept.
RETENTION = 3600
#: Seconds per bucket of traces.
TRACE_BUCKET = 60
#: The most events one process traces per batch (about a second), and as many again whose handler
#: failed; the others are only counted.
MAX_TRACES_PER_FLUSH = 200
#: The most events traced per trace bucket, all processes together.
MAX_TRACES_PER_BUCKET = 2000
#: The most bytes of one event's trace (its handlers' attempts): a handler retried without end
#: leaves its first attempts, not a growing string.
MAX_TRACE_BYTES = 16_384
#: The most count fields one process holds between two batches (more only when the store is
#: unreachable for a long time: the oldest are dropped first).
MAX_PENDING = 20_000
#: Seconds between two heartbeats of a process with nothing to report.
BEAT_INTERVAL = 5.0
#: A worker seen within this many seconds is "seen recently".
SEEN_RECENTLY = 30.0
#: Duration histograms: bins of ``DURATION_FLOOR * 2 ** (bin / BINS_PER_DOUBLING)`` seconds.
DURATION_FLOOR = 1e-6
BINS_PER_DOUBLING = 4
MAX_BIN = 40 * BINS_PER_DOUBLING  # about 12 days: longer runs share the last bin

# Count fields: "<kind>|<event>|<handler>" (logged: "l|<event>"), durations "t|<handler>|<bin>".
LOGGED, HANDLED, FAILED, RETRIED, DEAD, DURATION = "l", "h", "f", "r", "d", "t"


def duration_bin(seconds: float) -> int:
    """The histogram bin of a duration: four per doubling, from a microsecond."""
    if seconds <= DURATION_FLOOR:
        return 0
    return min(MAX_BIN, int(math.log2(seconds / DURATION_FLOOR) * BINS_PER_DOUBLING))


def bin_value(index: int) -> float:
    """A duration that stands for the bin ``index``: the geometric middle of its bounds."""
    return float(DURATION_FLOOR * 2 ** ((index + 0.5) / BINS_PER_DOUBLING))


def quantile(histogram: Mapping[int, int], q: float) -> float | None:
    """The ``q``-quantile (0 < q <= 1) of a histogram of duration bins, within a bin (19 %)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bin_value(index)
    return bin_value(max(histogram))


def _epoch(value: Any) -> float | None:
    """Unix time of an envelope's ``logged_at`` (ISO 8601) or an aware datetime."""
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def logged_at_of(message: str) -> float | None:
    """Unix time an encoded event was logged at (``None`` if the message does not say)."""
    try:
        document = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return _epoch(document.get("logged_at")) if isinstance(document, dict) else None


def error_text(error: BaseException) -> str:
    """``ClassName: message``, cut to 300 characters: what a trace keeps of a handler's error."""
    return f"{type(error).__name__}: {error}"[:300]


# -- where figures are written ---------------------------------------------------------------------

#: Counts to add, by ``(bucket, field)``.
Counts = Mapping[tuple[int, str], int]
#: ``(trace bucket, event id, one JSON line ending in a newline)``.
TraceLine = tuple[int, str, str]
#: ``(process id, JSON of its heartbeat)``.
Beat = tuple[str, str]


class Sink(ABC):
    """Where the figures of every process of an app meet."""

    retention: float = RETENTION

    @abstractmethod
    def write(self, counts: Counts, traces: Sequence[TraceLine], beat: Beat | None, now: float) -> None:
        """Add ``counts``, append ``traces`` (within the caps) and store ``beat``, in one batch."""

    @abstractmethod
    def counts(self, since: int, until: int) -> dict[int, dict[str, int]]:
        """The counts of the buckets ``since`` to ``until`` (both included), by bucket."""

    @abstractmethod
    def processes(self, now: float) -> list[dict[str, Any]]:
        """The last heartbeat of each process seen within the retention."""

    @abstractmethod
    def trace(self, event_id: str, since: int, until: int) -> list[dict[str, Any]]:
        """The trace lines of ``event_id`` in the trace buckets ``since`` to ``until``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def _lines(text: str | bytes | None) -> list[dict[str, Any]]:
    found = []
    for line in (text.decode() if isinstance(text, bytes) else text or "").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue  # a line cut by MAX_TRACE_BYTES
    return found


class MemorySink(Sink):
    """In one process only (a memory store: tests, eager mode)."""

    def __init__(self, retention: float = RETENTION, trace_cap: int = MAX_TRACES_PER_BUCKET) -> None:
        self.retention = retention
        self.trace_cap = trace_cap
        self._counts: dict[int, dict[str, int]] = {}
        self._processes: dict[str, tuple[float, str]] = {}
        self._traces: dict[int, dict[str, str]] = {}
        self._lock = threading.Lock()

    def write(self, counts: Counts, traces: Sequence[TraceLine], beat: Beat | None, now: float) -> None:
        with self._lock:
            for (bucket, name), n in counts.items():
                fields = self._counts.setdefault(bucket, {})
                fields[name] = fields.get(name, 0) + n
            for bucket, event_id, line in traces:
                kept = self._traces.setdefault(bucket, {})
                if event_id in kept:
                    if len(kept[event_id]) < MAX_TRACE_BYTES:
                        kept[event_id] += line
                elif len(kept) < self.trace_cap:
                    kept[event_id] = line
            if beat is not None:
                self._processes[beat[0]] = (now, beat[1])
            oldest = now - self.retention
            for bucket in [b for b in self._counts if (b + 1) * BUCKET < oldest]:
                del self._counts[bucket]
            for bucket in [b for b in self._traces if (b + 1) * TRACE_BUCKET < oldest]:
                del self._traces[bucket]
            for key in [k for k, (seen, _) in self._processes.items() if seen < oldest]:
                del self._processes[key]

    def counts(self, since: int, until: int) -> dict[int, dict[str, int]]:
        with self._lock:
            return {b: dict(f) for b, f in self._counts.items() if since <= b <= until}

    def processes(self, now: float) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for seen, body in self._processes.values() if seen >= now - self.retention]

    def trace(self, event_id: str, since: int, until: int) -> list[dict[str, Any]]:
        with self._lock:
            texts = [self._traces[b].get(event_id) for b in sorted(self._traces) if since <= b <= until]
        return [line for text in texts for line in _lines(text)]


#: Appends one batch of trace lines to a bucket's hash, each event's lines to its field, within
#: the caps. KEYS: the bucket's hash. ARGV: ttl, the most events per bucket, the most bytes per
#: event, then pairs of event id and lines.
_APPEND_TRACES = """
local key, ttl, cap, most = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = redis.call('HLEN', key)
for i = 4, #ARGV, 2 do
  local old = redis.call('HGET', key, ARGV[i])
  if old then
    if #old < most then redis.call('HSET', key, ARGV[i], old .. ARGV[i + 1]) end
  elseif n < cap then
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
redis.call('EXPIRE', key, ttl)
return n
"""
_APPEND_SHA = hashlib.sha1(_APPEND_TRACES.encode()).hexdigest()


class RedisSink(Sink):
    """Beside a Redis store: ``{prefix}console:c:{bucket}`` hashes of counts and
    ``{prefix}console:t:{bucket}`` hashes of traces (event id -> JSON lines), each expiring with
    the retention, and a ``{prefix}console:procs`` hash of heartbeats (process -> JSON).

    :param client: a ``redis.Redis`` (the store's).
    """

    def __init__(
        self, client: Any, prefix: str, retention: float = RETENTION, trace_cap: int = MAX_TRACES_PER_BUCKET
    ) -> None:
        import redis

        self.client = client
        self.prefix = f"{prefix}console:"
        self.retention = retention
        self.trace_cap = trace_cap
        self._no_script = redis.exceptions.NoScriptError

    def write(self, counts: Counts, traces: Sequence[TraceLine], beat: Beat | None, now: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        ttl = int(self.retention) + BUCKET
        buckets = set()
        for (bucket, name), n in counts.items():
            pipe.hincrby(f"{self.prefix}c:{bucket}", name, n)
            buckets.add(bucket)
        for bucket in buckets:
            pipe.expire(f"{self.prefix}c:{bucket}", ttl)
        calls = []
        for bucket, lines in _by_bucket(traces).items():
            args: list[Any] = [ttl + TRACE_BUCKET, self.trace_cap, MAX_TRACE_BYTES]
            for event_id, text in lines.items():
                args += [event_id, text]
            calls.append((len(pipe), f"{self.prefix}t:{bucket}", args))
            pipe.execute_command("EVALSHA", _APPEND_SHA, 1, f"{self.prefix}t:{bucket}", *args)
        if beat is not None:
            pipe.hset(f"{self.prefix}procs", beat[0], beat[1])
            pipe.expire(f"{self.prefix}procs", ttl)
        results = pipe.execute(raise_on_error=False)
        failure = next((r for r in results if isinstance(r, Exception) and not isinstance(r, self._no_script)), None)
        missing = [(key, args) for index, key, args in calls if isinstance(results[index], self._no_script)]
        if missing:  # a server that does not have the script yet (a first write, a restart)
            sha = self.client.execute_command("SCRIPT", "LOAD", _APPEND_TRACES)
            for key, args in missing:
                self.client.execute_command("EVALSHA", sha, 1, key, *args)
        if failure is not None:
            raise failure

    def counts(self, since: int, until: int) -> dict[int, dict[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        buckets = list(range(since, until + 1))
        for bucket in buckets:
            pipe.hgetall(f"{self.prefix}c:{bucket}")
        found = {}
        for bucket, fields in zip(buckets, pipe.execute(), strict=True):
            if fields:
                found[bucket] = {k.decode(): int(v) for k, v in fields.items()}
        return found

    def processes(self, now: float) -> list[dict[str, Any]]:
        key = f"{self.prefix}procs"
        found, stale = [], []
        for name, body in self.client.hgetall(key).items():
            beat = json.loads(body)
            if beat.get("seen", 0) < now - self.retention:
                stale.append(name)
            else:
                found.append(beat)
        if stale:
            self.client.hdel(key, *stale)
        return found

    def trace(self, event_id: str, since: int, until: int) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        for bucket in range(since, until + 1):
            pipe.hget(f"{self.prefix}t:{bucket}", event_id)
        return [line for text in pipe.execute() for line in _lines(text)]


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_counts (
    bucket INTEGER NOT NULL, field TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (bucket, field));
CREATE TABLE IF NOT EXISTS console_processes (id TEXT PRIMARY KEY, seen REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS console_traces (
    bucket INTEGER NOT NULL, event_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (event_id, bucket));
CREATE INDEX IF NOT EXISTS console_traces_bucket ON console_traces (bucket);
"""


class SQLiteSink(Sink):
    """In a SQLite store's file (tables ``console_*``), shared by the processes of one machine."""

    def __init__(self, path: str, retention: float = RETENTION, trace_cap: int = MAX_TRACES_PER_BUCKET) -> None:
        self.path = path
        self.retention = retention
        self.trace_cap = trace_cap
        self._file = SQLiteFile(path, _SQLITE_SCHEMA, name="console figures")

    def write(self, counts: Counts, traces: Sequence[TraceLine], beat: Beat | None, now: float) -> None:
        oldest = now - self.retention
        with self._file.transaction():
            self._file.executemany(
                "INSERT INTO console_counts VALUES (?, ?, ?) ON CONFLICT (bucket, field) DO UPDATE SET "
                "value = value + excluded.value",
                [(bucket, name, n) for (bucket, name), n in counts.items()],
            )
            self._file.execute("DELETE FROM console_counts WHERE bucket < ?", (int(oldest // BUCKET),))
            for bucket, lines in _by_bucket(traces).items():
                ((held,),) = self._file.execute("SELECT COUNT(*) FROM console_traces WHERE bucket = ?", (bucket,))
                for event_id, text in lines.items():
                    kept = self._file.execute(
                        "SELECT length(body) FROM console_traces WHERE event_id = ? AND bucket = ?", (event_id, bucket)
                    )
                    if kept and kept[0][0] < MAX_TRACE_BYTES:
                        self._file.execute(
                            "UPDATE console_traces SET body = body || ? WHERE event_id = ? AND bucket = ?",
                            (text, event_id, bucket),
                        )
                    elif not kept and held < self.trace_cap:
                        self._file.execute("INSERT INTO console_traces VALUES (?, ?, ?)", (bucket, event_id, text))
                        held += 1
            self._file.execute("DELETE FROM console_traces WHERE bucket < ?", (int(oldest // TRACE_BUCKET),))
            if beat is not None:
                self._file.execute("INSERT OR REPLACE INTO console_processes VALUES (?, ?, ?)", (beat[0], now, beat[1]))
            self._file.execute("DELETE FROM console_processes WHERE seen < ?", (oldest,))

    def counts(self, since: int, until: int) -> dict[int, dict[str, int]]:
        found: dict[int, dict[str, int]] = {}
        rows = self._file.execute(
            "SELECT bucket, field, value FROM console_counts WHERE bucket BETWEEN ? AND ?", (since, until)
        )
        for bucket, name, value in rows:
            found.setdefault(bucket, {})[name] = value
        return found

    def processes(self, now: float) -> list[dict[str, Any]]:
        rows = self._file.execute("SELECT body FROM console_processes WHERE seen >= ?", (now - self.retention,))
        return [json.loads(body) for (body,) in rows]

    def trace(self, event_id: str, since: int, until: int) -> list[dict[str, Any]]:
        rows = self._file.execute(
            "SELECT body FROM console_traces WHERE event_id = ? AND bucket BETWEEN ? AND ? ORDER BY bucket",
            (event_id, since, until),
        )
        return [line for (body,) in rows for line in _lines(body)]

    def close(self) -> None:
        self._file.close()


def _by_bucket(traces: Iterable[TraceLine]) -> dict[int, dict[str, str]]:
    """Trace lines grouped by bucket, then by event, in order."""
    grouped: dict[int, dict[str, str]] = {}
    for bucket, event_id, line in traces:
        lines = grouped.setdefault(bucket, {})
        lines[event_id] = lines.get(event_id, "") + line
    return grouped


def sink_for(store: Store | None) -> Sink:
    """Where the figures go for an app with ``store``: beside it (a memory one otherwise)."""
    if isinstance(store, RedisStore):
        return RedisSink(store.client, store.prefix)
    if isinstance(store, SQLiteStore):
        return SQLiteSink(store.path)
    return MemorySink()


# -- gathering them in a process -------------------------------------------------------------------


class Figures:
    """One app's figures in one process, gathered from its signals and written in batches.

    :param sink: where the batches go.
    :param app_name: the app, named in heartbeats.
    :param clock: Unix time (tests move it).
    :param max_traces: the most events traced per batch in this process.
    :param max_pending: the most count fields held between two batches.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        app_name: str = "",
        clock: Callable[[], float] = time.time,
        max_traces: int = MAX_TRACES_PER_FLUSH,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.sink = sink
        self.app_name = app_name
        self.clock = clock
        self.max_traces = max_traces
        self.max_pending = max_pending
        #: ``"web"``, or ``"worker"`` in a process of a Celery worker (:meth:`worker_started`).
        self.role = "web"
        self._reset()
        _all.add(self)

    def _reset(self) -> None:
        """This process's state (a forked child starts afresh: its parent writes its own counts)."""
        self._lock = threading.Lock()
        #: ``(bucket, kind, event or handler, handler or duration bin)`` -> count: tuples, made
        #: faster than the strings of the fields (:func:`_field`), made once per batch.
        self._counts: dict[tuple[int, str, str, Any], int] = {}
        self._traces: list[tuple[int, str, dict[str, Any]]] = []
        self._traced: set[str] = set()
        #: Attempts recorded and not counted yet, with when each ended (a deque: the threads of a
        #: thread pool record and commit at once without a lock).
        self._ended: collections.deque[tuple[Any, float]] = collections.deque()
        self.pid = os.getpid()
        self.process = f"{socket.gethostname()}:{self.pid}"
        self.started = self.clock()
        #: Since this process started: events logged, handler runs that succeeded and failed.
        self.logged = self.handled = self.failed = 0
        #: Counts dropped because the sink could not be written for long (see ``max_pending``).
        self.dropped = 0
        self._last_beat = 0.0
        self._failing = False

    def connect(self, app: Any) -> None:
        """Listen to ``app``'s signals, weakly: the receivers go with this object, which lives as
        long as the app's state (blinker would keep strong ones after the app is gone)."""
        for signal, receiver in (
            (signals.handler_retried, self._on_retried),
            (signals.handler_dead_lettered, self._on_dead_lettered),
        ):
            signal.connect(receiver, sender=app)

    def worker_started(self) -> None:
        """This process runs a worker's tasks: its heartbeats say so, even while idle."""
        self.role = "worker"

    # -- the receivers (the hot path: a few dict updates under a lock, a few hundred ns) -----------

    def _bump(self, key: tuple[int, str, str, Any], n: int = 1) -> None:
        """Add to one count; the caller holds the lock."""
        counts = self._counts
        if key in counts:
            counts[key] += n
        elif len(counts) < self.max_pending:
            counts[key] = n
        else:
            self.dropped += n

    def logged_event(self, event: Any) -> None:
        """One event logged here (the dispatcher calls it for each: see ``Dispatcher.counted``)."""
        key = (int(self.clock() // BUCKET), LOGGED, event.name, "")
        with self._lock:
            self.logged += 1
            counts = self._counts
            if key in counts:
                counts[key] += 1
            else:
                self._bump(key)

    # The runner's Watcher (its handler runs come straight from it: a signal a run cost more
    # than the counting itself). An attempt is only kept as it ends; the message's end counts
    # its attempts in one loop and one lock: in a worker, where each event runs through much
    # cold code, counting each attempt on its own cost about three times what it costs in a loop.

    def record(self, result: Any) -> None:
        """One attempt of a handler (a :class:`~flask_eventlib.runner.HandlerResult`), kept with
        the time it ended until :meth:`commit`."""
        self._ended.append((result, self.clock()))

    def commit(self) -> None:
        """Count the attempts recorded so far (a message's, or a retry's)."""
        ended = self._ended
        taken = []
        while True:  # popleft, not a swap: other threads of a thread pool may record meanwhile
            try:
                taken.append(ended.popleft())
            except IndexError:
                break
        if not taken:
            return
        counts: dict[tuple[int, str, str, Any], int] = {}
        handled = 0
        for result, now in taken:
            bucket = int(now // BUCKET)
            duration = result.duration
            if result.error is None:
                handled += 1
                counted = (bucket, HANDLED, result.event.name, result.handler)
            else:
                counted = (bucket, FAILED, result.event.name, result.handler)
            timed = (bucket, DURATION, result.handler, duration_bin(duration))
            counts[counted] = counts.get(counted, 0) + 1
            counts[timed] = counts.get(timed, 0) + 1
        with self._lock:
            self.handled += handled
            self.failed += len(taken) - handled
            for key, n in counts.items():
                self._bump(key, n)
            traced = self._traced
            for result, now in taken:
                event_id = result.event.id
                ok = result.error is None
                if (event_id in traced or len(traced) < self.max_traces or not ok) and self._tracing(event_id, not ok):
                    self._trace_run(result, now)

    def _trace_run(self, result: Any, now: float) -> None:
        """The trace line of one attempt (the caller holds the lock)."""
        event, error, duration = result.event, result.error, result.duration
        line: dict[str, Any] = {"k": "run", "h": result.handler, "a": result.attempt, "ok": error is None}
        line.update(at=round(now - duration, 6), d=round(duration, 6), n=event.name, p=self.process)
        line["l"] = _epoch(event.logged_at)
        if error is not None:
            line["e"] = error_text(error)
        self._traces.append((int(now // TRACE_BUCKET), event.id, line))

    def _on_retried(self, sender: Any, event: Any, handler: str, attempt: int, delay: float, **extra: Any) -> None:
        self._step(event, RETRIED, {"k": "retry", "h": handler, "a": attempt, "delay": round(delay, 3)})

    def _on_dead_lettered(self, sender: Any, event: Any, handler: str, attempt: int, **extra: Any) -> None:
        self._step(event, DEAD, {"k": "dead", "h": handler, "a": attempt}, failure=True)

    def _step(self, event: Any, kind: str, line: dict[str, Any], *, failure: bool = False) -> None:
        now = self.clock()
        with self._lock:
            self._bump((int(now // BUCKET), kind, event.name, line["h"]))
            if self._tracing(event.id, failure):
                line.update(at=round(now, 6), n=event.name, p=self.process)
                self._traces.append((int(now // TRACE_BUCKET), event.id, line))

    def _tracing(self, event_id: str | None, failure: bool = False) -> bool:
        """Whether to trace ``event_id`` in this batch (the caller holds the lock): within
        ``max_traces`` events, and as many again for failures, which matter most."""
        if not event_id:
            return False
        traced = self._traced
        if event_id in traced:
            return True
        if len(traced) < self.max_traces or (failure and len(traced) < 2 * self.max_traces):
            traced.add(event_id)
            return True
        return False

    # -- the web process's side: what it published -------------------------------------------

    def wrap_send(self, send: Send) -> Send:
        """``send``, which also traces when the events it published left (within the trace cap)."""

        def sending(messages: list[str]) -> int | None:
            depth = send(messages)
            self.published(messages)
            return depth

        return sending

    def published(self, messages: Sequence[str]) -> None:
        """Trace that the broker took ``messages`` now: their id, name and ``logged_at``."""
        with self._lock:
            room = self.max_traces - len(self._traced)
        if room <= 0:
            return
        now = self.clock()
        bucket = int(now // TRACE_BUCKET)
        found = []
        for message in messages[:room]:  # parsed only as far as traced: the others cost nothing
            try:
                document = orjson.loads(message)
            except orjson.JSONDecodeError:
                continue
            event_id = document.get("id") if isinstance(document, dict) else None
            if isinstance(event_id, str) and event_id:
                line = {"k": "pub", "at": round(now, 6), "n": document.get("name"), "p": self.process}
                line["l"] = _epoch(document.get("logged_at"))
                found.append((bucket, event_id, line))
        with self._lock:
            for entry in found:
                if self._tracing(entry[1]):
                    self._traces.append(entry)

    # -- the batches --------------------------------------------------------------------------

    def tick(self, sender: Any = None) -> None:
        """The background sender's tick, about once a second: write what was gathered, with a
        heartbeat that says how much waits in ``sender`` (a :class:`~.publishing.Sender`)."""
        self.flush(sender.waiting() if sender is not None else None)

    def flush(self, waiting: Any = None) -> None:
        """Write the counts and traces gathered since the last batch, and the heartbeat when due.

        A sink that fails keeps the counts for the next batch (within ``max_pending``); it is
        logged once, until it works again. Never raises.
        """
        self.commit()  # attempts of a message still running are counted too
        now = self.clock()
        with self._lock:
            counts, self._counts = self._counts, {}
            traces, self._traces = self._traces, []
            self._traced = set()
            totals = self.logged, self.handled, self.failed
        oldest = int((now - self.sink.retention) // BUCKET)
        if any(key[0] < oldest for key in counts):  # kept through a long failure: too old to show
            counts = {key: n for key, n in counts.items() if key[0] >= oldest}
        beat = None
        if self._reporting(waiting) and (counts or traces or now - self._last_beat >= BEAT_INTERVAL):
            beat = self._beat(now, totals, waiting)
        if not (counts or traces or beat):
            return
        lines = [
            (bucket, event_id, json.dumps(line, separators=(",", ":")) + "\n") for bucket, event_id, line in traces
        ]
        try:
            self.sink.write({(key[0], _field(key)): n for key, n in counts.items()}, lines, beat, now)
        except Exception as exc:
            self._keep(counts)
            if not self._failing:
                self._failing = True
                logger.warning(
                    "flask-eventlib: cannot write the console's figures (%s: %s); they wait in memory (at most %d "
                    "counts) and are tried again each second",
                    type(exc).__name__,
                    exc,
                    self.max_pending,
                )
            return
        if beat is not None:
            self._last_beat = now
        if self._failing:
            self._failing = False
            logger.warning("flask-eventlib: the console's figures are written again")

    def _keep(self, counts: dict[tuple[int, str, str, Any], int]) -> None:
        """Put back the counts of a batch that failed (past ``max_pending``, the rest are
        dropped and counted in :attr:`dropped`)."""
        with self._lock:
            for key, n in counts.items():
                self._bump(key, n)

    def _reporting(self, waiting: Any) -> bool:
        """Whether this process sends heartbeats: a worker's, or one that logged or holds events
        (not a ``flask`` command that only read the registry)."""
        if self.role == "worker" or self.logged:
            return True
        return waiting is not None and bool(waiting.queued or waiting.memory or waiting.spool or waiting.local_log)

    def _beat(self, now: float, totals: tuple[int, int, int], waiting: Any) -> Beat:
        host, _, pid = self.process.rpartition(":")
        beat: dict[str, Any] = {"role": self.role, "host": host, "pid": int(pid), "app": self.app_name}
        beat.update(started=self.started, seen=now, logged=totals[0], handled=totals[1], failed=totals[2])
        if waiting is not None:
            ages = [t for t in map(logged_at_of, waiting.oldest) if t is not None]
            beat.update(queued=waiting.queued, memory=waiting.memory, spool=waiting.spool, local_log=waiting.local_log)
            beat["behind"] = waiting.behind
            beat["oldest"] = min(ages) if ages else None
        return f"{self.process}:{self.app_name}", json.dumps(beat, separators=(",", ":"))


def _field(key: tuple[int, str, str, Any]) -> str:
    """The name of a count's field in a sink: ``l|<event>``, ``h|<event>|<handler>``, ``t|<handler>|<bin>``..."""
    _, kind, first, second = key
    return f"{kind}|{first}" if kind == LOGGED else f"{kind}|{first}|{second}"


#: Every Figures of this process, reset in a forked child.
_all: weakref.WeakSet[Figures] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for figures in list(_all):
        figures._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    """A process that exits writes its last counts (a worker's children do it on their stop hook)."""
    for figures in list(_all):
        if figures.pid == os.getpid() and (figures._counts or figures._traces):
            figures.flush()


# -- reading them back ----------------------------------------------------------------------------


def _rate(counts: Mapping[int, int], first: int, last: int, now: float) -> float:
    """Per second, over the buckets ``first`` to ``last`` (the last one is under way at ``now``)."""
    seconds = max(min(now, (last + 1) * BUCKET) - first * BUCKET, 1.0)
    return sum(counts.get(b, 0) for b in range(first, last + 1)) / seconds


@dataclass
class _Tally:
    """Counts of one kind of row (an event, a handler) over the hour, and by bucket."""

    total: dict[str, int] = field(default_factory=dict)
    by_bucket: dict[str, dict[int, int]] = field(default_factory=dict)

    def add(self, kind: str, bucket: int, n: int) -> None:
        self.total[kind] = self.total.get(kind, 0) + n
        buckets = self.by_bucket.setdefault(kind, {})
        buckets[bucket] = buckets.get(bucket, 0) + n


def overview(sink: Sink, now: float | None = None, *, recent: float = 300.0) -> dict[str, Any]:
    """Everything the console's overview shows, JSON-ready.

    - ``series``: events logged, handler runs handled (succeeded) and failed, per second, for each
      bucket of the retention, oldest first (``start`` is the first bucket's Unix time);
    - ``rates``: the same over the last minute; ``hour``: totals over the retention;
    - ``events`` and ``handlers``: each one's counts over the hour and rates over ``recent``
      seconds; handlers with their duration p50 and p95 (seconds) over the hour;
    - ``processes``: the web processes and the workers seen within the retention, newest first.
    """
    now = time.time() if now is None else now
    last = int(now // BUCKET)
    first = last - int(sink.retention // BUCKET) + 1
    counts = sink.counts(first, last)
    totals: dict[str, dict[int, int]] = {kind: {} for kind in (LOGGED, HANDLED, FAILED, RETRIED, DEAD)}
    events: dict[str, _Tally] = {}
    handlers: dict[str, _Tally] = {}
    handler_events: dict[str, set[str]] = {}
    durations: dict[str, dict[int, int]] = {}
    for bucket, fields in counts.items():
        for name, n in fields.items():
            kind, _, rest = name.partition("|")
            if kind == DURATION:
                label, _, index = rest.rpartition("|")
                histogram = durations.setdefault(label, {})
                histogram[int(index)] = histogram.get(int(index), 0) + n
                continue
            if kind not in totals:
                continue
            totals[kind][bucket] = totals[kind].get(bucket, 0) + n
            event, _, label = rest.partition("|")
            events.setdefault(event, _Tally()).add(kind, bucket, n)
            if label:
                handlers.setdefault(label, _Tally()).add(kind, bucket, n)
                handler_events.setdefault(label, set()).add(event)
    since = max(first, int((now - recent) // BUCKET))
    names = {LOGGED: "logged", HANDLED: "handled", FAILED: "failed", RETRIED: "retried", DEAD: "dead"}

    def rows(tallies: dict[str, _Tally]) -> dict[str, dict[str, Any]]:
        found = {}
        for key, tally in sorted(tallies.items()):
            row: dict[str, Any] = {names[k]: tally.total.get(k, 0) for k in names}
            row["rates"] = {names[k]: _rate(tally.by_bucket.get(k, {}), since, last, now) for k in names}
            found[key] = row
        return found

    handler_rows = rows(handlers)
    for label, row in handler_rows.items():
        row["events"] = sorted(handler_events.get(label, ()))
        row["p50"] = quantile(durations.get(label, {}), 0.50)
        row["p95"] = quantile(durations.get(label, {}), 0.95)
    processes = sorted(sink.processes(now), key=lambda beat: (-beat.get("seen", 0), beat.get("host", ""), beat["pid"]))
    for beat in processes:
        beat["age"] = max(0.0, now - beat.get("seen", now))
        oldest = beat.get("oldest")
        beat["oldest_age"] = None if oldest is None else max(0.0, now - oldest)
    return {
        "now": now,
        "bucket": BUCKET,
        "start": first * BUCKET,
        "series": {
            names[k]: [totals[k].get(b, 0) / BUCKET for b in range(first, last + 1)] for k in (LOGGED, HANDLED, FAILED)
        },
        "rates": {
            names[k]: _rate(totals[k], max(first, int((now - 60) // BUCKET)), last, now)
            for k in (LOGGED, HANDLED, FAILED)
        },
        "hour": {names[k]: sum(totals[k].values()) for k in names},
        "events": rows(events),
        "handlers": handler_rows,
        "processes": {
            "web": [beat for beat in processes if beat.get("role") != "worker"],
            "workers": [beat for beat in processes if beat.get("role") == "worker"],
        },
        "seen_recently": SEEN_RECENTLY,
    }


@dataclass
class Attempt:
    """One run of one handler for one event, as a worker traced it."""

    handler: str
    attempt: int
    ok: bool
    at: float  #: Unix time it started
    duration: float  #: seconds
    error: str | None
    process: str


@dataclass
class HandlerStory:
    """What became of one handler of an event."""

    label: str
    #: ``"succeeded"``, ``"dead-lettered"``, ``"retrying"``, ``"failed"`` or ``"not seen"``.
    outcome: str
    attempts: list[Attempt]

    @property
    def handled_at(self) -> float | None:
        """When its successful attempt ended."""
        done = [a.at + a.duration for a in self.attempts if a.ok]
        return max(done) if done else None


@dataclass
class Story:
    """What the console knows about one event: when it was logged, published, handled."""

    event_id: str
    name: str | None
    logged_at: float | None
    published_at: float | None
    published_by: str | None
    handlers: list[HandlerStory]
    #: Whether any trace of it was found (an event may be counted yet not traced: the caps).
    traced: bool

    @property
    def handled_at(self) -> float | None:
        """When its last traced handler ended, once every handler succeeded."""
        if not self.handlers or any(h.outcome != "succeeded" for h in self.handlers):
            return None
        ends = [end for end in (h.handled_at for h in self.handlers) if end is not None]
        return max(ends) if ends else None


def story(
    sink: Sink,
    event_id: str,
    *,
    labels: Callable[[str], list[str]] | None = None,
    done: Iterable[str] = (),
    dead: Iterable[str] = (),
    name: str | None = None,
    logged_at: float | None = None,
    now: float | None = None,
) -> Story:
    """The story of ``event_id`` from its traces, completed by what the store knows.

    :param labels: the handlers of an event name, in run order (the registry's).
    :param done: handlers the store's dedup marks say succeeded.
    :param dead: handlers with a dead letter for this event.
    :param name: the event's name when known otherwise (a dead letter).
    :param logged_at: when it was logged, when known otherwise.
    """
    now = time.time() if now is None else now
    last = int(now // TRACE_BUCKET)
    lines = sink.trace(event_id, last - int(sink.retention // TRACE_BUCKET), last)
    lines.sort(key=lambda line: line.get("at") or 0)
    name = name or next((line["n"] for line in lines if line.get("n")), None)
    logged_at = logged_at or next((line["l"] for line in lines if line.get("l")), None)
    published = next((line for line in lines if line.get("k") == "pub"), None)
    attempts: dict[str, list[Attempt]] = {}
    retrying: set[str] = set()
    for line in lines:
        label = line.get("h")
        if line.get("k") == "run" and label:
            attempts.setdefault(label, []).append(
                Attempt(
                    label,
                    line.get("a", 1),
                    bool(line.get("ok")),
                    line["at"],
                    line.get("d", 0.0),
                    line.get("e"),
                    line.get("p", ""),
                )
            )
        elif line.get("k") == "retry" and label:
            retrying.add(label)
    dead, done = set(dead), set(done)
    order = list(labels(name)) if labels and name else []
    order += [label for label in [*attempts, *sorted(done | dead)] if label not in order]
    handlers = []
    for label in order:
        runs = attempts.get(label, [])
        if label in dead:
            outcome = "dead-lettered"
        elif label in done or any(run.ok for run in runs):
            outcome = "succeeded"
        elif runs and label in retrying:
            outcome = "retrying"
        elif runs:
            outcome = "failed"
        else:
            outcome = "not seen"
        handlers.append(HandlerStory(label, outcome, runs))
    return Story(
        event_id,
        name,
        logged_at,
        published["at"] if published else None,
        published.get("p") if published else None,
        handlers,
        bool(lines),
    )
