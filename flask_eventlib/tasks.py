"""Celery glue: the events task and the Celery settings it needs. Only this module imports Celery."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

logger = logging.getLogger("flask_eventlib")

#: The name of the task that processes events, the same in every process.
TASK_NAME = "flask_eventlib.process_events"


def create_celery(name: str, *, broker_url: str, queue: str, settings: dict[str, Any]) -> Celery:
    """A Celery app for events: JSON only, events queue as the default queue."""
    celery = Celery(name, broker=broker_url, set_as_current=False)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_default_queue=queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    celery.conf.update(settings)
    return celery


def filesystem_broker_settings(folder: str) -> dict[str, Any]:
    """Settings for kombu's filesystem transport rooted at ``folder`` (no server needed)."""
    return {
        "broker_transport_options": {
            "data_folder_in": f"{folder}/queue",
            "data_folder_out": f"{folder}/queue",
            "control_folder": f"{folder}/control",
            "polling_interval": 0.1,
            "store_processed": False,
        },
    }


def bind_task(celery: Celery, queue: str, run: Callable[[list[str]], Any]) -> Any:
    """Register the events task on ``celery`` and make its workers consume ``queue``.

    :param run: processes a list of encoded events (inside the Flask app context).
    """
    if "json" not in _accepted(celery):
        raise ValueError(
            f"The Celery app {celery.main!r} does not accept JSON messages (accept_content="
            f"{celery.conf.accept_content!r}); flask-eventlib sends JSON only: add 'json'."
        )
    if "pickle" in _accepted(celery) or "application/x-python-serialize" in _accepted(celery):
        logger.warning(
            "The Celery app %r accepts pickle; flask-eventlib sends events as JSON only, but a "
            "worker that accepts pickle runs code from any message. Set accept_content=['json'].",
            celery.main,
        )

    # One task per name per Celery app: a second bind (another Flask app on the same Celery app)
    # replaces the runner, not the task.
    celery.__dict__["_eventlib_run"] = run
    task = celery.task(name=TASK_NAME, bind=True, shared=False, ignore_result=True, serializer="json")(process_events)
    _consume(celery, queue)
    return task


def process_events(task: Any, messages: list[str]) -> int:
    """The events task: hand a list of encoded events to the runner bound to this Celery app."""
    if not isinstance(messages, list):
        messages = [messages]
    task.app.__dict__["_eventlib_run"](messages)
    return len(messages)


def _accepted(celery: Celery) -> set[str]:
    return set(celery.conf.accept_content or ())


def _consume(celery: Celery, queue: str) -> None:
    """Route the events task to ``queue`` and add it to the queues a plain worker consumes."""
    routes = celery.conf.task_routes
    if routes is None or isinstance(routes, dict):
        celery.conf.task_routes = {**(routes or {}), TASK_NAME: {"queue": queue}}
    queues = celery.conf.task_queues
    if queues is None:
        default = celery.conf.task_default_queue
        names = [default] if default == queue else [default, queue]
        celery.conf.task_queues = [Queue(name, routing_key=name) for name in names]  # type: ignore[no-untyped-call]
    elif queue not in {q.name for q in queues}:
        celery.conf.task_queues = [*queues, Queue(queue, routing_key=queue)]  # type: ignore[no-untyped-call]
