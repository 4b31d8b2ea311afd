"""Two deliveries of the same event at the same moment run each handler once (claims).

Real worker processes on each broker: two workers share a queue into which every message was
published twice, back to back; and a claim left by a worker that died holds its handler only
until its lease ends.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from flask import Flask

from flask_eventlib.tasks import TASK_NAME
from tests.chaos.conftest import CHAOS_EVENTS
from tests.conftest import (
    BROKERS,
    REDIS_URL,
    Records,
    clean_up_run,
    start_worker,
    stop_process,
    wait_for,
    wait_worker_ready,
)
from tests.sample import create_app

DEAL_HANDLERS = ["DealClick.first", "DealClick.second", "handlers.on_click", "handlers.audit"]
#: What the runner logs when it leaves handlers to another delivery's claim.
DEFERRED = re.compile(r"(\d+) handlers? of \d+ events? claimed by another delivery")
#: Celery's line for each retry task (here: each check of a deferred handler) that finished.
CHECKED = re.compile(r"Task flask_eventlib\.retry_handler\[[^\]]+\] succeeded")


def _run_setup(broker: str, redis_client: redis.Redis) -> tuple[str, str, str, dict[str, str]]:
    queue = f"eventlib-claims-{broker}-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    return queue, record_key, store_url, {"SAMPLE_STORE_URL": store_url}


def _app(broker: str, queue: str, record_key: str, store_url: str) -> Flask:
    return create_app(
        EVENTLIB_BROKER_URL=BROKERS[broker],
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        SAMPLE_RECORD_KEY=record_key,
    )


def _pairs(redis_client: redis.Redis, key: str) -> list[tuple[str, str]]:
    """The (event id, handler) of each record the sample handlers wrote."""
    return [(entry["id"], entry["handler"]) for entry in map(json.loads, redis_client.lrange(key, 0, -1))]


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_two_workers_given_every_message_twice_run_each_handler_once(
    broker: str, redis_client: redis.Redis, tmp_path: Path, chaos_report: list[str]
) -> None:
    queue, record_key, store_url, env = _run_setup(broker, redis_client)
    app = create_app(
        EVENTLIB_BROKER_URL=BROKERS[broker],
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        SAMPLE_RECORD_KEY=record_key,
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    workers = []
    try:
        for n, log_path in enumerate(logs):
            workers.append(
                start_worker(BROKERS[broker], queue, record_key, log_path, "--hostname", f"{queue}-{n}@%h", env=env)
            )
        for process, log_path in zip(workers, logs, strict=True):
            wait_worker_ready(process, log_path)
        state = app.extensions["eventlib"]
        # Each message: three clicks (four handlers each) and a Work event that takes 30 ms, so
        # the two copies of a message run at the same time in the two workers' four processes.
        messages = max(20, CHAOS_EVENTS // 25)
        clicks: list[str] = []
        works: list[str] = []
        with app.app_context():
            for _ in range(messages):
                events = [state.dispatcher.build("deals.DealClick", {"deal_id": n}) for n in range(3)]
                events.append(state.dispatcher.build("ops.Work", {"ms": 30}))
                clicks += [event.id or "" for event in events[:3]]
                works.append(events[3].id or "")
                encoded = [state.dispatcher.encode(event) for event in events]
                for _copy in range(2):
                    state.celery.send_task(TASK_NAME, args=(encoded,), queue=queue, serializer="json")
        runs_key = f"{record_key}:runs"

        def log_text() -> str:
            return "".join(path.read_text(errors="replace") for path in logs)

        def everything_ran() -> bool:
            done = set(_pairs(redis_client, record_key))
            return len(done) == len(clicks) * len(DEAL_HANDLERS) and redis_client.hlen(runs_key) == len(works)

        wait_for(everything_ran, timeout=90, interval=0.2, what="every handler of every event to run")

        def checks_settled() -> int:
            # Every deferred handler is checked again once its holder's lease would end (5 s in
            # the sample app): wait for all those checks, so that a check that ran a handler a
            # second time would show below.
            text = log_text()
            deferred = sum(int(n) for n in DEFERRED.findall(text))
            return deferred if deferred and len(CHECKED.findall(text)) == deferred else 0

        deferred = wait_for(checks_settled, timeout=90, interval=0.5, what="the deferred handlers' checks")
        records = Counter(_pairs(redis_client, record_key))
        runs = {k.decode(): int(v) for k, v in redis_client.hgetall(runs_key).items()}
        duplicated = sum(n - 1 for n in records.values()) + sum(n - 1 for n in runs.values())
        chaos_report.append(
            f"every message twice, two workers ({broker}): {messages} messages, {len(clicks) + len(works)} events, "
            f"{len(records) + len(runs)} (event, handler) pairs run, duplicated {duplicated}; "
            f"{deferred} handlers found claimed by the other copy and checked again later"
        )
        assert set(records) == {(event_id, handler) for event_id in clicks for handler in DEAL_HANDLERS}
        assert set(records.values()) == {1}, [pair for pair, n in records.items() if n > 1]
        assert set(runs) == set(works) and set(runs.values()) == {1}
    finally:
        for process in workers:
            stop_process(process)
        clean_up_run(redis_client, record_key, app, queue)


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_a_claim_left_by_a_dead_worker_ends_with_its_lease_and_the_handler_then_runs(
    broker: str, redis_client: redis.Redis, tmp_path: Path, chaos_report: list[str]
) -> None:
    queue, record_key, store_url, env = _run_setup(broker, redis_client)
    # Checks of a claimed handler at least every second (the longest backoff bounds their wait).
    env["SAMPLE_CONFIG"] = json.dumps({"EVENTLIB_RETRY_BACKOFF_MAX": 1.0})
    app = create_app(
        EVENTLIB_BROKER_URL=BROKERS[broker],
        EVENTLIB_QUEUE=queue,
        EVENTLIB_STORE_URL=store_url,
        SAMPLE_RECORD_KEY=record_key,
    )
    log_path = tmp_path / "worker.log"
    worker = start_worker(BROKERS[broker], queue, record_key, log_path, env=env)
    try:
        wait_worker_ready(worker, log_path)
        state = app.extensions["eventlib"]
        with app.app_context():
            event = state.dispatcher.build("deals.DealClick", {"deal_id": 1})
            event_id = event.id or ""
            # Another worker claimed "second" and still holds it (a long lease, for now).
            claim = f"{record_key}:store:claim:{event_id}:tests.sample.deals.events.DealClick.second"
            redis_client.set(claim, "a-worker-that-dies", px=60_000)
            state.celery.send_task(TASK_NAME, args=([state.dispatcher.encode(event)],), queue=queue)
        seen = Records(redis_client, record_key)
        # The other handlers run; "second" is left to its holder and checked again, again.
        wait_for(lambda: len(seen.for_id(event_id)) == 3, what="the three unclaimed handlers")
        wait_for(
            lambda: len(DEFERRED.findall(log_path.read_text(errors="replace"))) >= 2,
            what="the claimed handler to be checked again while its claim is held",
        )
        assert "DealClick.second" not in seen.handlers_for(event_id)
        # The holder dies: nothing renews its claim, which ends with its lease.
        redis_client.pexpire(claim, 300)
        handlers = seen.wait_handlers(event_id, 4)
        assert sorted(handlers) == sorted(DEAL_HANDLERS) and handlers[-1] == "DealClick.second"
        wait_for(lambda: not redis_client.exists(claim), what="the claim to be released")
        chaos_report.append(
            f"claim of a dead worker ({broker}): its handler ran once after the lease ended, "
            f"after {len(DEFERRED.findall(log_path.read_text(errors='replace')))} checks"
        )
        assert seen.handlers_for(event_id).count("DealClick.second") == 1
    finally:
        stop_process(worker)
        clean_up_run(redis_client, record_key, app, queue)
