"""Events for other services: each event, as the worker runs it, also goes to Redis Streams.

``EVENTLIB_STREAMS = {"analytics": ["deals.*", "web.PageView"]}`` routes every event whose name
matches one of a stream's targets (``app.EventName``, ``app.*`` or ``*``, as ``@handler`` takes
them) to that stream. The worker's runner publishes them: after the round trip that reads the
dedup marks and takes the claims, it sends one Lua script for the whole message's events, runs
the handlers meanwhile, and reads the script's answer before the message is acknowledged. So the
request path is untouched, a message costs no extra wait (the answer comes while the handlers
run), and an event is in the stream once its message is done.

The script is one atomic step per message: for each event not published yet (a key
``eventlib:streamed:<event id>`` kept ``EVENTLIB_DEDUP_TTL`` seconds says it was), it ``XADD``\\ s
one entry to each of its streams, trimmed to about ``EVENTLIB_STREAMS_MAXLEN`` entries
(``MAXLEN ~``) and, with ``EVENTLIB_STREAMS_MAX_AGE``, to that age (``MINID ~``). A redelivered
message, a retry or two deliveries at once add nothing twice. A publish that fails is retried
alone, like a handler named :data:`STEP`, and dead-lettered after its last attempt.

The entry, the wire contract of ``docs/streams.md``, is four fields: ``name`` (the event's name,
to filter on without decoding), ``id`` (the event id), ``seq`` (a counter of the stream: a gap
between two entries a consumer group read is what retention trimmed before it read them) and
``envelope`` (the event as the workers got it: the envelope's tagged JSON, see
:mod:`flask_eventlib.envelope`).

This module needs no Flask and no Celery; :mod:`flask_eventlib.consume` reads the streams.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import resp

#: The name the publish step goes by where handlers are named: retries, dead letters, the logs.
STEP = "flask_eventlib.streams"
#: The fields of an entry, in order.
FIELDS = ("name", "id", "seq", "envelope")
#: Redis trims a stream by whole nodes of ``stream-node-max-entries`` (100 by default) entries
#: with ``~``: a stream holds at most about this many entries more than its bound.
NODE_ENTRIES = 100

#: ``(encoded message, event id, event name)``: one event to publish.
Item = tuple[str, str, str]

#: KEYS: each event's dedup key, then each stream and its ``seq`` counter. ARGV: the dedup ttl
#: (s; 0: no dedup), the max length, the min id ("" for none), the number of events and of
#: streams, then for each event: name, id, envelope, its stream count and the streams' indexes.
#: An event is marked (``SET NX``) and added to each of its streams; a stream's counter is read
#: once and written once. An ``XADD`` that fails (a key of another type) takes its event's mark
#: back, so that the retry publishes it (again, to a stream that took it before the failure: the
#: consumers' dedup runs it once), and its error is the script's answer.
_PUBLISH = """
local ttl, maxlen, minid = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local ne, ns = tonumber(ARGV[4]), tonumber(ARGV[5])
local seqs = {}
local function save()
  for s, seq in pairs(seqs) do redis.call('SET', KEYS[ne + 2 * s], seq) end
end
local a = 5
local added = 0
for i = 1, ne do
  local name, id, envelope, k = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  if ttl == 0 or redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    for j = 1, k do
      local s = tonumber(ARGV[a + 4 + j])
      local seq = (seqs[s] or tonumber(redis.call('GET', KEYS[ne + 2 * s]) or '0')) + 1
      local done = redis.pcall('XADD', KEYS[ne + 2 * s - 1], 'MAXLEN', '~', maxlen, '*',
        'name', name, 'id', id, 'seq', seq, 'envelope', envelope)
      if type(done) == 'table' and done.err then
        if ttl > 0 then redis.call('DEL', KEYS[i]) end
        save()
        return done
      end
      seqs[s] = seq
      added = added + 1
    end
  end
  a = a + 4 + k
end
save()
if minid ~= '' then
  for s = 1, ns do redis.call('XTRIM', KEYS[ne + 2 * s - 1], 'MINID', '~', minid) end
end
return added
"""
_PUBLISH_SHA = hashlib.sha1(_PUBLISH.encode()).hexdigest()


def matches(target: str, name: str) -> bool:
    """Whether the target ``app.EventName``, ``app.*`` or ``*`` takes the event ``name``."""
    return target in ("*", name) or (target.endswith(".*") and name.partition(".")[0] == target[:-2])


def seq_key(stream: str, prefix: str = "eventlib:") -> str:
    """The key of the counter that numbers a stream's entries."""
    return f"{prefix}seq:{stream}"


def default_url(streams_url: str | None, broker_url: str | None, store_url: str | None) -> str | None:
    """Where the streams live: ``EVENTLIB_STREAMS_URL``, else the broker's Redis, else the store's."""
    if streams_url:
        return streams_url
    for url in ((broker_url or "").split(";")[0].strip(), store_url or ""):
        if url.startswith(("redis://", "rediss://", "unix://")):
            return url.split("?")[0]
    return None


@dataclass
class Sent:
    """A publish sent and not read yet: :meth:`wait` reads its answer."""

    publisher: StreamPublisher
    #: What was sent: the items, or what the caller paired with them (the runner's events).
    items: list[Any]
    #: The command, as sent: sent again if Redis did not have the script yet.
    command: bytes = b""
    conn: Any = None
    #: Whether ``conn`` is the thread's kept connection (else the pool's, given back after).
    kept: bool = False
    error: BaseException | None = None

    def wait(self) -> BaseException | None:
        """Read the answer; return the error that kept the events out of the streams, if any."""
        conn, self.conn = self.conn, None
        if conn is None:
            return self.error
        publisher = self.publisher
        try:
            try:
                conn.read_response()
            except publisher.no_script:
                conn.send_packed_command([resp.pack(b"SCRIPT", b"LOAD", _PUBLISH.encode()), self.command])
                conn.read_response()
                conn.read_response()
        except Exception as exc:
            self.error = exc
            conn.disconnect()  # an answer may be left unread on it; the next send reconnects
        finally:
            publisher._give_back(conn, self.kept)
        return self.error


class StreamPublisher:
    """Publishes events to the Redis Streams their names are routed to.

    Each thread keeps a connection of its own for its publishes (a process's worker thread, or
    each of a threads pool's), so that a publish costs no trip through the connection pool.

    :param url: the Redis the streams live in (``EVENTLIB_STREAMS_URL``).
    :param routes: ``{stream: [target, ...]}`` (``EVENTLIB_STREAMS``).
    :param maxlen: each stream is trimmed to about this many entries (``MAXLEN ~``).
    :param max_age: seconds; older entries are trimmed too (``MINID ~``); ``None``: no age bound.
    :param dedup_ttl: seconds an event id is remembered as published; 0 publishes every delivery.
    :param timeout: seconds to wait for Redis, to connect and for an answer.
    """

    def __init__(
        self,
        url: str,
        routes: Mapping[str, Iterable[str]],
        *,
        maxlen: int = 1_000_000,
        max_age: float | None = None,
        dedup_ttl: float = 86_400,
        timeout: float = 5.0,
        prefix: str = "eventlib:",
    ) -> None:
        import redis

        self.url = url
        self.routes = {stream: tuple(targets) for stream, targets in routes.items()}
        self.maxlen = maxlen
        self.max_age = max_age
        self.dedup_ttl = dedup_ttl
        self.prefix = prefix
        self.client = resp.fork_safe(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))
        self.no_script = redis.exceptions.NoScriptError
        #: Per event name: its streams, and its name as an argument of the script.
        self._names: dict[str, tuple[tuple[str, ...], bytes]] = {}
        self._head = resp.bulk(b"EVALSHA") + resp.bulk(_PUBLISH_SHA.encode())
        self._dedup_prefix = f"{prefix}streamed:".encode()
        self._local = threading.local()

    def streams_for(self, name: str) -> tuple[str, ...]:
        """The streams the event ``name`` goes to."""
        return self._routed(name)[0]

    def _routed(self, name: str) -> tuple[tuple[str, ...], bytes]:
        """``name``'s streams and its name as an argument (cached: the routes never change)."""
        found = self._names.get(name)
        if found is None:
            streams = tuple(s for s, targets in self.routes.items() if any(matches(t, name) for t in targets))
            found = self._names[name] = (streams, resp.bulk(name.encode()))
        return found

    def send(self, items: list[Item], paired: list[Any] | None = None) -> Sent:
        """Send the publish of ``items`` without reading its answer; never raises.

        :param paired: kept in :attr:`Sent.items` instead of ``items`` (the runner's events).
        """
        sent = Sent(self, paired if paired is not None else items)
        try:
            sent.command = self._command(items)
            sent.conn, sent.kept = self._take()
            try:
                sent.conn.send_packed_command([sent.command])
            except BaseException:
                sent.conn.disconnect()
                self._give_back(sent.conn, sent.kept)
                sent.conn = None
                raise
        except Exception as exc:
            sent.error = exc
        return sent

    def publish(self, items: list[Item]) -> None:
        """Publish ``items`` and wait for Redis: one round trip.

        :raises Exception: the error that kept them out of the streams (Redis's, the network's).
        """
        error = self.send(items).wait()
        if error is not None:
            raise error

    def _take(self) -> tuple[Any, bool]:
        """This thread's kept connection, or, while it waits for an answer (a handler that logs an
        event in eager mode publishes inside the publish), one of the pool's."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # a forked child: its parent's socket is not its own
            local.pid, local.conn, local.busy = os.getpid(), None, False
        if local.busy:
            return self.client.connection_pool.get_connection(), False
        if local.conn is None:
            local.conn = self.client.connection_pool.make_connection()
        local.busy = True
        return local.conn, True

    def _give_back(self, conn: Any, kept: bool) -> None:
        if kept:
            self._local.busy = False
        else:
            self.client.connection_pool.release(conn)

    def _command(self, items: list[Item]) -> bytes:
        """The script's call in Redis's protocol, built here: redis-py's generic packing of its
        arguments would cost more than the rest of the publish."""
        streams: dict[str, int] = {}
        keys: list[bytes] = []
        events: list[bytes] = []
        prefix = self._dedup_prefix
        for message, event_id, name in items:
            targets, name_arg = self._routed(name)
            indexes = [streams.setdefault(s, len(streams) + 1) for s in targets]
            key = event_id.encode()
            keys.append(resp.bulk(prefix + key))
            events += (name_arg, resp.bulk(key), resp.bulk(message.encode()), resp.bulk(b"%d" % len(indexes)))
            events += [resp.bulk(b"%d" % i) for i in indexes]
        for stream in streams:
            keys += (resp.bulk(stream.encode()), resp.bulk(seq_key(stream, self.prefix).encode()))
        minid = b"" if self.max_age is None else b"%d" % int((time.time() - self.max_age) * 1000)
        ttl = max(1, int(self.dedup_ttl)) if self.dedup_ttl else 0
        head = [resp.bulk(b"%d" % ttl), resp.bulk(b"%d" % self.maxlen), resp.bulk(minid)]
        counts = [resp.bulk(b"%d" % len(items)), resp.bulk(b"%d" % len(streams))]
        count = 3 + len(keys) + len(head) + len(counts) + len(events)
        return b"".join([b"*%d\r\n" % count, self._head, resp.bulk(b"%d" % len(keys)), *keys, *head, *counts, *events])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.disconnect()
        self.client.close()
