"""The bench's Flask app, and a plain Celery app with one raw task: the baseline.

Both sides send the same payload and their workers run the same side effect
(:func:`bench.effect.touch`), so the only difference measured is flask-eventlib itself.
"""

from __future__ import annotations

from typing import Any

import orjson
from celery import Celery
from flask import Flask, current_app, request

from flask_eventlib import EventLib, log
from flask_eventlib.ids import new_event_id
from flask_eventlib.tasks import CRASH_SAFE_SETTINGS

from .effect import touch

#: The raw baseline task's name.
RAW_TASK = "bench.raw_ping"
#: The raw task that runs the side effect of each event of a list: Celery's ceiling for a message of events.
RAW_BATCH_TASK = "bench.raw_batch"
#: Settings both sides' workers share: no remote control, so nothing outlives a run in Redis.
WORKER_SETTINGS: dict[str, Any] = {"worker_enable_remote_control": False}


def payload(config: Any, n: int) -> dict[str, Any]:
    """The data of the ``n``-th event: the same for ``log()`` and the raw ``delay()``."""
    return {"key": config["BENCH_KEY"], "n": n, "total": config["BENCH_TOTAL"]}


def create_raw_celery(broker_url: str, queue: str, *, crash_safe: bool = False) -> tuple[Celery, Any]:
    """A Celery app as one would write it without flask-eventlib: one task per event, JSON.

    :param crash_safe: with flask-eventlib's worker settings (acks late, prefetch 1) instead of
        Celery's defaults (``BENCH_RAW_CRASH_SAFE``: the ceiling row 3c).
    """
    celery = Celery("bench-raw", broker=broker_url, set_as_current=False)
    celery.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        **WORKER_SETTINGS,
    )
    if crash_safe:
        celery.conf.update(CRASH_SAFE_SETTINGS)

    @celery.task(name=RAW_TASK, shared=False)  # type: ignore[untyped-decorator]  # Celery has no types
    def raw_ping(data: dict[str, Any]) -> None:
        touch(data["key"], data.get("total", 0))

    @celery.task(name=RAW_BATCH_TASK, shared=False)  # type: ignore[untyped-decorator]
    def raw_batch(items: list[dict[str, Any]]) -> None:
        # Nothing but the handlers' side effects: what any runner of a message of events adds
        # (decoding, dedup, isolating failures) comes on top of this.
        for data in items:
            touch(data["key"], data.get("total", 0))

    return celery, raw_ping


def create_app(**config: Any) -> tuple[Flask, EventLib]:
    """The bench app. ``config`` needs ``EVENTLIB_BROKER_URL``, ``BENCH_KEY`` and ``BENCH_RAW_QUEUE``.

    Routes: ``/log/<count>`` logs ``count`` events, ``/delay/<count>`` sends ``count`` raw tasks,
    ``/bare`` only answers 204; the extension adds ``POST /event/log``. Two floors, which do only
    what no implementation can skip: ``/floor/<count>`` writes ``count`` events to the local log
    and ``/parsed`` reads and parses a JSON body and answers as the ingest does.
    """
    from .ping import bp

    app = Flask(__name__)
    app.config.update(
        BENCH_TOTAL=0,
        EVENTLIB_RATE_LIMIT=None,
        EVENTLIB_CELERY_CONFIG=dict(WORKER_SETTINGS),
    )
    app.config.update(config)
    app.register_blueprint(bp)
    eventlib = EventLib(app)
    raw_celery, raw_task = create_raw_celery(
        app.config["EVENTLIB_BROKER_URL"],
        app.config["BENCH_RAW_QUEUE"],
        crash_safe=bool(app.config.get("BENCH_RAW_CRASH_SAFE")),
    )
    app.extensions["bench"] = raw_celery, raw_task

    @app.route("/log/<int:count>", methods=["GET", "POST"])
    def log_events(count: int) -> tuple[str, int]:
        for n in range(count):
            log("bench.Ping", payload(current_app.config, n))
        return "", 204

    @app.route("/delay/<int:count>", methods=["GET", "POST"])
    def delay_tasks(count: int) -> tuple[str, int]:
        for n in range(count):
            raw_task.delay(payload(current_app.config, n))
        return "", 204

    @app.route("/bare", methods=["GET", "POST"])
    def bare() -> tuple[str, int]:
        return "", 204

    local_log = app.extensions["eventlib"].sender.local_log

    @app.route("/floor/<int:count>", methods=["GET", "POST"])
    def floor(count: int) -> tuple[str, int]:
        """The least a durable ``log()`` does in a request: an id, the envelope dumped, an append
        to the local log; no lookup, validation, codec or hand-over. Released at once (the
        sender's work, off the request in ``log()``), so nothing of it is ever sent."""
        if local_log is None:  # durability "memory": no local log to write to
            return "", 501
        tickets = []
        last = None
        for n in range(count):
            envelope = {"v": 1, "id": new_event_id(), "name": "bench.Ping", "data": payload(current_app.config, n)}
            ticket = local_log.append([orjson.dumps(envelope).decode()], after=last)
            if ticket is not None and ticket is not last:
                tickets.append(ticket)
                last = ticket
        local_log.release(tickets)
        return "", 204

    @app.route("/parsed", methods=["POST"])
    def parsed() -> tuple[bytes, int, dict[str, str]]:
        """The least an ingest of JSON does: the body read and parsed, an answer of the same shape."""
        document = orjson.loads(request.get_data())
        accepted = [new_event_id()] if isinstance(document, dict) else []
        return orjson.dumps({"accepted": accepted, "errors": []}), 202, {"Content-Type": "application/json"}

    return app, eventlib
