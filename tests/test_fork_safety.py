"""A process forked while another thread of its parent is inside a Redis client's pool, or inside
a publish, can still use the client and publish (a gunicorn master with ``--preload`` forks
workers while its sender's thread recovers and publishes a dead worker's events). Real Redis,
real Celery and kombu, a real fork."""

from __future__ import annotations

import base64
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_eventlib import forks
from flask_eventlib.publishing import Sender
from flask_eventlib.resp import KeptConnection
from flask_eventlib.spool import Spool
from flask_eventlib.store import RedisStore
from flask_eventlib.tasks import make_send
from tests.conftest import REDIS_URL, ROOT, wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")


def fork_child(body: Callable[[], int]) -> int:
    """Fork; the child runs ``body`` (10 s at most) and exits with what it returns; the child's
    exit code: -14 (SIGALRM) for a child that waited forever, 1 for one that raised."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here, only an exit code
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler: the alarm ends it
        signal.alarm(10)
        try:
            code = body()
        except BaseException:
            os._exit(1)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def child_exit_code(pool: Any, use: Callable[[], object]) -> int:
    """Fork while another thread holds ``pool``'s lock, as the sender's thread inside
    ``get_connection()`` holds it when the main thread forks; in the child, ``use()`` must return
    within 10 s. The child's exit code, as :func:`fork_child` gives it."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with pool._lock:
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)

        def child() -> int:
            use()
            return 0

        return fork_child(child)
    finally:
        done.set()
        holder.join()


def test_a_child_forked_while_the_stores_pool_is_busy_reaches_redis() -> None:
    store = RedisStore(REDIS_URL, prefix=f"eventlib-test:fork:{uuid.uuid4().hex[:8]}:")
    store.client.ping()  # a connection of the parent's, which the child must not use
    assert child_exit_code(store.client.connection_pool, store.client.ping) == 0


def test_a_child_forked_while_the_senders_pool_is_busy_publishes(redis_client: redis.Redis) -> None:
    from celery import Celery

    queue = f"eventlib-test-fork-{uuid.uuid4().hex[:8]}"
    send = make_send(Celery(broker=REDIS_URL), queue, 2.0)
    kept = [cell.cell_contents for cell in send.__closure__ or () if isinstance(cell.cell_contents, KeptConnection)]
    assert len(kept) == 1  # the direct Redis path's connection
    try:
        send(['{"n": 1}'])
        assert child_exit_code(kept[0].client.connection_pool, lambda: send(['{"n": 2}'])) == 0
        assert redis_client.llen(queue) == 2  # the parent's message and the child's
    finally:
        redis_client.delete(queue)


def queued_events(client: redis.Redis, queue: str) -> list[str]:
    """The encoded events of the task messages in ``queue`` (kombu's envelope, Celery's body)."""
    bodies = [json.loads(base64.b64decode(json.loads(raw)["body"])) for raw in client.lrange(queue, 0, -1)]
    return [event for (args, _kwargs, _embed) in bodies for event in args[0]]


def test_a_child_forked_while_the_sender_is_inside_kombu_publishes(redis_client: redis.Redis) -> None:
    """kombu's ``cached_property`` takes one lock, shared by all Celery apps, on every read of
    ``app.amqp``, which every publish reads: a fork at that moment used to leave the child's first
    publish waiting forever (a CI run's gunicorn worker, forked by a ``--preload`` master)."""
    from celery import Celery

    celery = Celery(broker=REDIS_URL)
    queue = f"eventlib-test-fork-{uuid.uuid4().hex[:8]}"
    real_send = make_send(celery, queue, 2.0)
    amqp_lock = inspect.getattr_static(celery, "amqp").lock
    inside, gate = threading.Event(), threading.Event()
    sent: list[list[str]] = []

    def send(batch: list[str]) -> None:
        if not sent:  # the first publish is slow, and stops where kombu's lock is held
            with amqp_lock:
                inside.set()
                gate.wait(10)
        real_send(batch)
        sent.append(batch)

    sender = Sender(send)
    try:
        sender.submit(['{"n": 1}'])
        assert inside.wait(10)
        threading.Timer(0.3, gate.set).start()  # the broker answers while the fork waits

        def child() -> int:  # its own publish goes through; the parent's was done before the copy
            real_send(['{"n": 2}'])
            return 0 if sent else 2

        assert fork_child(child) == 0
        assert sender.flush(10)
        assert sorted(queued_events(redis_client, queue)) == ['{"n": 1}', '{"n": 2}']
    finally:
        gate.set()
        redis_client.delete(queue)


def test_a_fork_waits_for_a_publish_only_so_long_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(forks, "FORK_WAIT", 0.3)
    inside, gate = threading.Event(), threading.Event()

    def stuck() -> None:
        with forks.fork_waits():
            inside.set()
            gate.wait(30)

    thread = threading.Thread(target=stuck, name="a-stuck-publisher")
    thread.start()
    try:
        assert inside.wait(10)
        with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
            assert fork_child(lambda: 0) == 0
        assert "a fork waited 0.3s for the threads a-stuck-publisher" in caplog.text
        # Once the fork is done, sections open again at once, in this thread and in others.
        with forks.fork_waits():
            pass
    finally:
        gate.set()
        thread.join()


def test_a_child_forked_while_the_sender_drains_the_spool_reads_it(tmp_path: Path) -> None:
    """The drain publishes inside a spool transaction: a fork waits for the transaction (the
    SQLite file's hook), then for the publish, and the sender goes on draining afterwards."""
    spool = Spool(str(tmp_path / "spool.sqlite3"), 100)
    for n in range(3):
        spool.put([f"event {n}"])
    inside, gate, looked = threading.Event(), threading.Event(), threading.Event()
    sent: list[str] = []

    def send(batch: list[str]) -> None:
        if not sent:
            inside.set()
            gate.wait(10)
        elif not looked.is_set():
            # Until the child has looked, the drain's next attempts fail and roll back: the file
            # the child reads is the one the fork saw (the parent deletes no row meanwhile).
            raise ConnectionError("the broker is down until the child has looked")
        sent.extend(batch)

    sender = Sender(send, spool=spool, max_batch=1, retry_interval=0.05, recover_interval=0.05)
    sender.start()  # the spool's leftovers: it drains them first, a message per batch
    assert inside.wait(10)
    threading.Timer(0.3, gate.set).start()
    # Forked as the first publish ends and its transaction commits, never inside them.
    assert fork_child(lambda: 0 if sent == ["event 0"] and spool.pending() == 2 else 2) == 0
    looked.set()
    wait_for(lambda: sent == ["event 0", "event 1", "event 2"] and not spool.pending(), what="the drain to end")


def test_a_fork_takes_the_sqlite_locks_before_it_waits_for_publishes(tmp_path: Path) -> None:
    """A thread inside a transaction may then publish (the spool's drain): a fork that waited for
    publishes first, then for the transaction, would wait forever. Its own process, so a hang
    fails the test after a timeout instead of hanging the suite."""
    script = textwrap.dedent(
        f"""
        import os, threading
        from flask_eventlib import forks
        from flask_eventlib.sqlite import SQLiteFile

        file = SQLiteFile({str(tmp_path / "f.sqlite3")!r}, "CREATE TABLE IF NOT EXISTS t (x)")
        in_transaction, gate = threading.Event(), threading.Event()

        def drain():
            with file.transaction():
                file.execute("INSERT INTO t VALUES (1)")
                in_transaction.set()
                gate.wait(10)
                with forks.fork_waits():  # the publish, inside the transaction
                    pass

        thread = threading.Thread(target=drain)
        thread.start()
        in_transaction.wait(10)
        threading.Timer(0.3, gate.set).start()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if file.execute("SELECT count(*) FROM t") == [(1,)] else 2)
        _, status = os.waitpid(pid, 0)
        thread.join()
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a fork while a thread published inside a transaction waited forever")
    assert done.stdout.strip() == "child 0", done.stderr


def test_a_child_forked_while_the_claims_keeper_renews_can_hold_claims() -> None:
    """The keeper's thread holds its lock while it takes a snapshot of the claims: a child forked
    then (a handler starting a process) must still be able to hold the claims of its own runs."""
    from flask_eventlib.runner import _Keeper
    from flask_eventlib.store import MemoryStore

    keeper, store = _Keeper(), MemoryStore()
    keeper.hold("parent", [("e1", "h")], store, lease=30.0)
    holding, done = threading.Event(), threading.Event()

    def snapshot() -> None:  # as _renew holds it
        with keeper._lock:
            holding.set()
            done.wait(30)

    thread = threading.Thread(target=snapshot)
    thread.start()
    try:
        assert holding.wait(10)

        def child() -> int:
            keeper.hold("child", [("e2", "h")], store, lease=30.0)
            return 0 if set(keeper._held) == {"child"} else 2  # the parent's claims are the parent's

        assert fork_child(child) == 0
    finally:
        done.set()
        thread.join()
