"""Celery glue: the events task and the Celery settings it needs. Only this module imports Celery."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

logger = logging.getLogger("flask_eventlib")

#: The name of the task that processes events, the same in every process.
TASK_NAME = "flask_eventlib.process_events"
#: The name of the task that runs one handler of one event again.
RETRY_TASK_NAME = "flask_eventlib.retry_handler"

#: Settings that make a worker crash lose nothing: a message is acknowledged only after its
#: handlers ran, and is redelivered when the worker process dies (SIGKILL, OOM) meanwhile.
CRASH_SAFE_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


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
        **CRASH_SAFE_SETTINGS,
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


def bind_task(
    celery: Celery,
    queue: str,
    run: Callable[[list[str]], Any],
    retry: Callable[[str, str, int, float | None], Any],
) -> tuple[Any, Any]:
    """Register the events tasks on ``celery`` and make its workers consume ``queue``.

    :param run: processes a list of encoded events (inside the Flask app context).
    :param retry: runs one handler of an encoded event again: ``(message, handler, attempt,
        first_failed_at)``.
    :returns: the events task and the retry task.
    """
    accepted = set(celery.conf.accept_content or ())
    if "json" not in accepted and "application/json" not in accepted:
        raise ValueError(
            f"The Celery app {celery.main!r} does not accept JSON messages (accept_content="
            f"{celery.conf.accept_content!r}); flask-eventlib sends JSON only: add 'json'."
        )
    if accepted & {"pickle", "application/x-python-serialize"}:
        logger.warning(
            "The Celery app %r accepts pickle; flask-eventlib sends events as JSON only, but a "
            "worker that accepts pickle runs code from any message. Set accept_content=['json'].",
            celery.main,
        )
    # One task per name per Celery app: a second bind (another Flask app on the same Celery app)
    # replaces the runners, not the tasks.
    celery.__dict__["_eventlib_run"] = run
    celery.__dict__["_eventlib_retry"] = retry
    options: dict[str, Any] = {
        "bind": True,
        "shared": False,
        "ignore_result": True,
        "serializer": "json",
        "acks_late": True,
        "reject_on_worker_lost": True,
    }
    task = celery.task(name=TASK_NAME, **options)(process_events)
    retry_task = celery.task(name=RETRY_TASK_NAME, **options)(retry_handler)
    _consume(celery, queue)
    return task, retry_task


def process_events(task: Any, messages: list[str]) -> int:
    """The events task: hand a list of encoded events to the runner bound to this Celery app."""
    if not isinstance(messages, list):
        messages = [messages]
    task.app.__dict__["_eventlib_run"](messages)
    return len(messages)


def retry_handler(task: Any, message: str, handler: str, attempt: int, first_failed_at: float | None) -> None:
    """The retry task: run one handler of one event again."""
    task.app.__dict__["_eventlib_retry"](message, handler, attempt, first_failed_at)


def make_send(celery: Celery, queue: str, timeout: float = 2.0) -> Callable[[list[str]], None]:
    """A function that publishes a list of encoded events as one message, on a kept connection.

    Meant for one thread (the sender's). It does not retry: a failure raises at once, so the
    caller can spool the events instead of blocking.

    :param timeout: on Redis, the longest wait for an answer: a broker that stops answering
        without closing the connection makes the publish fail (and the events go to the spool)
        instead of hanging the sender.
    """
    kept: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if str(celery.conf.broker_url or "").startswith(("redis://", "rediss://", "unix://")):
        transport_options = dict(celery.conf.broker_transport_options or {})
        transport_options.setdefault("socket_timeout", timeout)
        transport_options.setdefault("socket_connect_timeout", timeout)
        options["transport_options"] = transport_options

    def send(messages: list[str]) -> None:
        if kept.get("pid") != os.getpid():
            kept.clear()
        try:
            if "producer" not in kept:
                conn = celery.connection_for_write(**options)
                conn.ensure_connection(max_retries=0)  # fail at once: the sender spools instead
                kept.update(pid=os.getpid(), conn=conn, producer=conn.Producer(serializer="json"))
            celery.send_task(
                TASK_NAME,
                args=(messages,),
                queue=queue,
                producer=kept["producer"],
                retry=False,
                serializer="json",
                # Celery would otherwise build a repr of every event for its logs (~80 us a message).
                argsrepr=f"<{len(messages)} events>",
                kwargsrepr="{}",
            )
        except Exception:
            conn = kept.pop("conn", None)
            kept.clear()
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    logger.debug("Closing a failed broker connection raised", exc_info=True)
            raise

    return send


def make_schedule_retry(retry_task: Any, queue: str) -> Callable[[str, str, int, float | None, float], None]:
    """A function that sends one handler's retry to the workers after ``delay`` seconds."""

    def schedule(message: str, handler: str, attempt: int, first_failed_at: float | None, delay: float) -> None:
        retry_task.apply_async(
            args=(message, handler, attempt, first_failed_at),
            countdown=delay or None,
            queue=queue,
            serializer="json",
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )

    return schedule


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
