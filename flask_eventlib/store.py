"""What workers remember: handlers already done for an event id (dedup) and the dead letters.

Three backends behind one small interface: Redis (shared by every worker, the default with a
Redis broker), SQLite (one machine, the default otherwise) and memory (one process, for tests).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
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


class Store(ABC):
    """Dedup marks and dead letters."""

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
        self._dead: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()

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
    """Shared by every worker: ``{prefix}done:{event_id}`` sets and a ``{prefix}dead`` hash."""

    def __init__(self, url: str, prefix: str = "eventlib:") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

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
        for eid, handlers in marks.items():
            if handlers:
                key = f"{self.prefix}done:{eid}"
                pipe.sadd(key, *handlers)
                pipe.expire(key, max(1, int(ttl)))
        pipe.execute()

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
