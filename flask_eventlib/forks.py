"""What a fork must know: this process's id without a system call, and the sections a fork waits out.

``os.getpid()`` is a system call (glibc no longer caches it): about a percent of a browser
endpoint request's CPU where the sender checked it on every hand-over. The id is read once and
set again in a forked child, by a hook registered when this module is imported, before the hooks
of the modules that import it (``os.register_at_fork`` runs a child's hooks in that order).

A fork copies every lock as it is, held or not, and the child has only the forking thread: a
lock another thread held at that moment is never released there. Our own locks are made anew in
the child (each module's hook), but the libraries the sender's thread calls into keep locks we
cannot reach: kombu's ``cached_property`` takes a lock shared by every instance on every read of
``app.amqp``, so a gunicorn master with ``--preload`` that forked a worker while its sender was
publishing left that worker's first publish waiting forever. So the sender calls out to the
broker inside :func:`fork_waits`, and a fork waits until no thread is inside one (new ones wait
for the fork) before it copies the process; a section that outlasts :data:`FORK_WAIT` is logged
and the fork goes on.

Order: a thread inside a spool transaction (the SQLite file's lock) may enter a section, so a
fork takes the SQLite files' locks first and waits for the sections second. ``os.register_at_fork``
runs the ``before`` hooks in the reverse order of registration: :mod:`flask_eventlib.sqlite`
imports this module, so its hook is registered after this one and runs before it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

logger = logging.getLogger("flask_eventlib")

#: ``[pid]``: this process's id; ``this_process[0] != saved`` means a fork happened since ``saved``.
this_process = [os.getpid()]

#: The most seconds a fork waits for the threads inside :func:`fork_waits` (a publish ends
#: within its timeout, 2 s by default).
FORK_WAIT = 10.0


class _Sections:
    """Who is inside a :func:`fork_waits` block, by thread; whether a fork waits for them."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.inside: dict[int, int] = {}  # thread id: depth
        self.forking = False

    def enter(self) -> None:
        me = threading.get_ident()
        with self.cond:
            while self.forking and me not in self.inside:
                self.cond.wait()
            self.inside[me] = self.inside.get(me, 0) + 1

    def leave(self) -> None:
        me = threading.get_ident()
        with self.cond:
            depth = self.inside.pop(me) - 1
            if depth:
                self.inside[me] = depth
            else:
                self.cond.notify_all()

    def before_fork(self) -> None:
        me = threading.get_ident()
        deadline = time.monotonic() + FORK_WAIT
        with self.cond:
            self.forking = True
            while (others := [t for t in self.inside if t != me]) and (left := deadline - time.monotonic()) > 0:
                self.cond.wait(left)
            if others:
                names = [t.name for t in threading.enumerate() if t.ident in others]
                logger.warning(
                    "flask-eventlib: a fork waited %gs for the threads %s to come back from the broker, and goes on; "
                    "the child may wait forever for a lock they held",
                    FORK_WAIT,
                    ", ".join(names) or others,
                )

    def after_fork_in_parent(self) -> None:
        with self.cond:
            self.forking = False
            self.cond.notify_all()


_sections = _Sections()


@contextlib.contextmanager
def fork_waits() -> Iterator[None]:
    """A block that a fork of this process waits out: for calls into libraries whose locks a child
    could not release (a publish through kombu, Celery or redis-py). While a fork waits, new
    blocks wait for it."""
    sections = _sections  # the one it leaves, even in a child forked meanwhile by this thread
    sections.enter()
    try:
        yield
    finally:
        sections.leave()


def _before_fork() -> None:
    _sections.before_fork()


def _after_fork_in_parent() -> None:
    _sections.after_fork_in_parent()


def _after_fork_in_child() -> None:
    global _sections
    this_process[0] = os.getpid()
    _sections = _Sections()  # the parent's threads are not here, nor is the lock they shared


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
