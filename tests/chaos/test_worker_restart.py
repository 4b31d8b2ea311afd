"""``flask eventlib worker --restart``: a worker that dies is replaced, and a Redis restart loses no new event.

Each test runs the real command against a private redis-server, kills what production kills
(the worker's main process, the broker), and watches the supervisor bring the work back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask

from flask_eventlib import flush, log
from flask_eventlib.publishing import Spool
from tests.chaos.conftest import PrivateRedis
from tests.conftest import REDIS_URL, alive, start_worker, stop_process, wait_for
from tests.sample import create_app

SUPERVISED = [sys.executable, "-m", "flask", "--app", "tests.sample.worker:app", "eventlib", "worker", "--restart"]
#: Redis redelivers what a worker took but did not acknowledge after this many seconds.
VISIBILITY_TIMEOUT = 5
STARTED = re.compile(r"started the worker \(pid (\d+)\)")


@dataclass
class Run:
    """One supervised worker on a private Redis, and an app that logs to it."""

    app: Flask
    queue: str
    supervisor: subprocess.Popen[bytes]
    log_path: Path
    runs_key: str

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The pids of the workers the supervisor started, in order (it logs each)."""
        return [int(pid) for pid in STARTED.findall(self.log_text())]

    def wait_ready(self, count: int, timeout: float = 30) -> int:
        """Wait until the ``count``-th worker is ready (Celery's " ready." line); return its pid."""

        def ready() -> bool:
            if self.supervisor.poll() is not None:
                pytest.fail(f"The supervisor exited with {self.supervisor.returncode}:\n{self.log_text()}")
            return self.log_text().count(" ready.") >= count and len(self.worker_pids()) >= count

        wait_for(ready, timeout=timeout, what=f"worker number {count} to be ready (log: {self.log_path})")
        return self.worker_pids()[count - 1]


@pytest.fixture
def run(private_redis: PrivateRedis, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Run]:
    queue = f"eventlib-chaos-restart-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    # Dedup marks on the main Redis, so that they outlive the private one's restart.
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    celery_config = {
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    }
    app = create_app(
        EVENTLIB_BROKER_URL=private_redis.url,
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        EVENTLIB_SPOOL_PATH=str(tmp_path / "spool.sqlite3"),
        EVENTLIB_PUBLISH_TIMEOUT=1.0,
        EVENTLIB_CELERY_CONFIG=celery_config,
        SAMPLE_RECORD_KEY=record_key,
    )
    log_path = tmp_path / "supervisor.log"
    env = {"SAMPLE_STORE_URL": store_url, "SAMPLE_CELERY_CONFIG": json.dumps(celery_config)}
    supervisor = start_worker(private_redis.url, queue, record_key, log_path, command=SUPERVISED, env=env)
    this = Run(app, queue, supervisor, log_path, f"{record_key}:runs")
    try:
        yield this
    finally:
        pids = this.worker_pids()
        stop_process(supervisor)
        for pid in pids:  # a worker left behind by a failed test is killed with its pool
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for key in redis_client.scan_iter(f"{record_key}*"):
            redis_client.delete(key)


def test_a_worker_killed_with_sigkill_is_replaced_and_a_sigterm_stops_both(
    run: Run, redis_client: redis.Redis, chaos_report: list[str]
) -> None:
    first = run.wait_ready(1)
    # The Celery options reached the worker: start_worker names it after the queue.
    assert re.search(rf"{run.queue}@\S+ ready\.", run.log_text())
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)  # the worker's main process only, as the OOM killer picks it
    second = run.wait_ready(2)
    back_after = time.monotonic() - killed_at
    assert second != first
    assert f"the worker (pid {first}) was killed by SIGKILL" in run.log_text()

    with run.app.app_context():
        ids = [log("ops.Work", {"ms": 0}) for _ in range(20)]
        assert flush(10)
    wait_for(lambda: redis_client.hlen(run.runs_key) >= len(ids), timeout=20, what="the new worker to run the events")
    assert {key.decode() for key in redis_client.hkeys(run.runs_key)} == set(ids)

    # A SIGTERM to the supervisor alone: it passes it on, the worker stops warmly, both exit 0.
    stopped_at = time.monotonic()
    run.supervisor.send_signal(signal.SIGTERM)
    assert run.supervisor.wait(timeout=20) == 0, run.log_text()
    assert time.monotonic() - stopped_at < 20
    assert not alive(second), f"the worker {second} outlived its supervisor"
    text = run.log_text()
    assert f"SIGTERM: stopping the worker (pid {second})" in text
    assert f"the worker (pid {second}) exited with status 0 after the stop signal" in text
    assert len(run.worker_pids()) == 2  # nothing was started after the stop
    chaos_report.append(
        f"worker SIGKILL under --restart: a new worker was ready {back_after:.1f} s after the kill and ran "
        f"{len(ids)} of the {len(ids)} events logged afterwards; SIGTERM stopped both in "
        f"{time.monotonic() - stopped_at:.1f} s"
    )


def test_events_logged_after_a_redis_restart_are_all_processed(
    run: Run, private_redis: PrivateRedis, redis_client: redis.Redis, tmp_path: Path, chaos_report: list[str]
) -> None:
    run.wait_ready(1)
    spool = Spool(str(tmp_path / "spool.sqlite3"))
    before: list[str] = []
    during: list[str] = []
    after: list[str] = []
    with run.app.app_context():
        # Events flow the whole time: a backlog is queued and in the worker's hands when Redis dies.
        for _ in range(300):
            before.append(log("ops.Work", {"ms": 5}))
        wait_for(lambda: redis_client.hlen(run.runs_key) >= 20, what="the worker to be busy")
        private_redis.kill()
        for _ in range(100):
            during.append(log("ops.Work", {"ms": 5}))
        # Down until the sender has met the outage and spooled what it could not send.
        wait_for(spool.pending, what="events in the spool")
        private_redis.start()
        for _ in range(100):
            after.append(log("ops.Work", {"ms": 5}))
        assert flush(20)

    def processed(ids: list[str]) -> int:
        done = {key.decode() for key in redis_client.hkeys(run.runs_key)}
        return len(done.intersection(ids))

    wait_for(
        lambda: processed(after) == len(after),
        timeout=30,
        interval=0.2,
        what=f"every event logged after the restart to run (log: {run.log_path})",
    )
    # What was logged before the stop: the worker's unacknowledged messages come back after
    # VISIBILITY_TIMEOUT; one taken by BRPOP just before the stop may be lost (the README says so).
    deadline = time.monotonic() + 3 * VISIBILITY_TIMEOUT
    while processed(before) < len(before) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling with a deadline for a figure, not an assertion
    chaos_report.append(
        f"Redis restart under a supervised worker: processed {processed(after)} of the {len(after)} events "
        f"logged after the restart, {processed(during)} of the {len(during)} logged while it was down, "
        f"{processed(before)} of the {len(before)} logged before it stopped; "
        f"worker restarts: {len(run.worker_pids()) - 1}"
    )
    assert processed(during) == len(during)


def test_a_usage_error_is_not_restarted(tmp_path: Path) -> None:
    # No broker is reached: Celery refuses the option before it connects.
    log_path = tmp_path / "usage.log"
    process = start_worker(
        "", "unused", "unused", log_path, "--no-such-option", command=SUPERVISED, env={"SAMPLE_FS_DIR": str(tmp_path)}
    )
    try:
        assert process.wait(timeout=30) == 2
    finally:
        stop_process(process)
    text = log_path.read_text()
    assert "No such option '--no-such-option'" in text
    assert "a usage error: not starting it again" in text
    assert len(STARTED.findall(text)) == 1
