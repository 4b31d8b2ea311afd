"""The embedded filesystem broker with a real worker started by `flask eventlib worker`."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import redis

from flask_eventlib import log
from tests.conftest import Records, start_worker, stop_process, wait_worker_ready
from tests.sample import create_app


def test_flask_eventlib_worker_processes_events_over_the_filesystem_broker(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    folder = tmp_path / "broker"
    queue = f"eventlib-test-fs-{uuid.uuid4().hex[:8]}"
    records = Records(redis_client, f"eventlib-test:records:{queue}")
    app = create_app(EVENTLIB_FILESYSTEM_BROKER_DIR=str(folder), EVENTLIB_QUEUE=queue, SAMPLE_RECORD_KEY=records.key)
    assert app.extensions["eventlib"].celery.conf.broker_url == "filesystem://"
    log_path = tmp_path / "worker.log"
    process = start_worker(
        "",
        queue,
        records.key,
        log_path,
        command=[sys.executable, "-m", "flask", "--app", "tests.sample.worker:app", "eventlib", "worker"],
        env={"SAMPLE_FS_DIR": str(folder)},
    )
    try:
        wait_worker_ready(process, log_path)
        with app.app_context():
            first = log("deals.DealClick", {"deal_id": 1})
            second = log("users.SignedUp", {"email": "a@example.com", "plan": "pro"})
        assert records.wait_handlers(first, 4) == [
            "DealClick.first",
            "DealClick.second",
            "handlers.on_click",
            "handlers.audit",
        ]
        assert records.wait_handlers(second, 1) == ["SignedUp.welcome"]
    finally:
        stop_process(process)
        redis_client.delete(records.key)
