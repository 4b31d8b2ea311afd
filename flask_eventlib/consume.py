"""Consumers of the event streams: ``@external_handler`` functions in processes that are not the app.

::

    python -m flask_eventlib.consume analytics --group indexer -m search.handlers
    flask --app shop.app eventlib consume analytics --group indexer -m search.handlers

A :class:`Consumer` reads one stream (see :mod:`flask_eventlib.streams` for what the worker
publishes) as one consumer of a Redis consumer group: every group gets every entry, the consumers
of a group share them. It runs the handlers of each entry through the workers' own
:class:`~flask_eventlib.runner.Runner` (per-handler retries with backoff, dead letters, dedup by
event id and claims, in a store of the group's), then acknowledges the entries (``XACK``). The
entries a dead consumer left pending are taken over after ``claim_idle`` seconds
(``XAUTOCLAIM``); those its handlers already ran for are skipped by dedup. A retry waits in a
sorted set of the group's, not in the consumer, so the stream's entry is acknowledged at once and a
retry survives the consumer that scheduled it. SIGTERM (or SIGINT) stops it after the entries in
hand, acknowledged.

Retention (``EVENTLIB_STREAMS_MAXLEN`` / ``_MAX_AGE``) trims entries whether or not a group read
them: a group that lags further behind misses them. Each entry carries a ``seq`` number, and a
group reads through one script that compares each entry's with the last one the group read, so
what a group missed is counted (``missed`` in its state hash) and logged, never silent.

It needs no Flask app: ``python -m flask_eventlib.consume`` imports the handlers' modules and
nothing else of yours.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from types import FrameType, ModuleType
from typing import Any

from .events import BaseEvent
from .exceptions import ConfigurationError, EventNotFound
from .handlers import external_handler, external_targets_of
from .registry import Registry
from .runner import Runner, log_outcome
from .serialization import Codec, default_codec
from .store import RedisStore, Store, store_from_url

__all__ = ["Consumer", "ExternalEvent", "ExternalRegistry", "external_handler", "main", "start_id"]

logger = logging.getLogger("flask_eventlib.consume")


class ExternalEvent(BaseEvent):
    """An event read from a stream: its ``name``, ``id``, ``data``, ``context`` and ``logged_at``.

    A consumer does not have the app's event classes (it may live in another codebase): the data
    is the data the app logged, already cleaned, with its types (``Decimal``, ``datetime``, ...)
    restored by the codec.
    """


class ExternalRegistry(Registry):
    """The ``@external_handler`` functions of a consumer; any well-formed event name is an event."""

    def find(self, name: str) -> type[BaseEvent]:
        if isinstance(name, str) and name.count(".") == 1 and "" not in name.split("."):
            return ExternalEvent
        return super().find(name)  # raises EventNotFound, saying what a name looks like

    def scan_external(self, module: ModuleType | str) -> int:
        """Register the functions ``module`` defines that are marked ``@external_handler("...")``.

        :returns: how many (function, target) pairs were registered.
        """
        return self.scan_handlers(module, marked=external_targets_of)

    def handles(self, name: str) -> bool:
        """Whether a handler takes the event ``name`` (decided from the entry's ``name`` field)."""
        return bool(self.function_handlers(name))


def start_id(text: str) -> str:
    """Where ``--from`` starts a new group: the id of the entry before the first it reads.

    ``new`` (``$``): the entries added from now on; ``beginning`` (``0``): every entry retained;
    a stream id (``1733131200000-0``, or ``1733131200000`` milliseconds): that entry and those
    after it; an ISO 8601 time (``2026-12-02T10:00:00+00:00``; UTC when it has no offset): the
    entries added from then on.

    :raises ValueError: for anything else.
    """
    text = text.strip()
    if text in ("new", "$", "now"):
        return "$"
    if text in ("beginning", "0", "0-0", "start"):
        return "0"
    ms, dash, seq = text.partition("-")
    if ms.isdigit() and (not dash or seq.isdigit()):
        return _before(int(ms), int(seq or 0))
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--from {text!r}: use 'new', 'beginning', a stream id such as 1733131200000-0, or an ISO 8601 "
            "time such as 2026-12-02T10:00:00+00:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return _before(int(when.timestamp() * 1000), 0)


def _before(ms: int, seq: int) -> str:
    """The id just before ``ms-seq``: a group created there reads ``ms-seq`` first."""
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{2**64 - 1}" if ms > 0 else "0"


#: Creates the group at ARGV[2] (``$``, ``0`` or an id) unless it exists (then returns 0), and
#: notes in its state hash the ``seq`` just before the first entry it will read. KEYS: the stream,
#: the group's state hash, the stream's seq counter. ARGV: the group, where it starts.
_CREATE = """
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(made) == 'table' and made.err then
  if string.find(made.err, 'BUSYGROUP') then return 0 end
  return made
end
local before = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[2] ~= '$' then
  local first = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', 1)
  if #first > 0 then
    before = nil
    local f = first[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'seq' then before = tonumber(f[j + 1]) - 1 end
    end
  end
end
redis.call('DEL', KEYS[2])
if before then redis.call('HSET', KEYS[2], 'seq', before) end
return 1
"""
#: Reads up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1]; counts the ``seq``
#: numbers skipped since the group's last read (entries trimmed before it read them) in its state
#: hash. Returns the entries, how many were skipped, and the id to wait after when there are none.
#: KEYS: the stream, the group's state hash.
_READ = """
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not read then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for j = 1, #group, 2 do
      if group[j] == 'name' then name = group[j + 1] end
      if group[j] == 'last-delivered-id' then last = group[j + 1] end
    end
    if name == ARGV[1] then return {{}, 0, last} end
  end
  return {{}, 0, '0-0'}
end
local entries = read[1][2]
local last = tonumber(redis.call('HGET', KEYS[2], 'seq') or '-1')
local missed = 0
for _, entry in ipairs(entries) do
  local f = entry[2]
  for j = 1, #f, 2 do
    if f[j] == 'seq' then
      local s = tonumber(f[j + 1])
      if last >= 0 and s > last + 1 then missed = missed + s - last - 1 end
      if s > last then last = s end
      break
    end
  end
end
if last >= 0 then redis.call('HSET', KEYS[2], 'seq', last) end
if missed > 0 then redis.call('HINCRBY', KEYS[2], 'missed', missed) end
return {entries, missed, entries[#entries][1]}
"""
#: Takes up to ARGV[2] retries due at ARGV[1] (Unix time), each leased until ARGV[3]: one that
#: its consumer did not finish (it died) is due again then. KEYS: the retries' sorted set.
_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member) end
return due
"""
_SHAS = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_CREATE, _READ, _DUE)}

#: ``(entry id, fields)``, ``fields`` ``None`` for an entry trimmed since it was delivered.
Entry = tuple[str, "dict[bytes, bytes] | None"]


class Consumer:
    """One consumer of a consumer group on one stream, running the handlers of a registry.

    :param stream: the stream's key (a key of ``EVENTLIB_STREAMS``).
    :param group: the consumer group: every group gets every entry; its consumers share them.
    :param registry: the handlers (:meth:`ExternalRegistry.scan_external` fills one).
    :param url: the Redis of the stream (``EVENTLIB_STREAMS_URL``).
    :param name: this consumer's name in the group (default: host name and process id). A stable
        name (a pod's) lets a restarted consumer finish its own pending entries at once.
    :param start: where a group that does not exist yet starts (:func:`start_id`); an existing
        group goes on from where it is.
    :param store_url: where the group's dedup marks, claims and dead letters live (default: the
        stream's Redis, under ``eventlib:consumer:<stream>:<group>:``).
    :param codec: decodes the envelopes (register your types on it, or on the default one).
    :param batch: the most entries read, run and acknowledged together.
    :param block: seconds a read waits for new entries; also how often retries and dead
        consumers' entries are looked for while the stream is quiet.
    :param claim_idle: seconds after which another consumer's pending entry is taken over (and a
        retry's lease ends): longer than a batch takes.
    :param retries, backoff, backoff_max, dedup_ttl, claim_ttl: as the workers'
        ``EVENTLIB_RETRIES``, ``_RETRY_BACKOFF``, ``_RETRY_BACKOFF_MAX``, ``_DEDUP_TTL`` and
        ``_CLAIM_TTL``.
    """

    def __init__(
        self,
        stream: str,
        group: str,
        registry: ExternalRegistry,
        *,
        url: str,
        name: str | None = None,
        start: str = "$",
        store_url: str | None = None,
        codec: Codec | None = None,
        batch: int = 100,
        block: float = 1.0,
        claim_idle: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        dedup_ttl: float = 86_400,
        claim_ttl: float = 60.0,
    ) -> None:
        import redis

        self._redis = redis
        self.stream = stream
        self.group = group
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = registry
        self.url = url
        self.start = start
        self.batch = batch
        self.block = block
        self.claim_idle = claim_idle
        self.prefix = f"eventlib:consumer:{stream}:{group}:"
        self.state_key = f"{self.prefix}group"
        self.retries_key = f"{self.prefix}retries"
        # A blocking read waits `block` seconds for its answer: the socket waits longer.
        self.client: Any = redis.Redis.from_url(url, socket_timeout=block + 30, socket_connect_timeout=10)
        self.store: Store = store_from_url(store_url) if store_url else RedisStore(url, self.prefix)
        self.runner = Runner(
            registry,
            codec if codec is not None else default_codec,
            store=self.store,
            schedule_retry=self._schedule_retry,
            retries=retries,
            backoff=backoff,
            backoff_max=backoff_max,
            dedup_ttl=dedup_ttl,
            claim_ttl=claim_ttl,
        )
        #: Entries given to the handlers (taken over ones included).
        self.handled = 0
        #: Entries acknowledged without decoding: no handler takes their event's name.
        self.skipped = 0
        #: Entries taken over from consumers that left them pending (or from this one's last run).
        self.taken_over = 0
        #: Entries this consumer found trimmed before the group read them, or before they ran.
        self.missed = 0
        #: Retries of handlers run.
        self.retried = 0
        self.created = False
        self._stopping: str | None = None
        self._unacked: list[str] = []

    # -- running ----------------------------------------------------------------------------

    def run(self, *, until_idle: bool = False, handle_signals: bool = False) -> None:
        """Read and handle entries until :meth:`stop` (or SIGTERM / SIGINT with ``handle_signals``).

        :param until_idle: return once a read finds no new entry and no retry is due (a
            catch-up job, a test, an example).
        """
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._on_signal)
        started = False
        next_claim = time.monotonic() + self.claim_idle / 4
        next_retry = 0.0
        pause = 0.5
        while self._stopping is None:
            try:
                if not started:
                    self._start()
                    started = True
                now = time.monotonic()
                if now >= next_claim:
                    self._take_over()
                    next_claim = now + min(self.claim_idle / 4, 30.0)
                retried = 0
                if now >= next_retry:
                    retried = self._run_retries()
                    next_retry = now + min(self.block, 1.0)
                entries, last_id = self._read()
                if entries:
                    self._handle(entries)
                elif until_idle and not retried:
                    break
                else:
                    self._wait(last_id)
                pause = 0.5
            except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
                logger.warning(
                    "Consumer %s cannot reach the stream's Redis (%s: %s); trying again in %.1fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    pause,
                )
                time.sleep(pause)  # a back-off before reconnecting, not a wait for work
                pause = min(pause * 2, 30.0)
        try:
            self._ack()
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            logger.warning(
                "Consumer %s could not acknowledge its last %d entries (%s); another consumer takes them over "
                "after %.0fs, and dedup skips their handlers",
                self.name,
                len(self._unacked),
                exc,
                self.claim_idle,
            )
        logger.info(
            "Consumer %s of group %s stopped%s: %d entries handled, %d taken over, %d skipped (no handler), "
            "%d missed, %d retries run",
            self.name,
            self.group,
            f" on {self._stopping}" if self._stopping not in (None, "stop()") else "",
            self.handled,
            self.taken_over,
            self.skipped,
            self.missed,
            self.retried,
            extra={"stream": self.stream, "group": self.group, "consumer": self.name},
        )

    def _start(self) -> None:
        """Make sure the group exists, say so, and finish what this consumer's name left pending."""
        self.ensure_group()
        logger.info(
            "Consumer %s of group %s reads the stream %s on %s (%s); handlers for %s",
            self.name,
            self.group,
            self.stream,
            _masked(self.url),
            f"group created at {self.start}" if self.created else "the group goes on from where it is",
            ", ".join(sorted(self.registry.targets())) or "nothing",
            extra={"stream": self.stream, "group": self.group, "consumer": self.name},
        )
        self._take_over(own=True)

    def stop(self, reason: str = "stop()") -> None:
        """Stop after the entries in hand, which are acknowledged first."""
        self._stopping = reason

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    def close(self) -> None:
        self.client.close()
        self.store.close()

    # -- the group --------------------------------------------------------------------------

    def ensure_group(self) -> bool:
        """Create the group at :attr:`start` if it does not exist; return whether it was made."""
        from .streams import seq_key

        made = self._script(_CREATE, [self.stream, self.state_key, seq_key(self.stream)], [self.group, self.start])
        self.created = bool(made)
        return self.created

    def state(self) -> dict[str, int]:
        """The group's counts kept in Redis: ``seq`` (of the last entry it read; absent for a group
        that started at an entry published by something else) and ``missed``."""
        found = {k.decode(): int(v) for k, v in self.client.hgetall(self.state_key).items()}
        return {**found, "missed": found.get("missed", 0)}

    # -- reading ----------------------------------------------------------------------------

    def _read(self) -> tuple[list[Entry], str]:
        """Acknowledge the last batch and read the next one: one round trip."""
        pipe = self.client.pipeline(transaction=False)
        if self._unacked:
            pipe.xack(self.stream, self.group, *self._unacked)
        keys, args = [self.stream, self.state_key], [self.group, self.name, self.batch]
        pipe.execute_command("EVALSHA", _SHAS[_READ], len(keys), *keys, *args)
        answers = pipe.execute(raise_on_error=False)
        self._unacked = []
        answer = answers[-1]
        if isinstance(answer, self._redis.exceptions.NoScriptError):
            answer = self._script(_READ, keys, args)
        elif isinstance(answer, self._redis.exceptions.ResponseError) and "NOGROUP" in str(answer):
            # The stream (or the group) was deleted meanwhile: start again with what it holds now.
            logger.warning("The group %s of the stream %s is gone; creating it again", self.group, self.stream)
            self.start = "0"
            self.ensure_group()
            return [], "0-0"
        for result in [*answers[:-1], answer]:
            if isinstance(result, Exception):
                raise result
        raw, missed, last_id = answer
        if missed:
            self._missed(int(missed), "were trimmed by the stream's retention before the group read them")
        return [(_text(entry_id), _fields(fields)) for entry_id, fields in raw], _text(last_id)

    def _wait(self, last_id: str) -> None:
        """Wait up to ``block`` seconds for an entry after ``last_id`` (the group's last read)."""
        self.client.xread({self.stream: last_id}, count=1, block=max(1, int(self.block * 1000)))

    def _take_over(self, *, own: bool = False) -> None:
        """Run the entries other consumers left pending for ``claim_idle`` seconds (``own``: this
        consumer's, from a run under the same name), one at a time: a handler that kills its
        consumer is counted, and dead-lettered once it did so ``retries + 1`` times."""
        taken: list[Entry] = []
        if own:
            answer = self.client.xreadgroup(self.group, self.name, {self.stream: "0"}, count=10_000)
            taken = [(_text(i), f or None) for i, f in (answer[0][1] if answer else [])]
            deleted: list[Any] = []
        else:
            cursor = "0-0"
            idle = int(self.claim_idle * 1000)
            deleted = []
            while True:
                cursor_b, claimed, gone = self.client.xautoclaim(
                    self.stream, self.group, self.name, idle, cursor, count=self.batch
                )
                taken += [(_text(i), f or None) for i, f in claimed]
                deleted += gone
                cursor = _text(cursor_b)
                if cursor == "0-0" or len(taken) >= 10 * self.batch:
                    break
        if deleted:
            self._missed(len(deleted), _TRIMMED_PENDING, counted=True)
        if not taken:
            return
        self.taken_over += len(taken)
        logger.info(
            "Consumer %s took over %d entries %s",
            self.name,
            len(taken),
            "it left pending in its last run" if own else f"other consumers left pending for over {self.claim_idle:g}s",
            extra={"stream": self.stream, "group": self.group, "consumer": self.name, "taken_over": len(taken)},
        )
        for entry in taken:
            if self._stopping is not None:
                break  # the rest stay pending: another consumer takes them over
            self._handle([entry])
            self._ack()

    def _missed(self, count: int, how: str, *, counted: bool = False) -> None:
        """Count and log entries the group will never run. ``counted``: add them to the group's
        count in Redis (the read script counts those it skipped itself)."""
        self.missed += count
        total = int(self.client.hincrby(self.state_key, "missed", count)) if counted else self.state().get("missed", 0)
        logger.warning(
            "Stream %s, group %s: %d entries %s (%d missed by the group in all). Keep the group closer to "
            "the stream's head, or raise EVENTLIB_STREAMS_MAXLEN / EVENTLIB_STREAMS_MAX_AGE",
            self.stream,
            self.group,
            count,
            how,
            total,
            extra={"stream": self.stream, "group": self.group, "consumer": self.name, "missed": count},
        )

    # -- handling ---------------------------------------------------------------------------

    def _handle(self, entries: list[Entry]) -> None:
        """Run the handlers of ``entries`` (one runner call: one store round trip to begin)."""
        messages: list[str] = []
        gone = 0
        for _entry_id, fields in entries:
            if fields is None:
                gone += 1
                continue
            name = _text(fields.get(b"name", b""))
            if not self.registry.handles(name):
                self.skipped += 1
                continue
            messages.append(_text(fields.get(b"envelope", b"")))
        if gone:
            self._missed(gone, _TRIMMED_PENDING, counted=True)
        if messages:
            self.runner.process(messages)
            self.handled += len(messages)
        # Acknowledged with the next read, or at once by the caller.
        self._unacked += [entry_id for entry_id, _ in entries]

    def _ack(self) -> None:
        if self._unacked:
            self.client.xack(self.stream, self.group, *self._unacked)
            self._unacked = []

    # -- retries: a sorted set of the group's, by due time ------------------------------------

    def _schedule_retry(
        self, message: str, handler: str, attempt: int, first_failed_at: float | None, delay: float
    ) -> None:
        member = json.dumps([message, handler, attempt, first_failed_at, uuid.uuid4().hex])
        self.client.zadd(self.retries_key, {member: time.time() + delay})

    def _run_retries(self) -> int:
        """Run the retries that are due; return how many ran."""
        now = time.time()
        due = self._script(_DUE, [self.retries_key], [now, self.batch, now + self.claim_idle])
        for member in due:
            message, handler, attempt, first_failed_at, _ = json.loads(member)
            try:
                result = self.runner.process_retry(message, handler, attempt, first_failed_at)
            except (EventNotFound, ConfigurationError, ValueError) as exc:
                logger.error("Cannot run a retry of %s: %s; it is dropped", handler, exc, exc_info=True)
            else:
                if result is not None:
                    log_outcome(result.event, [result], retry=True)
            self.client.zrem(self.retries_key, member)
            self.retried += 1
            if self._stopping is not None:
                break
        return len(due)

    def pending_retries(self) -> int:
        """Retries waiting in the group's sorted set."""
        return int(self.client.zcard(self.retries_key))

    def _script(self, script: str, keys: list[str], args: Sequence[Any]) -> Any:
        try:
            return self.client.execute_command("EVALSHA", _SHAS[script], len(keys), *keys, *args)
        except self._redis.exceptions.NoScriptError:
            self.client.execute_command("SCRIPT", "LOAD", script)
            return self.client.execute_command("EVALSHA", _SHAS[script], len(keys), *keys, *args)


#: How entries delivered to a consumer that stopped, and trimmed before another took them, are logged.
_TRIMMED_PENDING = "were left pending by a consumer that stopped, then trimmed before they ran"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[bytes, bytes] | None:
    """A script's flat ``[field, value, ...]`` as a dict (``None``: a deleted entry)."""
    if not raw:
        return None
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def _masked(url: str) -> str:
    from .config import mask_url

    return mask_url(url)


def registry_for(modules: Iterable[str]) -> ExternalRegistry:
    """A registry of the ``@external_handler`` functions of ``modules``.

    :raises ConfigurationError: when they hold none.
    """
    registry = ExternalRegistry()
    modules = list(modules)
    found = sum(registry.scan_external(module) for module in modules)
    if not found:
        raise ConfigurationError(
            f"No @external_handler functions in {', '.join(modules) or 'no module'}: name the modules that define "
            "them with -m (e.g. -m search.handlers), and mark each with @external_handler('app.EventName')"
        )
    return registry


# -- python -m flask_eventlib.consume ---------------------------------------------------------------


def parser(prog: str = "python -m flask_eventlib.consume") -> argparse.ArgumentParser:
    """The command line's options (``flask eventlib consume`` takes the same, its defaults from the app)."""
    cli = argparse.ArgumentParser(
        prog=prog, description="Run @external_handler functions on the events of a Redis Stream."
    )
    cli.add_argument("stream", help="the stream (a key of the app's EVENTLIB_STREAMS)")
    cli.add_argument("--group", "-g", required=True, help="the consumer group: each group gets every event")
    cli.add_argument(
        "--module", "-m", action="append", required=True, dest="modules", help="a module of @external_handler functions"
    )
    cli.add_argument(
        "--url",
        default=os.environ.get("EVENTLIB_STREAMS_URL") or "redis://127.0.0.1:6379/0",
        help="the stream's Redis (default: $EVENTLIB_STREAMS_URL, else redis://127.0.0.1:6379/0)",
    )
    cli.add_argument(
        "--from",
        dest="start",
        default="new",
        help="where a new group starts: new (the default), beginning, a stream id or an ISO 8601 time",
    )
    cli.add_argument("--consumer", help="this consumer's name in the group (default: host-pid)")
    cli.add_argument(
        "--store-url", help="the group's dedup marks, claims and dead letters (default: the stream's Redis)"
    )
    cli.add_argument("--batch", type=int, default=100, help="the most entries read and acknowledged together (100)")
    cli.add_argument("--block", type=float, default=1.0, help="seconds a read waits for new entries (1)")
    cli.add_argument(
        "--claim-idle",
        type=float,
        default=60.0,
        help="seconds after which another consumer's entries are taken over (60)",
    )
    cli.add_argument("--retries", type=int, default=3, help="retries of a failing handler (3)")
    cli.add_argument("--backoff", type=float, default=1.0, help="seconds before a handler's first retry, doubling (1)")
    cli.add_argument("--backoff-max", type=float, default=300.0, help="the longest wait between two attempts (300)")
    cli.add_argument(
        "--dedup-ttl", type=float, default=86_400, help="seconds a handler done for an event id is remembered"
    )
    cli.add_argument("--claim-ttl", type=float, default=60.0, help="the lease of a claim on a handler being run (60)")
    cli.add_argument("--until-idle", action="store_true", help="exit once the group has read every entry")
    cli.add_argument("--loglevel", default="INFO", help="INFO shows a line per event; WARNING only problems")
    return cli


def main(argv: list[str] | None = None) -> int:
    """``python -m flask_eventlib.consume STREAM --group G -m MODULE``: run until SIGTERM."""
    args = parser().parse_args(argv)
    _log_to_stderr(args.loglevel)
    sys.path.insert(0, os.getcwd())  # the handlers' modules, as `python -m` finds yours
    try:
        start = start_id(args.start)
        consumer = Consumer(
            args.stream,
            args.group,
            registry_for(args.modules),
            url=args.url,
            name=args.consumer,
            start=start,
            store_url=args.store_url,
            batch=args.batch,
            block=args.block,
            claim_idle=args.claim_idle,
            retries=args.retries,
            backoff=args.backoff,
            backoff_max=args.backoff_max,
            dedup_ttl=args.dedup_ttl,
            claim_ttl=args.claim_ttl,
        )
    except (ConfigurationError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        consumer.run(until_idle=args.until_idle, handle_signals=True)
    finally:
        consumer.close()
    return 0


def _log_to_stderr(level: str) -> None:
    """What a worker shows: one line per event (``flask_eventlib.outcomes``), warnings, errors."""
    logging.basicConfig(
        stream=sys.stderr, level=level.upper(), format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    )


if __name__ == "__main__":
    sys.exit(main())
