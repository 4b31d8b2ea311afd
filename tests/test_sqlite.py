"""One SQLite file through SQLiteFile, the spool and the store: first use, errors, threads, forks.

Real files in ``tmp_path`` and real ``os.fork()`` children; each test runs once per user of the
helper, so the spool and the store keep what the helper promises.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from flask_eventlib.exceptions import EventlibError
from flask_eventlib.spool import Spool, SpoolError
from flask_eventlib.sqlite import SQLiteFile, SQLiteFileError
from flask_eventlib.store import DeadLetter, SQLiteStore
from tests.conftest import wait_for
from tests.faults import BROKEN_SQLITE


class Through:
    """Rows written to one file through one object; subclasses pick the object."""

    #: What the object raises when its file fails.
    error: type[SQLiteFileError] = SQLiteFileError

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, n: int) -> None:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class BareFile(Through):
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__(path)
        self.file = SQLiteFile(path, "CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL);", timeout=timeout)

    def write(self, n: int) -> None:
        self.file.execute("INSERT INTO t VALUES (?)", (n,))

    def count(self) -> int:
        return int(self.file.execute("SELECT COUNT(*) FROM t")[0][0])

    def close(self) -> None:
        self.file.close()


class ThroughSpool(Through):
    error = SpoolError

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.spool = Spool(path)

    def write(self, n: int) -> None:
        self.spool.put([f"m{n}"])

    def count(self) -> int:
        return self.spool.pending()

    def close(self) -> None:
        self.spool.close()


class ThroughStore(Through):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.store = SQLiteStore(path)

    def write(self, n: int) -> None:
        now = time.time()
        self.store.add_dead_letter(
            DeadLetter(f"e{n}", "deals.DealClick", "h", "{}", "RuntimeError()", "", 1, now, now + n)
        )

    def count(self) -> int:
        return len(self.store.dead_letters())

    def close(self) -> None:
        self.store.close()


USERS: dict[str, type[Through]] = {"file": BareFile, "spool": ThroughSpool, "store": ThroughStore}


@pytest.fixture(params=USERS.values(), ids=USERS.keys())
def through(request: pytest.FixtureRequest) -> type[Through]:
    user: type[Through] = request.param
    return user


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "file.sqlite3")


def fork(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child, which exits 0 if it returned and 1 if it raised."""
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int, timeout: float = 30.0) -> int:
    """The child's exit code, waiting at most ``timeout`` seconds (then it is killed)."""
    try:
        _, status = wait_for(
            lambda: (done := os.waitpid(pid, os.WNOHANG))[0] and done, timeout=timeout, what=f"child {pid} to exit"
        )
    except BaseException:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def high_pipe() -> tuple[int, int]:
    """A pipe whose two ends have descriptor numbers far above those the process reuses.

    Once a CI run read ``b"\\x18"`` from a fresh pipe that only the child's ``b"1"`` should have
    reached (a write to a descriptor number a pipe had just reused, from something else in the
    test process, not found). Numbers of 600 and up are not handed out again by ``open()``
    meanwhile, so such a write cannot land in the handshake.
    """
    ends = os.pipe()
    try:
        return fcntl.fcntl(ends[0], fcntl.F_DUPFD, 600), fcntl.fcntl(ends[1], fcntl.F_DUPFD, 600)
    finally:
        for fd in ends:
            os.close(fd)


def receive(fd: int, timeout: float = 30.0) -> bytes:
    """One byte from ``fd``, waiting at most ``timeout`` seconds; ``b""`` once the writer is gone."""
    readable, _, _ = select.select([fd], [], [], timeout)
    assert readable, f"nothing arrived within {timeout}s"
    return os.read(fd, 1)


def rows_in(path: str, table: str) -> int:
    """Rows in a table, read with a connection of this test's own, as another process would."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


TABLES = {BareFile: "t", ThroughSpool: "spool", ThroughStore: "dead_letters"}


def test_nothing_is_created_until_first_use(through: type[Through], tmp_path: Path, path: str) -> None:
    user = through(path)
    assert not (tmp_path / "data").exists()
    user.write(1)
    assert os.path.isfile(path) and user.count() == 1
    user.close()


def test_a_forked_child_opens_its_own_connection_and_both_write(through: type[Through], path: str) -> None:
    user = through(path)
    user.write(0)  # the parent's connection is open when it forks

    def child() -> None:
        assert user.count() == 1
        user.write(1)
        user.write(2)
        assert user.count() == 3
        user.close()

    assert exit_code(fork(child)) == 0
    user.write(3)
    assert user.count() == 4
    assert rows_in(path, TABLES[through]) == 4
    user.close()


def test_a_parent_that_closes_while_its_child_writes_loses_none_of_the_childs_rows(
    through: type[Through], path: str
) -> None:
    # Had the child inherited the parent's connection state, the parent closing the file last
    # would delete the WAL under the child, and the child's later rows with it.
    user = through(path)
    user.write(0)
    from_child, to_parent = high_pipe()
    from_parent, to_child = high_pipe()

    def child() -> None:
        user.write(1)
        os.write(to_parent, b"1")
        assert receive(from_parent) == b"1"
        user.write(2)

    try:
        pid = fork(child)
        os.close(to_parent)  # the child's ends: a child that dies is then seen at once
        os.close(from_parent)
        assert receive(from_child) == b"1"
        user.close()
        os.write(to_child, b"1")
        assert exit_code(pid) == 0
    finally:
        for fd in (from_child, to_parent, from_parent, to_child):
            with contextlib.suppress(OSError):  # closed already
                os.close(fd)
    assert rows_in(path, TABLES[through]) == 3


#: Called by the fork hook below, which runs before flask_eventlib.sqlite's (registered earlier).
_before_fork: list[Callable[[], None]] = []
os.register_at_fork(before=lambda: [call() for call in _before_fork])


def test_a_fork_while_another_thread_is_in_a_transaction_waits_for_it(path: str) -> None:
    user = BareFile(path, timeout=5)  # a child wrongly left waiting for the parent's lock fails fast
    user.write(0)
    inside, finish = threading.Event(), threading.Event()

    def writer() -> None:
        with user.file.transaction():
            user.write(1)
            inside.set()
            finish.wait(30)
            user.write(2)

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(30)
    _before_fork.append(finish.set)  # the transaction ends only once the fork has begun
    try:

        def child() -> None:
            assert user.count() == 3  # the whole transaction, committed before the fork
            user.write(3)

        pid = fork(child)
    finally:
        _before_fork.remove(finish.set)
    thread.join(30)
    assert exit_code(pid) == 0
    user.write(4)
    assert user.count() == 5
    user.close()


def test_threads_writing_through_one_object_keep_every_row(through: type[Through], path: str) -> None:
    user = through(path)
    threads, writes = 8, 25
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work(first: int) -> None:
        start.wait(30)
        try:
            for n in range(first, first + writes):
                user.write(n)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(t * writes,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert failures == []
    assert user.count() == threads * writes
    assert rows_in(path, TABLES[through]) == threads * writes
    user.close()


BROKEN = BROKEN_SQLITE


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_a_file_that_cannot_be_opened_raises_one_clear_error_naming_it(
    through: type[Through], broken: Callable[[Path], str], tmp_path: Path
) -> None:
    path = broken(tmp_path)
    user = through(path)
    uses = [lambda: user.write(1), user.count]
    if through is ThroughSpool and not os.path.exists(path):
        assert user.count() == 0  # Spool.pending() of a file not made yet is 0, and makes nothing
        uses.pop()
    for use in uses:
        with pytest.raises(through.error, match=re.escape(path)) as caught:
            use()
        assert isinstance(caught.value, SQLiteFileError) and isinstance(caught.value, EventlibError)
        assert caught.value.path == path
        assert "cannot be opened" in str(caught.value)
    user.close()


def test_a_failing_statement_rolls_back_its_transaction_and_names_the_file(path: str) -> None:
    user = BareFile(path)
    with pytest.raises(SQLiteFileError, match=re.escape(path)):
        with user.file.transaction():
            user.write(1)
            user.file.execute("INSERT INTO missing VALUES (1)")
    with pytest.raises(ValueError, match="the block's own"):
        with user.file.transaction():
            user.write(2)
            raise ValueError("the block's own exception propagates as it is")
    user.write(3)
    assert user.count() == 1
    user.close()
