"""One SQLite file shared by threads and forked processes: what the spool and the SQLite store use.

SQLite's rule for fork is that a connection must never cross it. A child must neither use nor
close one opened by its parent, and even a new connection in the child shares the inherited
connection's lock bookkeeping (SQLite keeps it per process and per file): the child then holds
no real lock, so a parent closing the file last deletes the WAL, and the child's writes with it.
So a :class:`SQLiteFile` closes its connection just before a fork (waiting for a transaction in
another thread to end), and each process opens its own on first use afterwards. One that could
not be closed (the forking thread was inside a transaction) is left untouched in the child, and
referenced forever, since dropping the last reference would make CPython close it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from . import forks  # noqa: F401  (its fork hook first: a fork takes these files' locks, then waits for its sections)
from .exceptions import EventlibError


class SQLiteFileError(EventlibError):
    """A SQLite file cannot be opened, read or written (bad folder, corrupt file, full disk...).

    :param message: what failed, naming the file.
    :param path: the file.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        #: The file that failed.
        self.path = path


class SQLiteFile:
    """A lazily opened SQLite connection, in WAL mode, safe across threads and forks.

    Nothing touches the disk until the first statement: then the folder is created, the file
    opened and ``schema`` run. Statements run in autocommit mode; group them with
    :meth:`transaction`. One connection per process, serialized by a lock.

    :param path: the file (``":memory:"`` works too, one database per process).
    :param schema: SQL run each time the file is opened (``CREATE TABLE IF NOT EXISTS ...``).
    :param name: what the file is, for error messages ("spool", "store").
    :param error: the exception raised for the file's failures: :class:`SQLiteFileError` or a
        subclass, so that callers can tell them from other failures.
    :param timeout: seconds to wait for another connection's lock before failing.
    """

    def __init__(
        self,
        path: str,
        schema: str,
        *,
        name: str = "SQLite file",
        error: type[SQLiteFileError] = SQLiteFileError,
        timeout: float = 30.0,
    ) -> None:
        self.path = path
        self.schema = schema
        self.name = name
        self.error = error
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        # Reentrant: statements run inside transaction() take it again.
        self._lock = threading.RLock()
        _files.add(self)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block's statements as one write transaction (``BEGIN IMMEDIATE``).

        It commits at the end of the block and rolls back if the block raises; the block's own
        exceptions propagate as they are. Other threads wait meanwhile, and so does a fork. They
        do not nest, and a process must not fork inside one: its child could not write the file.
        """
        with self._lock:
            self.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.execute("COMMIT")
            except BaseException:
                db = self._db
                if db is not None and db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the exception being raised is the news
                        db.execute("ROLLBACK")
                raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement and return all its rows.

        :raises SQLiteFileError: (or ``error``) when the file cannot be opened or the statement fails.
        """
        with self._lock:
            db = self._connection()
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._failure(f"failed running {sql.split(None, 1)[0]}", exc) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement for each row of parameters; return how many rows it changed in all.

        :raises SQLiteFileError: (or ``error``) when the file cannot be opened or the statement fails.
        """
        with self._lock:
            db = self._connection()
            try:
                return db.executemany(sql, rows).rowcount
            except sqlite3.Error as exc:
                raise self._failure(f"failed running {sql.split(None, 1)[0]}", exc) from exc

    def close(self) -> None:
        """Close this process's connection; the next statement opens a new one."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                if self._pid == os.getpid():
                    db.close()
                else:
                    _inherited.append(db)

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        if self._db is not None:
            # Forked without the fork hooks (a C extension's fork()): the parent's, not ours.
            _inherited.append(self._db)
            self._db = None
        try:
            db = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise self._failure("cannot be opened", exc) from exc
        self._db, self._pid = db, os.getpid()
        return db

    def _open(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL survives a crash of the process, only not of the machine.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(self.schema)
        except BaseException:
            db.close()
            raise
        return db

    def _failure(self, what: str, exc: BaseException) -> SQLiteFileError:
        return self.error(
            f"The {self.name} {self.path} {what}: {exc}. Check that its folder can be created and "
            "written to, that the disk has room, and that the file is a SQLite database (move a "
            "damaged one away).",
            self.path,
        )

    # -- fork ---------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        """With the lock held: close the connection unless this thread is inside a transaction."""
        db = self._db
        if db is not None and self._pid == os.getpid() and not db.in_transaction:
            db.close()
            self._db = None

    def _after_fork_in_child(self) -> None:
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.RLock()
        if self._db is not None:
            _inherited.append(self._db)
            self._db = None


#: Every live SQLiteFile, for the fork hooks.
_files: weakref.WeakSet[SQLiteFile] = weakref.WeakSet()
#: The files whose lock the parent holds across a fork.
_forking: list[SQLiteFile] = []
#: Connections inherited from a parent: never used or closed, and kept so CPython does not close them.
_inherited: list[sqlite3.Connection] = []


def _before_fork() -> None:
    # Waits for transactions in other threads, so that no connection crosses the fork mid-way.
    for file in list(_files):
        file._lock.acquire()
        _forking.append(file)
        file._before_fork()


def _after_fork_in_parent() -> None:
    while _forking:
        _forking.pop()._lock.release()


def _after_fork_in_child() -> None:
    _forking.clear()
    for file in list(_files):
        file._after_fork_in_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
