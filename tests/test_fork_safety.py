"""A process forked while another thread of its parent is inside a Redis client's pool can still
use the client (a gunicorn master with ``--preload`` forks workers while its sender's thread
recovers and publishes a dead worker's events). Real Redis, a real fork."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from flask_eventlib.resp import KeptConnection
from flask_eventlib.store import RedisStore
from flask_eventlib.tasks import make_send
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")


def child_exit_code(pool: Any, use: Callable[[], object]) -> int:
    """Fork while another thread holds ``pool``'s lock, as the sender's thread inside
    ``get_connection()`` holds it when the main thread forks; in the child, ``use()`` must return
    within 10 s. The child's exit code: 0, or -14 (SIGALRM) for a child that waited forever."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with pool._lock:
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: no pytest from here, only an exit code
            signal.alarm(10)
            try:
                use()
            except BaseException:
                os._exit(1)
            os._exit(0)
    finally:
        done.set()
        holder.join()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


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
