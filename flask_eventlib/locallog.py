"""The local log: what keeps an event safe between ``log()`` and the broker.

``log()`` appends each encoded event to a segment file of its process before it returns: a copy
into the file's pages, mapped into memory (``mmap``). Those pages are the kernel's page cache,
which outlives the process, so a SIGKILL, an OOM kill or gunicorn's timeout kill loses nothing
(``EVENTLIB_DURABILITY = "process"``). No system call is made, so ``log()`` never gives up the GIL
on the way (a ``write()`` would, and then wait up to the interpreter's switch interval, 5 ms, for
it while the sender thread runs). A segment's space is reserved on disk when it is made
(``posix_fallocate``), so a full disk shows as an error there, never as a SIGBUS on a page.
With ``"machine"`` the pages are also written to disk (``msync``) before the request ends, or
before ``log()`` returns outside a request (group commit: one sync covers every event appended
before it), so power loss loses nothing either.

A segment is a file of lines, one encoded event each, behind a fixed header that holds its
*watermark*: the offset before which every event was published (or put in the spool); the unused
rest of the file is zeros. The background sender releases events once the broker (or the spool)
has them; the watermark moves past the released prefix and a segment that is full and released
is removed.

Each segment is locked (``flock``) by the process that writes it, for as long as it lives; the
kernel drops the lock when the process dies, however it dies. Whoever comes next (a sibling
worker's recovery thread, the next process using the folder, ``flask eventlib recover``) takes
the lock of a dead segment, which makes it the only one to publish what lies past the
watermark, and removes it once the sender released it all. Events between the watermark and the
last publish before a crash are sent twice; the workers' dedup by event id runs their handlers
once.

Nothing here raises into ``log()``: a full or read-only disk, or a log past its ``max_bytes``,
leaves the events in memory only (as with ``"memory"``), counted, logged and signalled.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import signals
from .forks import this_process

__all__ = ["LocalLog", "Segment", "Ticket"]

logger = logging.getLogger("flask_eventlib")

_MAGIC = b"eventlib-log 1 "
_HEADER = len(_MAGIC) + 16 + 1  # the magic, the watermark as 16 digits, a newline
_SUFFIX = ".log"


def _header(watermark: int) -> bytes:
    return _MAGIC + b"%016d\n" % watermark


class Ticket:
    """One append: where its events lie in their segment, and whether the broker has them."""

    __slots__ = ("count", "end", "released", "segment", "start")

    def __init__(self, segment: Segment, start: int, end: int, count: int) -> None:
        self.segment = segment
        self.start = start
        self.end = end
        self.count = count
        self.released = False


class Segment:
    """One locked segment file: its descriptor, its unreleased appends in order, its watermark.

    :param owned: written by this process (``False``: a dead process's, being recovered).
    """

    def __init__(
        self, path: str, fd: int, size: int, watermark: int, *, owned: bool, map: mmap.mmap | None = None
    ) -> None:
        self.path = path
        self.fd = fd
        self.map = map  # the file's pages, for an owned segment
        self.capacity = len(map) if map is not None else size
        self.size = size
        self.watermark = watermark
        self.owned = owned
        self.synced = size
        self.sealed = not owned  # no more appends: removed once all is released
        self.closed = False
        self._pending: collections.deque[Ticket] = collections.deque()

    def unreleased(self) -> int:
        """Events appended (or recovered) here that the broker has not got yet."""
        return sum(t.count for t in self._pending if not t.released)

    def track(self, ticket: Ticket) -> None:
        self._pending.append(ticket)

    def advance(self) -> bool:
        """Move the watermark past the released prefix; ``True`` when it moved."""
        pending = self._pending
        while pending and pending[0].released:
            pending.popleft()
        watermark = pending[0].start if pending else self.size
        if watermark == self.watermark:
            return False
        self.watermark = watermark
        return True

    def done(self) -> bool:
        """Sealed and everything released: the file can go."""
        return self.sealed and not self._pending


class LocalLog:
    """The segments of one app in one process, and the recovery of dead processes' segments.

    :param folder: where the segments live, shared by the processes of one deployment.
    :param durability: ``"process"`` or ``"machine"`` (see the module's documentation).
    :param max_bytes: the most bytes this process's segments hold; past that, new events stay in
        memory only (counted in :attr:`unprotected`, logged, signalled) until the sender caught up.
    :param segment_bytes: a segment this large takes no more appends; a new one starts.
    :param retry_interval: seconds before a folder that failed is tried again.
    :param signal_sender: the sender of the signals it sends (the Flask app).
    """

    def __init__(
        self,
        folder: str,
        *,
        durability: str = "process",
        max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        retry_interval: float = 30.0,
        signal_sender: Any = None,
    ) -> None:
        if durability not in ("process", "machine"):
            raise ValueError(f"durability must be 'process' or 'machine' for a local log, not {durability!r}")
        self.folder = folder
        self.durability = durability
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.retry_interval = retry_interval
        self.signal_sender = signal_sender
        #: Events that were kept in memory only, because the disk failed or the log was full.
        self.unprotected = 0
        #: Events of dead processes' segments handed to the sender.
        self.recovered = 0
        self._reset()
        _logs.add(self)
        weakref.finalize(self, _close_all, self._segments, self._recovering)

    def _reset(self) -> None:
        self._lock = threading.RLock()  # a signal's receiver may log() again
        self._sync_lock = threading.Lock()
        self._recover_lock = threading.Lock()
        self._segments: list[Segment] = []  # owned, oldest first; the last takes the appends
        #: The last segment while it takes appends the quick way (``None``: the next append
        #: goes the slow way, which opens or checks one).
        self._open: Segment | None = None
        self._recovering: dict[str, Segment] = {}
        self._bytes = 0
        self._failing_until = 0.0
        self._failing = False
        self._pid = os.getpid()

    # -- the caller's side -------------------------------------------------------------------

    def append(self, messages: list[str], after: Ticket | None = None) -> Ticket | None:
        """Write encoded events to this process's segment; ``None`` when they could not be kept.

        :param after: the ticket of the caller's previous append (a request's events): when the
            new events land right behind it, that ticket grows to cover them and is returned, so
            a request holds one ticket rather than one per event.

        Never raises: a disk that fails leaves the events in memory, and says so.
        """
        data = (messages[0] + "\n" if len(messages) == 1 else "\n".join(messages) + "\n").encode()
        with self._lock:
            # The common case in as few steps as it takes (it runs for every event, on caches
            # the request left cold): room in the open segment, no fork since it was opened.
            segment = self._open
            if segment is None or self._pid != this_process[0] or segment.size + len(data) > segment.capacity:
                segment = self._segment_for(messages, len(data))
                if segment is None:
                    return None
            start = segment.size
            end = start + len(data)
            segment.map[start:end] = data  # type: ignore[index]  # into the page cache: no system call
            segment.size = end
            if after is not None and after.end == start and after.segment is segment and not after.released:
                after.end = end  # right behind the caller's previous append: that ticket grows
                after.count += len(messages)
                return after
            ticket = Ticket(segment, start, end, len(messages))
            segment.track(ticket)
            return ticket

    def _segment_for(self, messages: list[str], size: int) -> Segment | None:
        """The segment :meth:`append` writes ``size`` bytes into when the open one will not do
        (after a fork, when it is full, while failing): the last one if it has room, else a new
        one; ``None`` (the events counted as unprotected) when none can be had."""
        if self._pid != this_process[0]:
            self._forked()
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.sealed or segment.size + size > segment.capacity:
            capacity = max(self.segment_bytes, _HEADER + size)
            if self._bytes + capacity > self.max_bytes:
                full = f"the local log holds {self._bytes} bytes (max {self.max_bytes})"
                self._unprotected(messages, full)
                return None
            segment = self._new_segment(capacity)
            if segment is None:
                self._unprotected(messages, None)
                return None
        if self._failing:
            self._works_again()
        self._open = segment  # the next appends take the quick way, until it fills up
        return segment

    def sync(self, ticket: Ticket | None) -> None:
        """``"machine"``: return once ``ticket``'s events are on the disk itself (group commit).

        One ``fdatasync`` covers every append made before it: concurrent callers wait for the
        one in progress and find themselves covered.
        """
        if ticket is None or self.durability != "machine":
            return
        segment = ticket.segment
        if segment.synced >= ticket.end:
            return
        with self._sync_lock:
            if segment.synced >= ticket.end or segment.closed:
                return
            target = segment.size
            try:
                assert segment.map is not None
                segment.map.flush()  # msync: the pages written so far, to the disk
            except OSError as exc:
                logger.error("flask-eventlib: cannot sync the local log %s: %s", segment.path, exc)
                return
            segment.synced = max(segment.synced, target)

    # -- the sender's side -------------------------------------------------------------------

    def release(self, tickets: list[Ticket]) -> None:
        """The broker (or the spool) has these events: move the watermarks, remove what is done."""
        if not tickets:
            return
        moved: dict[int, Segment] = {}
        with self._lock:
            for ticket in tickets:
                if not ticket.released:
                    ticket.released = True
                    moved[id(ticket.segment)] = ticket.segment
            for segment in moved.values():
                if segment.closed or not segment.advance():
                    continue
                if segment.done():
                    self._remove(segment)
                elif segment.map is not None:  # a stale watermark would only mean duplicates
                    segment.map[:_HEADER] = _header(segment.watermark)
                else:
                    with contextlib.suppress(OSError):
                        os.pwrite(segment.fd, _header(segment.watermark), 0)

    def pending(self) -> int:
        """Events in this process's segments and those it recovers that the broker has not got."""
        with self._lock:
            segments = [*self._segments, *self._recovering.values()]
            return sum(segment.unreleased() for segment in segments)

    def oldest(self) -> str | None:
        """The oldest event here the broker has not got (a dead process's first), or ``None``.

        For the console's figures, about once a second: one line read from a page or the file.
        """
        with self._lock:
            for segment in [*self._recovering.values(), *self._segments]:
                ticket = next((t for t in segment._pending if not t.released), None)
                if ticket is None or segment.closed:
                    continue
                size = min(ticket.end - ticket.start, 65_536)
                try:
                    if segment.map is not None:
                        data = segment.map[ticket.start : ticket.start + size]
                    else:
                        data = os.pread(segment.fd, size, ticket.start)
                except (OSError, ValueError):
                    continue
                return data.split(b"\n", 1)[0].decode("utf-8", "replace")
        return None

    def close(self) -> None:
        """At exit: remove the segments whose events were all sent; leave the others for recovery."""
        with self._lock:
            self._open = None
            for segment in [*self._segments, *self._recovering.values()]:
                segment.sealed = True
                segment.advance()
                if segment.done():
                    self._remove(segment)
                else:
                    _close(segment)
            self._segments.clear()
            self._recovering.clear()

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, submit: Callable[[list[str], list[Ticket]], None], max_batch: int = 100) -> int:
        """Hand the events of dead processes' segments to ``submit``; return how many.

        A segment is dead when its lock can be taken: its writer is gone. The lock is kept until
        the sender released the segment's events, so no other process sends them too.
        """
        if self._pid != os.getpid():
            with self._lock:
                self._forked()
        with self._recover_lock:
            return self._recover(submit, max_batch)

    def _recover(self, submit: Callable[[list[str], list[Ticket]], None], max_batch: int) -> int:
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return 0  # no folder yet: nothing was ever logged here
        total = 0
        own = {s.path for s in self._segments}
        for name in names:
            if not name.endswith(_SUFFIX):
                continue
            path = os.path.join(self.folder, name)
            if path in own or path in self._recovering:
                continue
            taken = self._take(path)
            if taken is None:
                continue
            segment, lines = taken
            with self._lock:
                self._recovering[path] = segment
                tickets = []
                for offset, line in lines:
                    ticket = Ticket(segment, offset, offset + len(line) + 1, 1)
                    segment.track(ticket)
                    tickets.append(ticket)
                if not tickets:
                    self._remove(segment)
                    continue
            logger.warning(
                "flask-eventlib: recovering %d events left by a process that ended before sending them (%s)",
                len(tickets),
                path,
            )
            for index in range(0, len(tickets), max_batch):
                chunk = lines[index : index + max_batch]
                submit([line.decode() for _, line in chunk], tickets[index : index + max_batch])
            total += len(tickets)
        self.recovered += total
        return total

    def _take(self, path: str) -> tuple[Segment, list[tuple[int, bytes]]] | None:
        """Lock a dead segment and read what lies past its watermark; ``None`` if it is alive."""
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return None  # removed meanwhile, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None  # its writer lives (or another process recovers it)
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)  # removed by its last recoverer before we locked it
            with open(fd, "rb", closefd=False) as file:
                raw = file.read()
        except OSError:
            os.close(fd)
            return None
        watermark = _HEADER
        if raw[: len(_MAGIC)] == _MAGIC:
            with contextlib.suppress(ValueError):
                watermark = max(_HEADER, int(raw[len(_MAGIC) : _HEADER - 1]))
        body = raw[watermark:].split(b"\0", 1)[0]  # the unused rest of the file is zeros
        if not body.endswith(b"\n"):  # a torn last line (power loss): it never counted as logged
            body = body[: body.rfind(b"\n") + 1]
        lines: list[tuple[int, bytes]] = []
        offset = watermark
        for line in body.split(b"\n")[:-1]:
            if line[:1] in (b"{", b"["):
                lines.append((offset, line))
            else:  # bytes a power loss left behind: not an event anyone logged
                logger.error("flask-eventlib: skipped a damaged line in the local log %s: %r", path, line[:80])
            offset += len(line) + 1
        return Segment(path, fd, offset, watermark, owned=False), lines

    # -- the files ---------------------------------------------------------------------------

    def _new_segment(self, capacity: int) -> Segment | None:
        """Start a segment of ``capacity`` bytes: made under a temporary name, its space reserved,
        locked, then renamed into view, so no recoverer ever sees it unlocked. ``None`` when the
        folder cannot be written or the disk has no room."""
        now = time.monotonic()
        if now < self._failing_until:
            return None
        self._open = None
        if self._segments:
            previous = self._segments[-1]
            previous.sealed = True
            if previous.done():
                self._remove(previous)
            elif self.durability == "machine" and previous.map is not None and previous.synced < previous.size:
                # A sync covers the segment of the ticket it is given: what went before, in the
                # segment that takes no more appends, goes to the disk now.
                previous.map.flush()
                previous.synced = previous.size
        name = f"{os.getpid()}-{time.time_ns():x}"
        temporary = os.path.join(self.folder, f".{name}.new")
        path = os.path.join(self.folder, name + _SUFFIX)
        fd = -1
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.posix_fallocate(fd, 0, capacity)  # a full disk says so here, not as a SIGBUS later
            if os.pwrite(fd, _header(_HEADER), 0) != _HEADER:
                raise OSError("short write of the header")
            pages = mmap.mmap(fd, capacity)
            os.rename(temporary, path)
            if self.durability == "machine":
                os.fdatasync(fd)
                _sync_folder(self.folder)
        except (OSError, ValueError) as exc:
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            self._failing_until = now + self.retry_interval
            self._fail(f"cannot create a segment in {self.folder}: {exc}")
            return None
        segment = Segment(path, fd, _HEADER, _HEADER, owned=True, map=pages)
        self._segments.append(segment)
        self._bytes += capacity
        return segment

    def _remove(self, segment: Segment) -> None:
        with contextlib.suppress(OSError):
            os.unlink(segment.path)  # while still locked: nobody else can have taken it
        _close(segment)
        if segment.owned:
            with contextlib.suppress(ValueError):
                self._segments.remove(segment)
            self._bytes -= segment.capacity
        else:
            self._recovering.pop(segment.path, None)

    def _forked(self) -> None:
        """In a forked child: the parent's segments and locks are the parent's. Closing our copy
        of a descriptor keeps the parent's lock (``flock`` belongs to the shared description
        until the last copy closes; ``LOCK_UN`` would drop it for the parent too)."""
        for segment in [*self._segments, *self._recovering.values()]:
            _close(segment)
        lock = self._lock
        self._reset()
        self._lock = lock  # held by the caller

    # -- saying so ---------------------------------------------------------------------------

    def _unprotected(self, messages: list[str], reason: str | None) -> None:
        self.unprotected += len(messages)
        if reason is not None:
            self._fail(reason)

    def _fail(self, reason: str) -> None:
        self._open = None  # the slow way says when it works again
        if not self._failing:
            self._failing = True
            logger.error(
                "flask-eventlib: the local log cannot keep events (%s); until it can, events wait in "
                "memory only and are lost if the process dies before they are sent",
                reason,
            )
        signals.send(signals.local_log_failed, self.signal_sender, folder=self.folder, reason=reason)

    def _works_again(self) -> None:
        self._failing = False
        logger.warning("flask-eventlib: the local log %s keeps events again", self.folder)


def _close(segment: Segment) -> None:
    if not segment.closed:
        segment.closed = True
        if segment.map is not None:
            with contextlib.suppress(BufferError, ValueError):
                segment.map.close()
        with contextlib.suppress(OSError):
            os.close(segment.fd)


def _close_all(segments: list[Segment], recovering: dict[str, Segment]) -> None:
    for segment in [*segments, *recovering.values()]:
        _close(segment)


def _sync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Every local log of this process.
_logs: weakref.WeakSet[LocalLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for log in list(_logs):
        log._lock = threading.RLock()  # a lock held by a parent's thread at the fork is never released here
        with log._lock:
            log._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
