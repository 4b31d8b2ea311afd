"""Commands in Redis's protocol (RESP), packed by hand, and the kept connection they go on, for
the hot paths (the workers' claims and dedup marks, the sender's publish, the streams' XADDs).

redis-py's own packing encodes each argument through several layers; for a command of twenty
arguments that is most of a write's CPU time. Here an argument is ``bytes``, ``str`` (UTF-8) or
``int``, packed in one pass. And redis-py's pool takes and checks a connection for every command
(a ``select()`` call, and in redis-py 8 counters of its own); :class:`KeptConnection` keeps one
between commands and checks it only after it sat idle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

from .forks import this_process

logger = logging.getLogger("flask_eventlib")


def bulk(arg: bytes | str | int) -> bytes:
    """One argument: ``$<length>``, then the argument."""
    data = arg if type(arg) is bytes else str(arg).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(*args: bytes | str | int) -> bytes:
    """A command: ``*<count>``, then each argument."""
    return b"*%d\r\n" % len(args) + b"".join(map(bulk, args))


#: Seconds a kept connection may sit unused before it is checked first (the default of
#: :class:`KeptConnection`, read when one is made).
IDLE_CHECK = 1.0


class KeptConnection:
    """A connection of a redis-py client's pool, kept between commands: one per thread, and a
    forked child takes its own (the parent's stays the parent's, unclosed).

    :param idle_check: seconds a connection may sit unused before :meth:`get` checks it first
        (a server restart or its idle timeout closes it): one found closed is replaced.
        Default: :data:`IDLE_CHECK`.

    A caller that sees a command fail calls :meth:`drop`, so the next command gets a new one.
    """

    def __init__(self, client: Any, idle_check: float | None = None) -> None:
        self.client = client
        self.idle_check = IDLE_CHECK if idle_check is None else idle_check
        self._local = threading.local()

    def get(self, *, check: bool = True) -> Any:
        """This thread's connection, connected.

        :param check: ``False`` while answers to commands sent on it are still to be read
            (which would make it look closed, and be lost with it).
        """
        local = self._local
        conn = getattr(local, "conn", None)
        now = time.monotonic()
        if conn is not None:
            if local.pid != this_process[0]:
                conn = local.conn = None
            elif check and now - local.used > self.idle_check and not usable(conn):
                self.drop()  # the server closed it while it sat idle
                conn = None
        if conn is None:
            conn = self.client.connection_pool.get_connection()
            local.conn, local.pid = conn, this_process[0]
        local.used = now
        return conn

    def drop(self) -> None:
        """Close this thread's connection (if it has one, of this process)."""
        local = self._local
        conn = getattr(local, "conn", None)
        local.conn = None
        if conn is None or local.pid != this_process[0]:
            return
        try:
            conn.disconnect()
            self.client.connection_pool.release(conn)
        except Exception:
            logger.debug("Closing a failed Redis connection raised", exc_info=True)


def usable(conn: Any) -> bool:
    """Whether a kept connection that sat idle still works: nothing to read (readable means the
    server closed it, or sent what nobody asked for), as redis-py's pool checks it."""
    try:
        return not conn.can_read()
    except Exception:  # redis-py raises its ConnectionError for a closed one
        return False


# -- fork safety ----------------------------------------------------------------------------------


def fork_safe(client: Any) -> Any:
    """Register a redis-py client made here, so that a forked child can use it; return it.

    A child's first use of a pool makes the pool reset itself for the new process, and redis-py
    8 does so holding the pool's lock. That lock is the parent's as it was at the fork: when
    another thread of the parent was inside the pool then (the sender's thread of a gunicorn
    master with ``--preload``, recovering a dead worker's events while the master forks the next
    worker), the child waits for it forever, and its events wait in its local log. So a child gets
    a fresh lock for each registered pool, before any of its threads can take it.
    """
    _pools.add(client.connection_pool)
    return client


#: The connection pools of the clients made through :func:`fork_safe`.
_pools: weakref.WeakSet[Any] = weakref.WeakSet()


_RLOCK = type(threading.RLock())


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        for name in ("_lock", "_fork_lock"):  # redis-py's names; a release without them needs nothing
            held = getattr(pool, name, None)
            if held is not None:
                setattr(pool, name, threading.RLock() if isinstance(held, _RLOCK) else threading.Lock())


os.register_at_fork(after_in_child=_after_fork_in_child)
