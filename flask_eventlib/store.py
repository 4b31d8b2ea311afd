"""What workers remember: handlers done for an event id (dedup), claims on handlers being run,
starts that never finished, dead letters.

Three backends behind one small interface: Redis (shared by every worker, the default with a
Redis broker), SQLite (one machine, the default otherwise) and memory (one process, for tests).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from . import resp
from .exceptions import ConfigurationError
from .forks import this_process
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

    #: For each event id asked about, its marks: the handlers that already succeeded, and those
    #: whose failure is settled (:data:`SETTLED`).
    done: dict[str, set[str]]
    #: For each key, the earlier starts that never finished: a worker died while running them
    #: (or, rarely, is still running them).
    unfinished: dict[RunKey, int]
    #: The claims asked for that another owner holds: ``(event_id, handler)`` -> seconds left on
    #: its lease. The other claims asked for, not done, are now the caller's.
    held: dict[RunKey, float] = field(default_factory=dict)


#: Before a handler's name in an event's marks: the handler failed, and its retries or its dead
#: letter own it now. A duplicate delivery of the event leaves it alone, as it leaves a handler
#: that succeeded; its retries and a replay of its dead letter run it (only a success marks the
#: handler's own name).
SETTLED = "~"


def succeeded(marks: Iterable[str]) -> set[str]:
    """The handlers that succeeded, of an event's marks."""
    return {mark for mark in marks if not mark.startswith(SETTLED)}


class Store(ABC):
    """Dedup marks, claims, start counts and dead letters.

    A worker calls :meth:`begin` before it runs handlers and :meth:`finish` after: a start that
    was counted and never finished is one its worker did not survive. Both are one round trip,
    and atomic: a claim is taken only if no other owner holds it and the handler is not done, and
    a claim is given up in the same step that marks its handler done, so no other delivery sees
    the handler neither claimed nor done.
    """

    @abstractmethod
    def begin(
        self,
        keys: Iterable[RunKey],
        ttl: float,
        *,
        done: Iterable[str] = (),
        forget: Iterable[RunKey] = (),
        claims: Iterable[RunKey] = (),
        owner: str = "",
        lease: float = 0.0,
    ) -> Begun:
        """Count one start of each key, remembered ``ttl`` seconds; read what earlier ones left.

        :param done: event ids whose dedup marks to read too: the handlers that already succeeded,
            and those whose failure is settled (:data:`SETTLED`).
        :param forget: keys whose starts finished, forgotten first, as :meth:`finish` does: a
            finish that can wait rides on the next begin instead of costing a round trip.
        :param claims: ``(event_id, handler)`` pairs to claim for ``owner`` for ``lease`` seconds.
            A pair already done is not claimed (its event's marks are read, as for ``done``); a
            pair another owner holds is left to it and reported in :attr:`Begun.held`. A key of
            ``keys`` that is also a claim is counted only when the claim is taken: a start that
            does not run is no start.
        """

    @abstractmethod
    def finish(
        self,
        keys: Iterable[RunKey],
        marks: Mapping[str, Iterable[str]],
        ttl: float,
        *,
        release: Iterable[RunKey] = (),
        owner: str = "",
        wait: bool = True,
    ) -> None:
        """Forget the start counts of ``keys``; remember ``marks`` for ``ttl`` seconds.

        :param marks: ``{event_id: [handler, ...]}``: handlers that succeeded, or whose failure is
            settled (:data:`SETTLED` before the name); with a ``ttl`` of 0 nothing is marked.
        :param release: claims of ``owner`` to give up, once ``marks`` are written; a claim that
            is no longer ``owner``'s (its lease ended and another took it) is left alone.
        :param wait: ``False`` lets a store send the write and read its answer with this thread's
            next call that waits (its errors are raised there): the store has the write as soon
            as it is sent, without a round trip of its own.
        """

    @abstractmethod
    def renew(self, claims: Mapping[str, Iterable[RunKey]], lease: float) -> None:
        """Give ``{owner: [(event_id, handler), ...]}`` claims ``lease`` more seconds, those still theirs."""

    @abstractmethod
    def completed(self, event_ids: Iterable[str]) -> dict[str, set[str]]:
        """For each event id, its marks: the handlers that already succeeded for it, and those
        whose failure is settled (:data:`SETTLED` before the name; :func:`succeeded` leaves them out)."""

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
        self._claims: dict[RunKey, tuple[str, float]] = {}
        self._dead: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()

    def begin(
        self,
        keys: Iterable[RunKey],
        ttl: float,
        *,
        done: Iterable[str] = (),
        forget: Iterable[RunKey] = (),
        claims: Iterable[RunKey] = (),
        owner: str = "",
        lease: float = 0.0,
    ) -> Begun:
        keys = list(dict.fromkeys(keys))
        claims = list(dict.fromkeys(claims))
        read = list(dict.fromkeys([*done, *(eid for eid, _ in claims)]))
        now = time.time()
        unfinished: dict[RunKey, int] = {}
        held: dict[RunKey, float] = {}
        with self._lock:
            found = self._completed(read, now)
            for run in forget:
                self._starts.pop(run, None)
            for run in claims:
                holder, expires = self._claims.get(run, ("", 0.0))
                if run[1] in found[run[0]]:
                    continue
                if expires > now and holder != owner:
                    held[run] = expires - now
                else:
                    self._claims[run] = (owner, now + lease)
            asked = set(claims)
            for run in keys:
                expires, count = self._starts.get(run, (0.0, 0))
                unfinished[run] = count if expires > now else 0
                if run in asked and (run in held or run[1] in found[run[0]]):
                    continue  # not claimed, so not started
                self._starts[run] = (now + ttl, unfinished[run] + 1)
        return Begun(found, unfinished, held)

    def finish(
        self,
        keys: Iterable[RunKey],
        marks: Mapping[str, Iterable[str]],
        ttl: float,
        *,
        release: Iterable[RunKey] = (),
        owner: str = "",
        wait: bool = True,
    ) -> None:
        expires = time.time() + ttl
        with self._lock:
            if ttl:
                for eid, handlers in marks.items():
                    handlers = set(handlers)
                    if handlers:
                        self._done[eid] = (expires, self._done.get(eid, (0.0, set()))[1] | handlers)
            for run in release:
                if self._claims.get(run, ("", 0.0))[0] == owner:
                    del self._claims[run]
            for run in keys:
                self._starts.pop(run, None)

    def renew(self, claims: Mapping[str, Iterable[RunKey]], lease: float) -> None:
        now = time.time()
        with self._lock:
            for owner, runs in claims.items():
                for run in runs:
                    holder, expires = self._claims.get(run, ("", 0.0))
                    if holder == owner and expires > now:
                        self._claims[run] = (owner, now + lease)

    def _completed(self, event_ids: Iterable[str], now: float) -> dict[str, set[str]]:
        return {eid: set(entry[1]) if (entry := self._done.get(eid)) and entry[0] > now else set() for eid in event_ids}

    def completed(self, event_ids: Iterable[str]) -> dict[str, set[str]]:
        with self._lock:
            return self._completed(event_ids, time.time())

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


#: :meth:`RedisStore.begin` in one script, so that a claim is taken in the same atomic step that
#: reads its handler's dedup mark. ARGV: ttl, owner, lease (ms), the counts nf nk ne nd nc, then
#: the forgotten fields, the counted fields, each counted field's claim (1-based, 0: none), the
#: claimed fields, each claim's dedup marks among those read (1-based). KEYS: the forgotten starts,
#: the counted starts, the starts to expire, the dedup marks to read, the claims. A claim answers
#: -1 (taken), -2 (done) or the milliseconds left on another owner's lease. The marks are read
#: once, first: a claim's check is a lookup in them, not a command of its own.
_BEGIN = """
local ttl, owner, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local nf, nk, ne, nd, nc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local kk, ke = nf, nf + nk
local kd = ke + ne
local kc = kd + nd
local af = 8 + nf
local ai = af + nk
local ac = ai + nk
local ad = ac + nc
for i = 1, nf do redis.call('HDEL', KEYS[i], ARGV[8 + i]) end
local done, marked = {}, {}
for i = 1, nd do
  local members = redis.call('SMEMBERS', KEYS[kd + i])
  local set = {}
  for _, member in ipairs(members) do set[member] = true end
  done[i], marked[i] = members, set
end
local claims = {}
for i = 1, nc do
  local key = KEYS[kc + i]
  if marked[tonumber(ARGV[ad + i])][ARGV[ac + i]] then
    claims[i] = -2
  else
    local taken = redis.call('SET', key, owner, 'NX', 'PX', lease)
    if not taken and redis.call('GET', key) == owner then
      redis.call('PEXPIRE', key, lease)
      taken = true
    end
    if taken then
      claims[i] = -1
    else
      local left = redis.call('PTTL', key)
      if left < 0 then left = lease end
      claims[i] = left
    end
  end
end
local counts = {}
for i = 1, nk do
  local claim = tonumber(ARGV[ai + i])
  if claim > 0 and claims[claim] ~= -1 then
    counts[i] = tonumber(redis.call('HGET', KEYS[kk + i], ARGV[af + i]) or '0') + 1
  else
    counts[i] = redis.call('HINCRBY', KEYS[kk + i], ARGV[af + i], 1)
  end
end
for i = 1, ne do redis.call('EXPIRE', KEYS[ke + i], ttl) end
return {counts, done, claims}
"""
#: :meth:`RedisStore.finish`: the marks, then the claims given up (those still the owner's), then
#: the starts forgotten. ARGV: ttl, owner, nm, nr, nk, then for each mark its handler count and
#: handlers, then the forgotten fields. KEYS: the dedup marks, the claims, the starts.
_FINISH = """
local ttl, owner = tonumber(ARGV[1]), ARGV[2]
local nm, nr, nk = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local a = 5
for i = 1, nm do
  local n = tonumber(ARGV[a + 1])
  redis.call('SADD', KEYS[i], unpack(ARGV, a + 2, a + 1 + n))
  redis.call('EXPIRE', KEYS[i], ttl)
  a = a + 1 + n
end
for i = 1, nr do
  if redis.call('GET', KEYS[nm + i]) == owner then redis.call('DEL', KEYS[nm + i]) end
end
for i = 1, nk do redis.call('HDEL', KEYS[nm + nr + i], ARGV[a + i]) end
return 0
"""
#: :meth:`RedisStore.renew`. ARGV: the lease (ms), then each claim's owner. KEYS: the claims.
_RENEW = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return 0
"""

#: Redis names a loaded script by the SHA-1 of its text.
_SHAS = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_BEGIN, _FINISH, _RENEW)}


class RedisStore(Store):
    """Shared by every worker: ``{prefix}done:{event_id}`` sets, ``{prefix}starts:{event_id}``
    hashes (handler -> starts that did not finish), ``{prefix}claim:{event_id}:{handler}``
    strings (the owner, expiring with its lease) and a ``{prefix}dead`` hash.

    Each of :meth:`begin`, :meth:`finish` and :meth:`renew` is one Lua script: one command, one
    round trip, atomic.
    """

    def __init__(self, url: str, prefix: str = "eventlib:") -> None:
        import redis

        self.client = resp.fork_safe(redis.Redis.from_url(url))
        self.prefix = prefix
        self._no_script = redis.exceptions.NoScriptError
        self._answer_error = redis.exceptions.ResponseError
        self._connection_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        #: This thread's connection: the scripts go on it, packed here (redis-py's pool checked a
        #: connection, and its client packed each argument, for every call).
        self._kept = resp.KeptConnection(self.client)
        #: Per thread: the calls sent without waiting, whose answers are still to read.
        self._unread = threading.local()

    def begin(
        self,
        keys: Iterable[RunKey],
        ttl: float,
        *,
        done: Iterable[str] = (),
        forget: Iterable[RunKey] = (),
        claims: Iterable[RunKey] = (),
        owner: str = "",
        lease: float = 0.0,
    ) -> Begun:
        keys = list(dict.fromkeys(keys))
        claims = list(dict.fromkeys(claims))
        forget = list(forget)
        ids = list(dict.fromkeys(eid for eid, _ in keys))
        read = list(dict.fromkeys([*done, *(eid for eid, _ in claims)]))
        index = {run: i for i, run in enumerate(claims, 1)}
        place = {eid: i for i, eid in enumerate(read, 1)}
        p = self.prefix
        script_keys = [
            *(f"{p}starts:{eid}" for eid, _ in forget),
            *(f"{p}starts:{eid}" for eid, _ in keys),
            *(f"{p}starts:{eid}" for eid in ids),
            *(f"{p}done:{eid}" for eid in read),
            *(self._claim_key(run) for run in claims),
        ]
        args = [
            max(1, int(ttl)),
            owner,
            max(1, int(lease * 1000)),
            len(forget),
            len(keys),
            len(ids),
            len(read),
            len(claims),
            *(handler for _, handler in forget),
            *(handler for _, handler in keys),
            *(index.get(run, 0) for run in keys),
            *(handler for _, handler in claims),
            *(place[eid] for eid, _ in claims),
        ]
        counts, members, taken = self._run(_BEGIN, script_keys, args)
        found = {eid: {h.decode() for h in handlers} for eid, handlers in zip(read, members, strict=True)}
        held = {run: left / 1000 for run, left in zip(claims, taken, strict=True) if left >= 0}
        return Begun(found, {run: int(count) - 1 for run, count in zip(keys, counts, strict=True)}, held)

    def finish(
        self,
        keys: Iterable[RunKey],
        marks: Mapping[str, Iterable[str]],
        ttl: float,
        *,
        release: Iterable[RunKey] = (),
        owner: str = "",
        wait: bool = True,
    ) -> None:
        keys, release = list(keys), list(release)
        marked = [(eid, list(handlers)) for eid, handlers in marks.items()] if ttl else []
        marked = [(eid, handlers) for eid, handlers in marked if handlers]
        if not (keys or release or marked):
            if wait:
                self._settle()
            return
        script_keys = [
            *(f"{self.prefix}done:{eid}" for eid, _ in marked),
            *(self._claim_key(run) for run in release),
            # The last field gone, Redis deletes the hash: a finished event leaves no key.
            *(f"{self.prefix}starts:{eid}" for eid, _ in keys),
        ]
        args: list[Any] = [max(1, int(ttl)), owner, len(marked), len(release), len(keys)]
        for _, handlers in marked:
            args += [len(handlers), *handlers]
        args += [handler for _, handler in keys]
        if wait:
            self._run(_FINISH, script_keys, args)
        else:
            self._send(_FINISH, script_keys, args)

    def renew(self, claims: Mapping[str, Iterable[RunKey]], lease: float) -> None:
        pairs = [(owner, run) for owner, runs in claims.items() for run in runs]
        if pairs:
            script_keys = [self._claim_key(run) for _, run in pairs]
            self._run(_RENEW, script_keys, [max(1, int(lease * 1000)), *(owner for owner, _ in pairs)])

    def _claim_key(self, run: RunKey) -> str:
        return f"{self.prefix}claim:{run[0]}:{run[1]}"

    def _send(self, script: str, keys: list[str], args: list[Any]) -> None:
        """Send a script's call without reading its answer: :meth:`_settle` reads it."""
        unread = self._unread
        if getattr(unread, "pid", None) != this_process[0]:
            unread.pid, unread.calls = this_process[0], []  # a forked child: the parent's answers are not its own
        try:
            conn = self._kept.get(check=not unread.calls)  # not with answers still to read on it
            unread.calls.append((script, keys, args))
            # Packed here: redis-py's packing was most of the CPU time of a mark's write.
            conn.send_packed_command([resp.pack("EVALSHA", _SHAS[script], len(keys), *keys, *args)], check_health=False)
        except BaseException:
            self._settle()
            raise

    def _settle(self) -> None:
        """Read the answers to this thread's calls sent without waiting; run again those the
        server could not (a script it did not have: they are idempotent), raise other errors."""
        unread = self._unread
        calls = getattr(unread, "calls", None)
        if not calls:
            return
        unread.calls = []
        if unread.pid != this_process[0]:
            return  # a forked child: the calls were its parent's
        again: list[tuple[str, list[str], list[Any]]] = []
        failure: Exception | None = None
        try:
            conn = self._kept.get(check=False)  # the answers are on it
            for call in calls:
                try:
                    conn.read_response()
                except self._no_script:
                    again.append(call)
                except self._answer_error as exc:  # an error answer; the others are still to read
                    failure = failure or exc
        except BaseException:
            self._kept.drop()  # answers may be left unread on it
            raise
        for script, keys, args in again:
            self._run(script, keys, args)
        if failure is not None:
            raise failure

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script by its digest, loading it first where the server does not have it yet."""
        self._settle()
        command = resp.pack("EVALSHA", _SHAS[script], len(keys), *keys, *args)
        try:
            return self._call(command)
        except self._no_script:
            self._call(resp.pack("SCRIPT", "LOAD", script))
            return self._call(command)

    def _call(self, command: bytes) -> Any:
        """One packed command on the kept connection, and its answer; once more on a new
        connection when that one failed (a server restart), as redis-py's client retries."""
        try:
            return self._call_once(command)
        except self._connection_errors:
            return self._call_once(command)

    def _call_once(self, command: bytes) -> Any:
        conn = self._kept.get()
        try:
            conn.send_packed_command([command], check_health=False)
            return conn.read_response()
        except self._connection_errors:
            self._kept.drop()  # the next call gets a new one
            raise

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
        self._kept.drop()
        self.client.close()


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS done (
    event_id TEXT NOT NULL, handler TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (event_id, handler));
CREATE TABLE IF NOT EXISTS starts (
    event_id TEXT NOT NULL, handler TEXT NOT NULL, count INTEGER NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (event_id, handler));
CREATE TABLE IF NOT EXISTS claims (
    event_id TEXT NOT NULL, handler TEXT NOT NULL, owner TEXT NOT NULL, expires_at REAL NOT NULL,
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
        self,
        keys: Iterable[RunKey],
        ttl: float,
        *,
        done: Iterable[str] = (),
        forget: Iterable[RunKey] = (),
        claims: Iterable[RunKey] = (),
        owner: str = "",
        lease: float = 0.0,
    ) -> Begun:
        keys = list(dict.fromkeys(keys))
        claims = list(dict.fromkeys(claims))
        ids = list(dict.fromkeys(eid for eid, _ in keys))
        read = list(dict.fromkeys([*done, *(eid for eid, _ in claims)]))
        forget = list(forget)
        if not keys and not claims:
            if forget:
                self.finish(forget, {}, 0)
            return Begun(self.completed(read), {})
        now = time.time()
        held: dict[RunKey, float] = {}
        # BEGIN IMMEDIATE: the reads and writes below are one step for every process on the file.
        with self._file.transaction():
            self._file.executemany("DELETE FROM starts WHERE event_id = ? AND handler = ?", forget)
            found = self.completed(read)
            wanted = [run for run in claims if run[1] not in found[run[0]]]
            # Taken when free, expired or already this owner's; then read back who holds each.
            self._file.executemany(
                "INSERT INTO claims VALUES (?, ?, ?, ?) ON CONFLICT (event_id, handler) DO UPDATE SET "
                "owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE claims.expires_at <= ? OR claims.owner = excluded.owner",
                [(eid, handler, owner, now + lease, now) for eid, handler in wanted],
            )
            for run in wanted:
                ((holder, expires),) = self._file.execute(
                    "SELECT owner, expires_at FROM claims WHERE event_id = ? AND handler = ?", run
                )
                if holder != owner:
                    held[run] = max(0.0, expires - now)
            skipped = {run for run in claims if run in held or run[1] in found[run[0]]}
            # An expired count starts again from 1, as if it had been deleted; a start whose claim
            # was not taken is not counted.
            self._file.executemany(
                "INSERT INTO starts VALUES (?, ?, 1, ?) ON CONFLICT (event_id, handler) DO UPDATE SET "
                "count = CASE WHEN expires_at > ? THEN count + 1 ELSE 1 END, expires_at = excluded.expires_at",
                [(eid, handler, now + ttl, now) for eid, handler in keys if (eid, handler) not in skipped],
            )
            marks = ",".join("?" * len(ids))
            rows = self._file.execute(
                f"SELECT event_id, handler, count, expires_at FROM starts WHERE event_id IN ({marks})", ids
            )
        counts = {(eid, handler): count if expires > now else 0 for eid, handler, count, expires in rows}
        unfinished = {run: counts.get(run, 0) - (run not in skipped) for run in keys}
        return Begun(found, unfinished, held)

    def finish(
        self,
        keys: Iterable[RunKey],
        marks: Mapping[str, Iterable[str]],
        ttl: float,
        *,
        release: Iterable[RunKey] = (),
        owner: str = "",
        wait: bool = True,
    ) -> None:
        now = time.time()
        rows = [(eid, h, now + ttl) for eid, handlers in marks.items() for h in handlers] if ttl else []
        keys = list(keys)
        released = [(eid, handler, owner) for eid, handler in release]
        if not keys and not rows and not released:
            return
        with self._file.transaction():
            if rows:
                self._file.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?)", rows)
                self._file.execute("DELETE FROM done WHERE expires_at < ?", (now,))
            if released:
                self._file.executemany("DELETE FROM claims WHERE event_id = ? AND handler = ? AND owner = ?", released)
                self._file.execute("DELETE FROM claims WHERE expires_at < ?", (now,))
            self._file.executemany("DELETE FROM starts WHERE event_id = ? AND handler = ?", keys)
            self._file.execute("DELETE FROM starts WHERE expires_at < ?", (now,))

    def renew(self, claims: Mapping[str, Iterable[RunKey]], lease: float) -> None:
        now = time.time()
        rows = [(now + lease, eid, handler, owner, now) for owner, runs in claims.items() for eid, handler in runs]
        if rows:
            with self._file.transaction():
                self._file.executemany(
                    "UPDATE claims SET expires_at = ? WHERE event_id = ? AND handler = ? AND owner = ? "
                    "AND expires_at > ?",
                    rows,
                )

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
