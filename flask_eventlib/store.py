"""What workers remember: handlers done for an event id (dedup), starts that never finished, dead letters.

Three backends behind one small interface: Redis (shared by every worker, the default with a
Redis broker), SQLite (one machine, the default otherwise) and memory (one process, for tests).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from .exceptions import ConfigurationError
from .sqlite import SQLiteFile


@dataclass
class DeadLetter:
    """One handler's failed event, after its last attempt."""

    event_id: str
    event_name: str
    handler: str
    message: str  #: the encoded event, as it travelled
    error: str
    traceback: str
    attempts: int
    first_failed_at: float  #: Unix time of the first failed attempt
    last_failed_at: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        return cls(**json.loads(text))


#: What a start count is kept for: ``(event_id, handler)`` counts one handler's starts for one
#: event; ``(message_key, DELIVERY)`` counts the deliveries that began a whole message.
RunKey = tuple[str, str]
#: The handler name of a :data:`RunKey` that counts deliveries of a whole message.
DELIVERY = ""


@dataclass
class Begun:
    """What :meth:`Store.begin` found left by earlier deliveries."""

    #: For each event id asked about, the handlers that already succeeded.
    done: dict[str, set[str]]
    #: For each key, the earlier starts that never finished: a worker died while running them
    #: (or, rarely, is still running them).
    unfinished: dict[RunKey, int]


class Store(ABC):
    """Dedup marks, start counts and dead letters.

    A worker calls :meth:`begin` before it runs handlers and :meth:`finish` after: a start that
    was counted and never finished is one its worker did not survive. Both are one round trip.
    """

    @abstractmethod
    def begin(
        self, keys: Iterable[RunKey], ttl: float, *, done: Iterable[str] = (), forget: Iterable[RunKey] = ()
    ) -> Begun:
        """Count one start of each key, remembered ``ttl`` seconds; read what earlier ones left.

        :param done: event ids whose dedup marks to read too: the handlers that already succeeded.
        :param forget: keys whose starts finished, forgotten first, as :meth:`finish` does: a
            finish that can wait rides on the next begin instead of costing a round trip.
        """

    @abstractmethod
    def finish(self, keys: Iterable[RunKey], marks: Mapping[str, Iterable[str]], ttl: float) -> None:
        """Forget the start counts of ``keys``; remember ``marks`` as succeeded for ``ttl`` seconds.

        :param marks: ``{event_id: [handler, ...]}``; with a ``ttl`` of 0 nothing is marked.
        """

    @abstractmethod
    def completed(self, event_ids: Iterable[str]) -> dict[str, set[str]]:
        """For each event id, the handlers that already succeeded for it."""

    @abstractmethod
    def mark_completed(self, marks: dict[str, list[str]], ttl: float) -> None:
        """Remember ``{event_id: [handler, ...]}`` as succeeded for ``ttl`` seconds."""

    @abstractmethod
    def add_dead_letter(self, letter: DeadLetter) -> None: ...

    @abstractmethod
    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""

    @abstractmethod
    def remove_dead_letters(self, ids: Iterable[str]) -> int:
        """Remove dead letters by id; return how many were removed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryStore(Store):
    """In one process only: for tests and eager mode."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[float, set[str]]] = {}
        self._starts: dict[RunKey, tuple[float, int]] = {}
        self._dead: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()

    def begin(
        self, keys: Iterable[RunKey], ttl: float, *, done: Iterable[str] = (), forget: Iterable[RunKey] = ()
    ) -> Begun:
        keys = list(dict.fromkeys(keys))
        now = time.time()
        unfinished: dict[RunKey, int] = {}
        with self._lock:
            for run in forget:
                self._starts.pop(run, None)
            for run in keys:
                expires, count = self._starts.get(run, (0.0, 0))
                unfinished[run] = count if expires > now else 0
                self._starts[run] = (now + ttl, unfinished[run] + 1)
        return Begun(self.completed(dict.fromkeys(done)), unfinished)

    def finish(self, keys: Iterable[RunKey], marks: Mapping[str, Iterable[str]], ttl: float) -> None:
        with self._lock:
            for run in keys:
                self._starts.pop(run, None)
        if ttl:
            self.mark_completed({eid: list(handlers) for eid, handlers in marks.items()}, ttl)

    def completed(self, event_ids: Iterable[str]) -> dict[str, set[str]]:
        now = time.time()
        with self._lock:
            return {
                eid: set(entry[1]) if (entry := self._done.get(eid)) and entry[0] > now else set() for eid in event_ids
            }

    def mark_completed(self, marks: dict[str, list[str]], ttl: float) -> None:
        expires = time.time() + ttl
        with self._lock:
            for eid, handlers in marks.items():
                _, done = self._done.get(eid, (0.0, set()))
                self._done[eid] = (expires, done | set(handlers))

    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._lock:
            self._dead[letter.id] = letter

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return sorted(self._dead.values(), key=lambda d: (d.last_failed_at, d.id))

    def remove_dead_letters(self, ids: Iterable[str]) -> int:
        with self._lock:
            return sum(self._dead.pop(i, None) is not None for i in ids)


class RedisStore(Store):
    """Shared by every worker: ``{prefix}done:{event_id}`` sets, ``{prefix}starts:{event_id}``
    hashes (handler -> starts that did not finish) and a ``{prefix}dead`` hash."""

    def __init__(self, url: str, prefix: str = "eventlib:") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def begin(
        self, keys: Iterable[RunKey], ttl: float, *, done: Iterable[str] = (), forget: Iterable[RunKey] = ()
    ) -> Begun:
        keys = list(dict.fromkeys(keys))
        ids = list(dict.fromkeys(eid for eid, _ in keys))
        read = list(dict.fromkeys(done))
        pipe = self.client.pipeline(transaction=False)
        forgotten = 0
        for eid, handler in forget:
            pipe.hdel(f"{self.prefix}starts:{eid}", handler)
            forgotten += 1
        for eid, handler in keys:
            pipe.hincrby(f"{self.prefix}starts:{eid}", handler, 1)
        for eid in ids:
            pipe.expire(f"{self.prefix}starts:{eid}", max(1, int(ttl)))
        for eid in read:
            pipe.smembers(f"{self.prefix}done:{eid}")
        replies = pipe.execute()[forgotten:]
        counts, members = replies[: len(keys)], replies[len(keys) + len(ids) :]
        found = {eid: {h.decode() for h in handlers} for eid, handlers in zip(read, members, strict=True)}
        return Begun(found, {run: int(count) - 1 for run, count in zip(keys, counts, strict=True)})

    def finish(self, keys: Iterable[RunKey], marks: Mapping[str, Iterable[str]], ttl: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        for eid, handler in keys:
            # The last field gone, Redis deletes the hash: a finished event leaves no key.
            pipe.hdel(f"{self.prefix}starts:{eid}", handler)
        if ttl:
            self._queue_marks(pipe, marks, ttl)
        pipe.execute()

    def completed(self, event_ids: Iterable[str]) -> dict[str, set[str]]:
        ids = list(event_ids)
        pipe = self.client.pipeline(transaction=False)
        for eid in ids:
            pipe.smembers(f"{self.prefix}done:{eid}")
        return {eid: {h.decode() for h in members} for eid, members in zip(ids, pipe.execute(), strict=True)}

    def mark_completed(self, marks: dict[str, list[str]], ttl: float) -> None:
        if not marks:
            return
        pipe = self.client.pipeline(transaction=False)
        self._queue_marks(pipe, marks, ttl)
        pipe.execute()

    def _queue_marks(self, pipe: Any, marks: Mapping[str, Iterable[str]], ttl: float) -> None:
        for eid, handlers in marks.items():
            handlers = list(handlers)
            if handlers:
                key = f"{self.prefix}done:{eid}"
                pipe.sadd(key, *handlers)
                pipe.expire(key, max(1, int(ttl)))

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self.client.hset(f"{self.prefix}dead", letter.id, letter.to_json())

    def dead_letters(self) -> list[DeadLetter]:
        letters = [DeadLetter.from_json(v) for v in self.client.hvals(f"{self.prefix}dead")]
        return sorted(letters, key=lambda d: (d.last_failed_at, d.id))

    def remove_dead_letters(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        return int(self.client.hdel(f"{self.prefix}dead", *ids)) if ids else 0

    def close(self) -> None:
        self.client.close()


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS done (
    event_id TEXT NOT NULL, handler TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (event_id, handler));
CREATE TABLE IF NOT EXISTS starts (
    event_id TEXT NOT NULL, handler TEXT NOT NULL, count INTEGER NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (event_id, handler));
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY, last_failed_at REAL NOT NULL, body TEXT NOT NULL);
"""


class SQLiteStore(Store):
    """One machine: a SQLite file shared by the processes on it, created on first use.

    :raises SQLiteFileError: from every method, when the file cannot be opened, read or written.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = SQLiteFile(path, _SQLITE_SCHEMA, name="store")

    def begin(
        self, keys: Iterable[RunKey], ttl: float, *, done: Iterable[str] = (), forget: Iterable[RunKey] = ()
    ) -> Begun:
        keys = list(dict.fromkeys(keys))
        ids = list(dict.fromkeys(eid for eid, _ in keys))
        forget = list(forget)
        if not keys:
            if forget:
                self.finish(forget, {}, 0)
            return Begun(self.completed(dict.fromkeys(done)), {})
        now = time.time()
        marks = ",".join("?" * len(ids))
        with self._file.transaction():
            self._file.executemany("DELETE FROM starts WHERE event_id = ? AND handler = ?", forget)
            # An expired count starts again from 1, as if it had been deleted.
            self._file.executemany(
                "INSERT INTO starts VALUES (?, ?, 1, ?) ON CONFLICT (event_id, handler) DO UPDATE SET "
                "count = CASE WHEN expires_at > ? THEN count + 1 ELSE 1 END, expires_at = excluded.expires_at",
                [(eid, handler, now + ttl, now) for eid, handler in keys],
            )
            rows = self._file.execute(f"SELECT event_id, handler, count FROM starts WHERE event_id IN ({marks})", ids)
            found = self.completed(dict.fromkeys(done))
        counts = {(eid, handler): count for eid, handler, count in rows}
        return Begun(found, {run: counts[run] - 1 for run in keys})

    def finish(self, keys: Iterable[RunKey], marks: Mapping[str, Iterable[str]], ttl: float) -> None:
        now = time.time()
        rows = [(eid, h, now + ttl) for eid, handlers in marks.items() for h in handlers] if ttl else []
        keys = list(keys)
        if not keys and not rows:
            return
        with self._file.transaction():
            self._file.executemany("DELETE FROM starts WHERE event_id = ? AND handler = ?", keys)
            self._file.execute("DELETE FROM starts WHERE expires_at < ?", (now,))
            if rows:
                self._file.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?)", rows)
                self._file.execute("DELETE FROM done WHERE expires_at < ?", (now,))

    def completed(self, event_ids: Iterable[str]) -> dict[str, set[str]]:
        ids = list(event_ids)
        found: dict[str, set[str]] = {eid: set() for eid in ids}
        if ids:
            marks = ",".join("?" * len(ids))
            rows = self._file.execute(
                f"SELECT event_id, handler FROM done WHERE expires_at > ? AND event_id IN ({marks})",
                [time.time(), *ids],
            )
            for eid, handler in rows:
                found[eid].add(handler)
        return found

    def mark_completed(self, marks: dict[str, list[str]], ttl: float) -> None:
        now = time.time()
        rows = [(eid, h, now + ttl) for eid, handlers in marks.items() for h in handlers]
        if rows:
            with self._file.transaction():
                self._file.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?)", rows)
                self._file.execute("DELETE FROM done WHERE expires_at < ?", (now,))

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self._file.execute(
            "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?)",
            (letter.id, letter.last_failed_at, letter.to_json()),
        )

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._file.execute("SELECT body FROM dead_letters ORDER BY last_failed_at, id")
        return [DeadLetter.from_json(body) for (body,) in rows]

    def remove_dead_letters(self, ids: Iterable[str]) -> int:
        rows = [(i,) for i in ids]
        if not rows:
            return 0
        with self._file.transaction():
            return self._file.executemany("DELETE FROM dead_letters WHERE id = ?", rows)

    def close(self) -> None:
        self._file.close()


def store_from_url(url: str) -> Store:
    """``redis://...`` (``?prefix=`` optional), ``sqlite:///path/to/file`` or ``memory://``."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", ["eventlib:"])[0]
        return RedisStore(urlunsplit(parts._replace(query=urlencode(query, doseq=True))), prefix)
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///") or ":memory:")
    if url == "memory://":
        return MemoryStore()
    raise ConfigurationError(
        f"EVENTLIB_STORE_URL = {url!r} is not a store URL: use redis://host:port/db, "
        "sqlite:////absolute/path.sqlite3 or memory://"
    )
