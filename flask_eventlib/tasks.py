"""Celery glue: the events task and the Celery settings it needs. Only this module imports Celery."""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown
from kombu import Queue  # type: ignore[attr-defined]
from kombu.transport import TRANSPORT_ALIASES

from . import resp
from .config import mask_url
from .exceptions import ConfigurationError
from .forks import this_process
from .ids import new_event_id
from .spool import Send

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


def check_broker_url(key: str, url: str) -> None:
    """Refuse a broker URL whose scheme names no kombu transport (a typo such as ``redsi://``).

    :raises ConfigurationError: naming ``key`` and ``url`` (its password masked).
    """
    for part in url.split(";"):
        scheme = part.strip().partition("://")[0]
        if scheme.partition("+")[0] not in TRANSPORT_ALIASES:
            raise ConfigurationError(
                f"{key} = {mask_url(url)!r}: {scheme!r} is not a broker kombu knows; use redis://host:6379/0, "
                f"amqp://user:password@host:5672// or one of {', '.join(sorted(TRANSPORT_ALIASES))}"
            )


def ensure_broker_folders(celery: Celery) -> None:
    """Make the embedded filesystem broker's folders, on first use rather than at ``init_app``."""
    if not str(celery.conf.broker_url or "").startswith("filesystem"):
        return
    options = celery.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        folder = options.get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)


def _worker_starts(sender: Any = None, **kwargs: Any) -> None:
    """A worker reads its broker's folders first thing: they must exist before it polls them."""
    celery = getattr(sender, "app", None)
    if celery is not None and celery in _bindings:
        ensure_broker_folders(celery)


worker_init.connect(_worker_starts, weak=False)


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


@dataclass(frozen=True)
class _Binding:
    """What one Celery app's events tasks run: the runners of the one Flask app bound to it."""

    owner: weakref.ReferenceType[Any]
    owner_name: str
    run: Callable[[list[str]], Any]
    retry: Callable[[str, str, int, float | None], Any]


#: Each Celery app's binding. Kept beside the Celery app, not inside it, and by weak reference, so
#: a Celery app that is dropped takes its binding with it.
_bindings: weakref.WeakKeyDictionary[Celery, _Binding] = weakref.WeakKeyDictionary()


def bind_task(
    celery: Celery,
    queue: str,
    run: Callable[[list[str]], Any],
    retry: Callable[[str, str, int, float | None], Any],
    *,
    owner: Any,
    owner_name: str,
) -> tuple[Any, Any]:
    """Register the events tasks on ``celery`` and make its workers consume ``queue``.

    :param run: processes a list of encoded events (inside the Flask app context).
    :param retry: runs one handler of an encoded event again: ``(message, handler, attempt,
        first_failed_at)``.
    :param owner: the Flask app whose events the tasks process. A Celery app serves one Flask
        app: a worker that takes a message cannot tell whose it is.
    :param owner_name: how errors name ``owner``.
    :returns: the events task and the retry task.
    :raises ConfigurationError: when another live Flask app is already bound to ``celery``.
    """
    accepted = set(celery.conf.accept_content or ())
    if "json" not in accepted and "application/json" not in accepted:
        raise ValueError(
            f"The Celery app {celery.main!r} does not accept JSON messages (accept_content="
            f"{celery.conf.accept_content!r}); flask-eventlib sends JSON only: add 'json'."
        )
    bound = _bindings.get(celery)
    if bound is not None and bound.owner() not in (None, owner):
        raise ConfigurationError(
            f"The Celery app {celery.main!r} already runs the events of the Flask app {bound.owner_name!r}; "
            f"{owner_name!r} needs a Celery app of its own: leave out celery= (each Flask app then gets one "
            "from its EVENTLIB_BROKER_URL), or pass another Celery app."
        )
    if accepted & {"pickle", "application/x-python-serialize"}:
        logger.warning(
            "The Celery app %r accepts pickle; flask-eventlib sends events as JSON only, but a "
            "worker that accepts pickle runs code from any message. Set accept_content=['json'].",
            celery.main,
        )
    _bindings[celery] = _Binding(weakref.ref(owner), owner_name, run, retry)
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


def _binding(celery: Celery) -> _Binding:
    try:
        return _bindings[celery]
    except KeyError:
        raise ConfigurationError(
            f"The Celery app {celery.main!r} has no Flask app bound: start the worker from the module "
            "that calls EventLib(app) (e.g. `celery -A shop.worker:celery worker`)."
        ) from None


def process_events(task: Any, messages: list[str]) -> int:
    """The events task: hand a list of encoded events to the runner bound to this Celery app."""
    if not isinstance(messages, list):
        messages = [messages]
    _binding(task.app).run(messages)
    return len(messages)


def retry_handler(task: Any, message: str, handler: str, attempt: int, first_failed_at: float | None) -> None:
    """The retry task: run one handler of one event again."""
    _binding(task.app).retry(message, handler, attempt, first_failed_at)


#: Seconds between two looks at the queue's depth where the publish does not tell it (RabbitMQ,
#: kombu's own Redis path): a look on a channel of its own, after a publish.
DEPTH_INTERVAL = 1.0


def make_send(celery: Celery, queue: str, timeout: float = 2.0) -> Send:
    """A function that publishes a list of encoded events as one message, on a kept connection,
    and returns how many messages then wait in ``queue`` where it knows (``None`` where not).

    Meant for one thread (the sender's). It does not retry: a failure raises at once, so the
    caller can spool the events instead of blocking. The depth comes with every publish on plain
    Redis (LPUSH answers it); elsewhere from a look at the queue at most every
    :data:`DEPTH_INTERVAL` seconds, after the publish. A look that fails is not the publish's
    failure: it answers ``None`` (the message is sent; spooling it too would send it twice).

    :param timeout: the longest wait for the broker. On Redis, for an answer: a broker that stops
        answering without closing the connection makes the publish fail (and the events go to
        the spool) instead of hanging the sender. On RabbitMQ, for connecting and for the
        broker's confirm of each publish: a publish not confirmed in time raises, and the kept
        connection is dropped, so the next batch reconnects.
    """
    direct = _direct_redis_send(celery, queue, timeout)
    if direct is not None:
        return direct
    kept: dict[str, Any] = {}
    options: dict[str, Any] = {}
    publish_options: dict[str, Any] = {}
    url = str(celery.conf.broker_url or "")
    amqp = url.startswith(("amqp://", "amqps://", "pyamqp://"))
    if url.startswith(("redis://", "rediss://", "unix://")):
        transport_options = dict(celery.conf.broker_transport_options or {})
        transport_options.setdefault("socket_timeout", timeout)
        transport_options.setdefault("socket_connect_timeout", timeout)
        options["transport_options"] = transport_options
    elif amqp:
        transport_options = dict(celery.conf.broker_transport_options or {})
        # A publish is only in the socket when basic.publish returns: what a partition swallows
        # then is lost without an error. With confirms it is the broker's ack that says "kept".
        transport_options.setdefault("confirm_publish", True)
        # The RPCs of a new connection (channel.open, confirm.select, queue.declare) wait with
        # no timeout of their own; socket timeouts bound them when the broker goes silent.
        transport_options.setdefault("read_timeout", timeout)
        transport_options.setdefault("write_timeout", timeout)
        options.update(transport_options=transport_options, connect_timeout=timeout)
        publish_options.update(timeout=timeout, confirm_timeout=timeout)

    def send(messages: list[str]) -> int | None:
        if kept.get("pid") != os.getpid():
            kept.clear()
        try:
            if "producer" not in kept:
                ensure_broker_folders(celery)
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
                **publish_options,
            )
        except Exception as exc:
            conn = kept.pop("conn", None)
            kept.clear()
            if conn is not None:
                try:
                    if amqp:
                        # A polite close waits for the broker's close-ok, which a partition never sends.
                        conn.collect()
                    else:
                        conn.close()
                except Exception:
                    logger.debug("Closing a failed broker connection raised", exc_info=True)
            if amqp and isinstance(exc, TimeoutError):  # py-amqp says only "timed out"
                raise TimeoutError(f"no confirm from the broker within {timeout}s") from exc
            raise
        now = time.monotonic()
        if now < kept.get("next_look", 0.0):
            return None
        kept["next_look"] = now + DEPTH_INTERVAL
        return _waiting_in(kept["conn"], queue)

    return send


def _waiting_in(conn: Any, queue: str) -> int | None:
    """How many messages wait in ``queue``, asked on a channel of its own (a refusal closes only
    that channel); ``None`` when the broker would not say."""
    try:
        channel = conn.channel()
        try:
            return _count(channel, queue)
        finally:
            channel.close()
    except Exception:
        logger.debug("Looking at the depth of the queue %r failed", queue, exc_info=True)
        return None


def _direct_redis_send(celery: Celery, queue: str, timeout: float) -> Send | None:
    """On a plain Redis broker, a ``send`` that writes the task message itself: one LPUSH on a
    kept connection, or ``None`` where kombu must do it (a failover list, TLS, a key prefix, other
    transport options this path does not know).

    Why: kombu's Redis transport builds a new ``redis.Redis`` client for every publish (about
    half of its ~800 us of CPU per message here) and reads the exchange's bindings from Redis
    first; the sender's thread shares the GIL and the CPU with the requests, so what it spends
    lands in them. The message is the one Celery and kombu would write (Celery's own
    ``as_task_v2`` builds the task headers and body; kombu's Redis envelope around them), so any
    Celery worker consumes it. The command is packed here and written in one ``sendall`` on a
    connection kept between messages (redis-py's ``lpush`` takes it from the pool and checks it
    each time, packs through several layers and writes a large value in three); its ids come from
    the event ids' pool, not ``uuid4()``, which reads the OS's randomness twice a message.
    """
    url = celery.conf.broker_url
    if not isinstance(url, str) or ";" in url or not url.startswith(("redis://", "unix://")):
        return None
    if celery.conf.broker_use_ssl or set(celery.conf.broker_transport_options or {}) - _DIRECT_SAFE_OPTIONS:
        return None
    import redis

    options = dict(celery.conf.broker_transport_options or {})
    options.pop("visibility_timeout", None)  # the workers' setting, not the client's
    options.setdefault("socket_timeout", timeout)
    options.setdefault("socket_connect_timeout", timeout)
    client = resp.fork_safe(redis.Redis.from_url(url, retry=None, **options))
    kept = resp.KeptConnection(client)
    origins: dict[int, str] = {}  # a forked child's tasks name it as their origin

    def send(messages: list[str]) -> int | None:
        try:
            conn = kept.get()
            pid = this_process[0]
            origin = origins.get(pid) or origins.setdefault(pid, f"gen{pid}@{socket.gethostname()}")
            task_id = new_event_id()
            task = celery.amqp.as_task_v2(
                task_id,
                TASK_NAME,
                args=(messages,),
                kwargs={},
                reply_to=celery.oid,
                origin=origin,
                # Celery would otherwise build a repr of every event for its logs (~80 us a message).
                argsrepr=f"<{len(messages)} events>",
                kwargsrepr="{}",
                ignore_result=None,  # as send_task passes it: the app's task_ignore_result decides
            )
            body = base64.b64encode(orjson.dumps(task.body)).decode()
            envelope = {
                "body": body,
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": task.headers,
                "properties": {
                    **task.properties,
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": new_event_id(),
                },
            }
            conn.send_packed_command([resp.pack("LPUSH", queue, orjson.dumps(envelope))], check_health=False)
            depth = conn.read_response()  # the list's length with this message: what waits for the workers
        except Exception:
            kept.drop()  # nothing to drop when no connection could be made
            raise
        return depth if isinstance(depth, int) else None

    return send


#: Transport options that change nothing in what the direct Redis path writes, or that it applies.
_DIRECT_SAFE_OPTIONS = frozenset(
    {"visibility_timeout", "socket_timeout", "socket_connect_timeout", "max_connections", "health_check_interval"}
)


def make_schedule_retry(celery: Celery, queue: str) -> Callable[[str, str, int, float | None, float], None]:
    """A function that sends one handler's retry to the workers after ``delay`` seconds."""

    def schedule(message: str, handler: str, attempt: int, first_failed_at: float | None, delay: float) -> None:
        celery.send_task(
            RETRY_TASK_NAME,
            args=(message, handler, attempt, first_failed_at),
            countdown=delay or None,
            queue=queue,
            serializer="json",
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )

    return schedule


def unbind(celery: Celery) -> None:
    """Forget the Flask app bound to ``celery`` (an ``init_app`` that failed after binding)."""
    _bindings.pop(celery, None)


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


# -- the console's view of the workers -------------------------------------------------------------


def queue_depth(celery: Celery, queue: str, timeout: float = 2.0) -> int:
    """How many messages wait in ``queue`` on ``celery``'s broker (0 for a queue not made yet).

    :raises Exception: the broker's, when it cannot be reached within ``timeout`` seconds.
    """
    from kombu.exceptions import ChannelError

    with celery.connection_for_read(connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=0)
        try:
            return _count(conn.default_channel, queue)
        except ChannelError:
            return 0  # no such queue yet: nothing was ever sent to it, or it was emptied and removed
        except Exception as exc:  # RabbitMQ's NotFound closes the channel: the same answer
            if getattr(exc, "code", None) == 404:
                return 0
            raise


def _count(channel: Any, queue: str) -> int:
    """The messages waiting in ``queue``, asked on ``channel``.

    kombu's own transports on other stores (Redis, the filesystem) count the queue itself: their
    passive declare first looks for its bindings, which it misses on Redis with a
    ``global_keyprefix``. A broker (RabbitMQ) answers a passive declare.

    :raises Exception: the broker's; a 404 (``ChannelError`` on kombu's transports) for a queue
        that is not there.
    """
    size = getattr(channel, "_size", None)
    if callable(size):
        return int(size(queue) or 0)
    _, count, _ = channel.queue_declare(queue=queue, passive=True)
    return int(count or 0)


#: Per Celery app: what to call in each worker process of it that runs tasks, when it starts and
#: when it stops.
_hooks: weakref.WeakKeyDictionary[Celery, list[tuple[Callable[[], None], Callable[[], None] | None]]] = (
    weakref.WeakKeyDictionary()
)


def on_worker_start(celery: Celery, start: Callable[[], None], stop: Callable[[], None] | None = None) -> None:
    """Call ``start`` in each process of a worker of ``celery`` that runs tasks, when it starts
    (each child of the prefork pool, or the worker's own process with the other pools), and
    ``stop`` when it stops (not when it is killed)."""
    _hooks.setdefault(celery, []).append((start, stop))


def _run_hooks(celery: Any, which: int) -> None:
    for hooks in _hooks.get(celery, ()):
        hook = hooks[which]
        if hook is None:
            continue
        try:
            hook()
        except Exception:
            logger.exception("flask-eventlib: a worker %s hook failed", "start" if which == 0 else "stop")


def _current_celery() -> Any:
    """In a prefork child, the worker's Celery app (the pool makes it current before it starts)."""
    from celery import current_app

    return current_app._get_current_object()


def _child_starts(**kwargs: Any) -> None:
    _run_hooks(_current_celery(), 0)


def _child_stops(**kwargs: Any) -> None:
    _run_hooks(_current_celery(), 1)


def _runs_tasks(consumer_or_worker: Any) -> bool:
    """Whether this process itself runs the tasks (any pool but prefork, whose children do)."""
    pool = getattr(consumer_or_worker, "pool", None)
    return pool is not None and "prefork" not in type(pool).__module__


def _worker_ready(sender: Any = None, **kwargs: Any) -> None:
    if _runs_tasks(sender):
        _run_hooks(getattr(sender, "app", None), 0)


def _worker_stops(sender: Any = None, **kwargs: Any) -> None:
    if _runs_tasks(sender):
        _run_hooks(getattr(sender, "app", None), 1)


worker_process_init.connect(_child_starts, weak=False)
worker_process_shutdown.connect(_child_stops, weak=False)
worker_ready.connect(_worker_ready, weak=False)
worker_shutdown.connect(_worker_stops, weak=False)
