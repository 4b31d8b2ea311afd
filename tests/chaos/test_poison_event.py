"""A handler that kills its worker (an OOM kill, a segfault) is dead-lettered; its neighbours run.

Five events travel in one message; the third one's ``kill`` handler SIGKILLs the worker process
running it, every time. Real workers, on each broker.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from flask_eventlib import flush
from flask_eventlib.store import DeadLetter, store_from_url
from tests.conftest import BROKERS, REDIS_URL, clean_up_run, start_worker, stop_process, wait_for, wait_worker_ready
from tests.sample import create_app

POISON = "tests.sample.ops.events.KillsItsWorker"


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_a_handler_that_kills_its_worker_is_dead_lettered_and_its_neighbours_run(
    broker: str, redis_client: redis.Redis, tmp_path: Path, chaos_report: list[str]
) -> None:
    queue = f"eventlib-poison-{broker}-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    # Kombu's default visibility_timeout (an hour), not the short one of test_worker_crash: here
    # only the pool process dies, and the worker's main process requeues its message itself
    # (reject_on_worker_lost) once it notices, within seconds. A short timeout also restores the
    # message from Redis's unacked hash meanwhile, and since a restored copy keeps its delivery
    # tag, the late requeue restores the copy then running: copies multiply and run side by side
    # (the old code was killed 46 to 127 times in 45 s so, against 10 to 19 on RabbitMQ).
    env = {"SAMPLE_STORE_URL": store_url}
    app = create_app(
        EVENTLIB_BROKER_URL=BROKERS[broker],
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        SAMPLE_RECORD_KEY=record_key,
    )
    store = store_from_url(store_url)
    log_path = tmp_path / "worker.log"
    worker = start_worker(BROKERS[broker], queue, record_key, log_path, env=env)
    try:
        wait_worker_ready(worker, log_path)
        state = app.extensions["eventlib"]
        with app.app_context():
            events = [state.dispatcher.build("ops.Work", {"ms": 0}) for _ in range(5)]
            events[2] = state.dispatcher.build("ops.KillsItsWorker")
            state.sender.submit([state.dispatcher.encode(event) for event in events])  # one message
            assert flush(30)
        poison = events[2].id or ""
        neighbours = [event.id or "" for event in events if event.id != poison]
        runs_key = f"{record_key}:runs"

        def runs() -> dict[str, int]:
            return {k.decode(): int(v) for k, v in redis_client.hgetall(runs_key).items()}

        def letters() -> list[DeadLetter]:
            return [letter for letter in store.dead_letters() if letter.event_id == poison]

        def settled() -> bool:
            ran = runs()
            return all(ran.get(n) for n in neighbours) and bool(ran.get(f"{poison}:after")) and bool(letters())

        try:
            wait_for(settled, timeout=45, interval=0.2, what="the neighbours to run and the poison to be dead-lettered")
        finally:
            ran, kills = runs(), int(redis_client.get(f"{record_key}:kills:{poison}") or 0)
            chaos_report.append(
                f"poison event ({broker}): the worker was killed {kills} times; "
                f"neighbours run {sum(1 for n in neighbours if ran.get(n))} of 4 "
                f"(after the poison: {sum(1 for n in neighbours[2:] if ran.get(n))} of 2); "
                f"dead letters {len(letters())}"
            )
        (letter,) = letters()
        assert letter.handler == f"{POISON}.kill"
        assert letter.attempts == 2  # the kill handler's retries=1, plus one
        assert "the worker died 2 times while running it" in letter.error
        assert letter.event_name == "ops.KillsItsWorker"
        # The first delivery ran the message at full speed and cannot tell which handler died;
        # the next ones counted each start: two deaths of kill, then the dead letter.
        assert int(redis_client.get(f"{record_key}:kills:{poison}") or 0) == 3
        ran = runs()
        # The two neighbours after the poison ran once. The two before it ran again with the second
        # delivery when they finished within the first's last mark interval (10 ms: handlers of
        # 0 ms do), so their marks were not written yet; with EVENTLIB_DEDUP_MARK_INTERVAL = 0, once.
        assert [ran.get(n) for n in neighbours[2:]] == [1, 1]
        assert all(ran.get(n) in (1, 2) for n in neighbours[:2])
        assert ran[f"{poison}:after"] == 1
        assert ran[f"{poison}:before"] == 2  # not yet marked done when the first delivery died
        assert worker.poll() is None, "the worker's main process died too"
    finally:
        stop_process(worker)
        store.close()
        clean_up_run(redis_client, record_key, app, queue)
