"""The bench's Flask app, and a plain Celery app with one raw task: the baseline.

Both sides send the same payload and their workers run the same side effect
(:func:`bench.effect.touch`), so the only difference measured is flask-eventlib itself.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from flask import Flask, current_app

from flask_eventlib import EventLib, log

from .effect import touch

#: The raw baseline task's name.
RAW_TASK = "bench.raw_ping"
#: Settings both sides' workers share: no remote control, so nothing outlives a run in Redis.
WORKER_SETTINGS: dict[str, Any] = {"worker_enable_remote_control": False}


def payload(config: Any, n: int) -> dict[str, Any]:
    """The data of the ``n``-th event: the same for ``log()`` and the raw ``delay()``."""
    return {"key": config["BENCH_KEY"], "n": n, "total": config["BENCH_TOTAL"]}


def create_raw_celery(broker_url: str, queue: str) -> tuple[Celery, Any]:
    """A Celery app as one would write it without flask-eventlib: one task per event, JSON."""
    celery = Celery("bench-raw", broker=broker_url, set_as_current=False)
    celery.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        **WORKER_SETTINGS,
    )

    @celery.task(name=RAW_TASK, shared=False)
    def raw_ping(data: dict[str, Any]) -> None:
        touch(data["key"], data.get("total", 0))

    return celery, raw_ping


def create_app(**config: Any) -> tuple[Flask, EventLib]:
    """The bench app. ``config`` needs ``EVENTLIB_BROKER_URL``, ``BENCH_KEY`` and ``BENCH_RAW_QUEUE``.

    Routes: ``/log/<count>`` logs ``count`` events, ``/delay/<count>`` sends ``count`` raw tasks,
    ``/bare`` only answers 204; the extension adds ``POST /event/log``.
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
    raw_celery, raw_task = create_raw_celery(app.config["EVENTLIB_BROKER_URL"], app.config["BENCH_RAW_QUEUE"])
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

    return app, eventlib
