"""Each Flask app is its own world: two apps in one process, each with its own ``deals.DealClick``
and handlers, never see each other's events or handlers (in the caller and in real workers)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask

from flask_eventlib import EventNotFound, log
from flask_eventlib.testing import check_events, handler_labels
from tests.conftest import BROKERS, REDIS_URL, Records, clean_up_run, start_worker, stop_process, wait_worker_ready
from tests.twoapps import create

OWN = {which: [f"{which}.DealClick.count", f"{which}.thank", f"{which}.everything"] for which in ("north", "south")}


def test_two_apps_in_one_process_each_run_only_their_own_handlers(records: Records) -> None:
    apps = {
        which: create(which, EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key)
        for which in ("north", "south")
    }
    ids = {}
    for which, app in apps.items():
        with app.app_context():
            ids[which] = log("deals.DealClick", {f"{which}_deal": 1})
    for which, event_id in ids.items():
        assert records.handlers_for(event_id) == OWN[which]
    # Each app validates with its own class: north's DealClick wants north_deal.
    with apps["north"].app_context(), pytest.raises(Exception, match="north_deal"):
        log("deals.DealClick", {"south_deal": 1})
    for which, app in apps.items():
        registry = app.extensions["eventlib"].registry
        assert registry.find("deals.DealClick").__module__ == f"tests.twoapps.{which}.deals.events"
        assert handler_labels(registry, "deals.DealClick") == [
            f"tests.twoapps.{which}.deals.events.DealClick.count",
            f"tests.twoapps.{which}.handlers.thank",
            f"tests.twoapps.{which}.handlers.everything",
        ]
        assert check_events(app) == []


def test_an_app_cannot_log_another_apps_events(records: Records) -> None:
    north = create("north", EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key)
    sample = __import__("tests.sample", fromlist=["create_app"]).create_app(
        EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key
    )
    with sample.app_context():
        log("ops.Work", {})
    with north.app_context(), pytest.raises(EventNotFound, match="There is no event named Work in the ops app"):
        log("ops.Work", {})
    assert not any(entry["handler"].startswith("north.") for entry in records.all())


@pytest.fixture(params=sorted(BROKERS))
def two_workers(
    request: pytest.FixtureRequest, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[tuple[dict[str, Flask], Records]]:
    """Both apps on a real broker, each with a real worker process that holds both apps."""
    broker_url = BROKERS[request.param]
    run = uuid.uuid4().hex[:8]
    record_key = f"eventlib-test:records:twoapps-{run}"
    store_url = f"{REDIS_URL}?prefix={record_key}:store:"
    queues = {which: f"eventlib-test-twoapps-{which}-{run}" for which in ("north", "south")}
    apps = {
        which: create(
            which,
            EVENTLIB_BROKER_URL=broker_url,
            EVENTLIB_QUEUE=queues[which],
            EVENTLIB_STORE_URL=store_url,
            SAMPLE_RECORD_KEY=record_key,
        )
        for which in ("north", "south")
    }
    env = {"SAMPLE_STORE_URL": store_url, **{f"TWOAPPS_{w.upper()}_QUEUE": q for w, q in queues.items()}}
    processes = []
    try:
        for which in ("north", "south"):
            log_path = tmp_path / f"{which}.log"
            command = [sys.executable, "-m", "celery", "-A", "tests.twoapps.worker:celery", "worker"]
            process = start_worker(
                broker_url,
                queues[which],
                record_key,
                log_path,
                command=command,
                env={**env, "TWOAPPS_WHICH": which},
            )
            processes.append(process)
            wait_worker_ready(process, log_path)
        yield apps, Records(redis_client, record_key)
    finally:
        for process in processes:
            stop_process(process)
        for which, app in apps.items():
            clean_up_run(redis_client, record_key, app, queues[which])


@pytest.mark.worker
def test_two_apps_with_their_own_workers_each_run_only_their_own_handlers(
    two_workers: tuple[dict[str, Flask], Records],
) -> None:
    apps, records = two_workers
    ids: dict[str, list[str]] = {"north": [], "south": []}
    for n in range(5):
        for which, app in apps.items():
            with app.app_context():
                ids[which].append(log("deals.DealClick", {f"{which}_deal": n}))
    for app in apps.values():
        with app.app_context():
            app.extensions["eventlib"].flush()
    for which, event_ids in ids.items():
        for event_id in event_ids:
            assert records.wait_handlers(event_id, 3) == OWN[which]
    assert len(records.all()) == 30  # nothing ran twice, and no app ran the other's handlers
