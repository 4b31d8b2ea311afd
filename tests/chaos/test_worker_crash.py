"""A worker killed with SIGKILL mid-handler loses nothing: another worker finishes the work."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest
import redis

from flask_eventlib import flush, log
from tests.chaos.conftest import CHAOS_EVENTS
from tests.conftest import (
    BROKERS,
    REDIS_URL,
    WORKER_CHILDREN,
    clean_up_run,
    start_worker,
    stop_process,
    wait_for,
    wait_worker_ready,
)
from tests.sample import create_app

#: Redis redelivers a dead worker's unacknowledged messages after this many seconds.
VISIBILITY_TIMEOUT = 5


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_sigkill_mid_handler_loses_no_event(
    broker: str, redis_client: redis.Redis, tmp_path: Path, chaos_report: list[str]
) -> None:
    queue = f"eventlib-chaos-{broker}-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    # Redis: redeliver after VISIBILITY_TIMEOUT, and look for abandoned messages every second
    # (kombu's default sweep runs about every 100 s).
    celery_config = {
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    }
    env = {"SAMPLE_STORE_URL": store_url, "SAMPLE_CELERY_CONFIG": json.dumps(celery_config)}
    app = create_app(
        EVENTLIB_BROKER_URL=BROKERS[broker],
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        EVENTLIB_CELERY_CONFIG=celery_config,
        SAMPLE_RECORD_KEY=record_key,
    )
    runs_key = f"{record_key}:runs"
    first = start_worker(BROKERS[broker], queue, record_key, tmp_path / "first.log", env=env)
    second = None
    try:
        wait_worker_ready(first, tmp_path / "first.log")
        with app.app_context():
            ids = [log("ops.Work", {"ms": 4}) for _ in range(CHAOS_EVENTS)]
            assert flush(30)
        # Kill the whole worker (main process and pool children) while handlers are running.
        wait_for(lambda: redis_client.hlen(runs_key) >= CHAOS_EVENTS // 4, what="a quarter of the events to run")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        done_at_kill = redis_client.hlen(runs_key)
        assert done_at_kill < CHAOS_EVENTS, "the worker finished before it was killed; nothing was in flight"

        second = start_worker(BROKERS[broker], queue, record_key, tmp_path / "second.log", env=env)
        wait_worker_ready(second, tmp_path / "second.log")
        wait_for(
            lambda: redis_client.hlen(runs_key) == CHAOS_EVENTS,
            timeout=60 + 3 * VISIBILITY_TIMEOUT,
            interval=0.2,
            what="every event to run after the restart",
        )
        runs = {k.decode(): int(v) for k, v in redis_client.hgetall(runs_key).items()}
        assert set(runs) == set(ids)
        duplicates = sum(runs.values()) - len(runs)
        chaos_report.append(
            f"worker SIGKILL ({broker}): logged {CHAOS_EVENTS}, processed {len(runs)}, "
            f"lost {CHAOS_EVENTS - len(runs)}, "
            f"duplicated {duplicates} (done before the kill: {done_at_kill})"
        )
        # Each child runs again the event it was cut off in, and those that finished in its last
        # mark interval (10 ms, handlers of at least 4 ms: two), whose marks were not written yet.
        interval_ms, handler_ms = 1000 * app.extensions["eventlib"].runner.mark_interval, 4  # the worker's too
        assert duplicates <= WORKER_CHILDREN * (1 + interval_ms // handler_ms)
    finally:
        stop_process(first)
        if second is not None:
            stop_process(second)
        clean_up_run(redis_client, record_key, app, queue)
