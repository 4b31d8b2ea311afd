"""Redis stopped while a Flask app logs events: no log() raises or waits, every event arrives."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from flask_eventlib.spool import Spool
from tests.chaos.conftest import CHAOS_EVENTS, PrivateRedis
from tests.conftest import REDIS_URL, start_worker, stop_process, wait_for, wait_worker_ready
from tests.sample import create_app


def test_redis_outage_during_requests_loses_nothing(
    private_redis: PrivateRedis, redis_client: redis.Redis, tmp_path: Path, chaos_report: list[str]
) -> None:
    queue = f"eventlib-chaos-outage-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"  # dedup state on the main Redis
    spool_path = tmp_path / "spool.sqlite3"
    app = create_app(
        EVENTLIB_BROKER_URL=private_redis.url,
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        EVENTLIB_SPOOL_PATH=str(spool_path),
        EVENTLIB_PUBLISH_TIMEOUT=1.0,
        SAMPLE_RECORD_KEY=record_key,
    )

    @app.post("/work")
    def work() -> tuple[str, int]:
        from flask_eventlib import log

        log("ops.Work", {"ms": 0})
        return "", 204

    client = app.test_client()
    timeout = app.config["EVENTLIB_PUBLISH_TIMEOUT"]
    durations: list[float] = []
    statuses: set[int] = set()
    spooled_during_outage = 0
    for n in range(CHAOS_EVENTS):
        if n == CHAOS_EVENTS * 3 // 10:
            private_redis.kill()
        if n == CHAOS_EVENTS * 7 // 10:
            # The outage lasts until the sender has met it and spooled what it could not send.
            spooled_during_outage = wait_for(lambda: Spool(str(spool_path)).pending(), what="events in the spool")
            private_redis.start()
        started = time.perf_counter()
        statuses.add(client.post("/work").status_code)
        durations.append(time.perf_counter() - started)
    assert statuses == {204}
    assert max(durations) < timeout
    assert spooled_during_outage > 0, "the outage spooled nothing: was Redis really down?"

    sender = app.extensions["eventlib"].sender
    wait_for(lambda: sender.pending() == 0, timeout=60, what="the spool to drain into the restarted Redis")

    log_path = tmp_path / "worker.log"
    # One worker child: a publish cut off by the kill may have landed and is sent again from the
    # spool; dedup runs such a duplicate's handlers once when the copies come one after the other.
    # Two children could run both copies at the same moment (the window the README names).
    worker = start_worker(
        private_redis.url, queue, record_key, log_path, "--concurrency=1", env={"SAMPLE_STORE_URL": store_url}
    )
    runs_key = f"{record_key}:runs"
    try:
        wait_worker_ready(worker, log_path)
        wait_for(
            lambda: redis_client.hlen(runs_key) >= CHAOS_EVENTS, timeout=120, interval=0.2, what="all events to run"
        )
        runs = [int(v) for v in redis_client.hvals(runs_key)]
        durations.sort()
        chaos_report.append(
            f"Redis outage ({CHAOS_EVENTS} requests, Redis killed for 40% of them): logged {CHAOS_EVENTS}, "
            f"processed {len(runs)}, lost {CHAOS_EVENTS - len(runs)}, duplicated {sum(runs) - len(runs)}; "
            f"spooled during the outage {spooled_during_outage}; "
            f"request p50 {durations[len(durations) // 2] * 1e3:.2f} ms, "
            f"max {durations[-1] * 1e3:.2f} ms (timeout {timeout * 1e3:.0f} ms)"
        )
        assert len(runs) == CHAOS_EVENTS and sum(runs) == CHAOS_EVENTS
    finally:
        stop_process(worker)
        for key in redis_client.scan_iter(f"{record_key}*"):
            redis_client.delete(key)
