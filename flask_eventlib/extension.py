"""``EventLib``: the Flask extension that wires the core to an app, and the ``log()`` callers use."""

from __future__ import annotations

import atexit
import copy
import importlib
import logging
import os
import weakref
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, has_request_context, request

from . import config
from .dispatch import Dispatcher
from .exceptions import ConfigurationError
from .publishing import Sender, Spool
from .registry import Registry, default_registry
from .serialization import Codec, default_codec
from .store import MemoryStore, Store, store_from_url
from .tasks import bind_task, create_celery, filesystem_broker_settings, make_schedule_retry, make_send

logger = logging.getLogger("flask_eventlib")

EXTENSION_KEY = "eventlib"
_VIEWS_MODULE = f"{__package__}.ingest.view"


@dataclass
class _State:
    """What ``init_app`` sets up for one Flask app, kept in ``app.extensions["eventlib"]``."""

    extension: EventLib
    dispatcher: Dispatcher
    celery: Any
    task: Any
    retry_task: Any
    queue: str
    sender: Sender
    store: Store | None
    batch_requests: bool
    send_on_failed_request: bool

    def publish(self, messages: list[str]) -> None:
        """Inside a request, keep events for the request's end; elsewhere hand them to the sender."""
        if self.batch_requests and has_request_context():
            buffered = request.__dict__.setdefault(_BUFFER, [])
            buffered.extend(messages)
        else:
            self.sender.submit(messages)

    def after_request(self, response: Response) -> Response:
        if _BUFFER in request.__dict__:
            request.__dict__[_STATUS] = response.status_code
        return response

    def teardown_request(self, error: BaseException | None) -> None:
        """Send the request's events: one hand-over to the sender, which publishes them together."""
        buffered = request.__dict__.pop(_BUFFER, None)
        if not buffered:
            return
        failed = error is not None or request.__dict__.get(_STATUS, 500) >= 400
        if failed and not self.send_on_failed_request:
            logger.info("Discarded %d events of a failed request (EVENTLIB_SEND_ON_FAILED_REQUEST)", len(buffered))
            return
        self.sender.submit(buffered)


_BUFFER = "_eventlib_events"
_STATUS = "_eventlib_status"


class EventLib:
    """The flask-eventlib extension.

    ::

        eventlib = EventLib(app)            # or EventLib() and later eventlib.init_app(app)
        celery = eventlib.celery            # for `celery -A yourmodule:celery worker`

    :param app: the Flask app to initialise now.
    :param celery: a Celery app to use; by default one is created from ``EVENTLIB_BROKER_URL``.
    :param registry: the event registry (default: the process-wide one).
    :param codec: the serialization codec (default: the one ``register_type`` adds to).
    :param overrides: settings that beat ``app.config``, named without the ``EVENTLIB_`` prefix,
        e.g. ``EventLib(app, always_eager=True)``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        celery: Any = None,
        registry: Registry | None = None,
        codec: Codec | None = None,
        **overrides: Any,
    ) -> None:
        self._overrides = {config.key_for(name): value for name, value in overrides.items()}
        self._celery = celery
        self._last_celery: Any = None
        self.registry = registry if registry is not None else default_registry
        self.codec = codec if codec is not None else default_codec
        if app is not None:
            self.init_app(app)

    @property
    def celery(self) -> Any:
        """The Celery app in use: the current Flask app's, else the one last set up."""
        try:
            state = current_app.extensions.get(EXTENSION_KEY)
        except RuntimeError:
            state = None
        if state is not None and state.extension is self:
            return state.celery
        celery = self._celery if self._celery is not None else self._last_celery
        if celery is None:
            raise ConfigurationError(
                "EventLib.celery is made by init_app(app): initialise the extension first, or "
                "pass celery= to EventLib()"
            )
        return celery

    def init_app(self, app: Flask) -> None:
        """Configure ``app``: read settings, discover events, bind the Celery task."""
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                f"EventLib is already initialised on the Flask app {app.name!r}; call init_app() "
                "once per app (create the app again, e.g. with a factory, to reconfigure it)."
            )
        for key, value in self._overrides.items():
            app.config[key] = value
        for key, default in config.DEFAULTS.items():
            app.config.setdefault(key, copy.deepcopy(default))
        conf = app.config
        queue = conf[config.QUEUE]

        for module in conf[config.HANDLER_MODULES]:
            importlib.import_module(module)
        self._discover(app)

        # A Celery app passed in serves every Flask app; otherwise each Flask app gets its own.
        celery = self._celery if self._celery is not None else self._create_celery(app, queue)
        self._last_celery = celery
        eager = bool(conf[config.ALWAYS_EAGER])

        def run(messages: list[str]) -> None:
            with app.app_context():
                state.dispatcher.process(messages)

        def retry(message: str, handler: str, attempt: int, first_failed_at: float | None) -> None:
            with app.app_context():
                state.dispatcher.process_retry(message, handler, attempt, first_failed_at)

        task, retry_task = bind_task(celery, queue, run, retry)
        store = self._create_store(app, celery, eager)
        spool_path = conf[config.SPOOL_PATH] or os.path.join(app.instance_path, "eventlib-spool.sqlite3")
        sender = Sender(
            make_send(celery, queue, float(conf[config.PUBLISH_TIMEOUT])),
            spool=Spool(spool_path, int(conf[config.SPOOL_MAX_EVENTS])),
            max_batch=int(conf[config.MAX_EVENTS_PER_MESSAGE]),
            retry_interval=float(conf[config.PUBLISH_TIMEOUT]) / 2 or 0.5,
            linger=float(conf[config.PUBLISH_LINGER]),
        )
        _flush_at_exit(sender)
        dispatcher = Dispatcher(
            self.registry,
            self.codec,
            _unset_publish,
            eager=eager,
            propagate=bool(conf[config.PROPAGATE_ERRORS]),
            store=store,
            schedule_retry=make_schedule_retry(retry_task, queue),
            retries=int(conf[config.RETRIES]),
            backoff=float(conf[config.RETRY_BACKOFF]),
            backoff_max=float(conf[config.RETRY_BACKOFF_MAX]),
            dedup_ttl=float(conf[config.DEDUP_TTL]),
        )
        state = _State(
            extension=self,
            dispatcher=dispatcher,
            celery=celery,
            task=task,
            retry_task=retry_task,
            queue=queue,
            sender=sender,
            store=store,
            batch_requests=bool(conf[config.BATCH_REQUESTS]) and not eager,
            send_on_failed_request=bool(conf[config.SEND_ON_FAILED_REQUEST]),
        )
        dispatcher.publish = state.publish
        app.extensions[EXTENSION_KEY] = state
        app.after_request(state.after_request)
        app.teardown_request(state.teardown_request)

        from .cli import eventlib_cli

        app.cli.add_command(eventlib_cli)

        if conf[config.HTTP_ENABLED]:
            from .ingest import init_http

            try:
                init_http(app)
            except Exception:
                del app.extensions[EXTENSION_KEY]  # not half set up: a second init_app may try again
                raise

    def _discover(self, app: Flask) -> None:
        for blueprint in app.blueprints.values():
            if blueprint.import_name == _VIEWS_MODULE:
                continue  # the extension's own /event/log blueprint holds no events
            self.registry.discover(blueprint.name, _package_of(blueprint.import_name))
        modules = app.config[config.EVENT_MODULES]
        if not isinstance(modules, dict):
            raise ConfigurationError(
                f"{config.EVENT_MODULES} must be a dict of {{'label': 'dotted.module'}}, not {modules!r}"
            )
        for label, module in modules.items():
            self.registry.register_module(label, module)

    def _create_store(self, app: Flask, celery: Any, eager: bool) -> Store:
        url = app.config[config.STORE_URL]
        if url:
            return store_from_url(url)
        if eager:
            return MemoryStore()
        broker = str(celery.conf.broker_url or "")
        if broker.startswith(("redis://", "rediss://")):
            return store_from_url(broker)
        os.makedirs(app.instance_path, exist_ok=True)
        return store_from_url("sqlite:///" + os.path.join(app.instance_path, "eventlib-store.sqlite3"))

    def _create_celery(self, app: Flask, queue: str) -> Any:
        conf = app.config
        settings = {"broker_connection_timeout": float(conf[config.PUBLISH_TIMEOUT])}
        settings.update(conf[config.CELERY_CONFIG])
        broker_url = conf[config.BROKER_URL]
        if not broker_url:
            folder = conf[config.FILESYSTEM_BROKER_DIR] or os.path.join(app.instance_path, "eventlib-broker")
            for sub in ("queue", "control"):
                os.makedirs(os.path.join(folder, sub), exist_ok=True)
            broker_url = "filesystem://"
            settings = {**filesystem_broker_settings(folder), **settings}
        return create_celery(app.import_name, broker_url=broker_url, queue=queue, settings=settings)


def _unset_publish(messages: list[str]) -> None:  # pragma: no cover - replaced by init_app
    raise RuntimeError("init_app() did not finish")


def _package_of(import_name: str) -> str:
    """The package a blueprint's module belongs to (the module itself if it is a package)."""
    module = importlib.import_module(import_name)
    if hasattr(module, "__path__"):
        return import_name
    return import_name.rpartition(".")[0]


def _state() -> _State:
    try:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError:
        raise ConfigurationError(
            "log() needs a Flask application context: call it in a request, a CLI command, or "
            "inside `with app.app_context():`."
        ) from None
    try:
        return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise ConfigurationError(
            f"EventLib is not initialised on the Flask app {app.name!r}: call EventLib(app) or "
            "eventlib.init_app(app) in your app factory."
        ) from None


def log(name: str, data: dict[str, Any] | None = None) -> str:
    """Log the event ``name`` with ``data``; return the new event's id.

    The event is found, built from a copy of ``data``, cleaned, serialized and sent to the
    workers (processed at once in eager mode). Needs an application context.

    :raises EventNotFound: for an unknown event name.
    :raises ValidationError: when the event's ``clean()`` or schema refuses the data.
    :raises TypeError: when a value cannot be serialized (the message names the key).
    """
    return _state().dispatcher.log(name, data)


def flush(timeout: float | None = 10.0) -> bool:
    """Wait until the current app's events logged so far are published (or spooled).

    ``log()`` hands events to a background sender and returns at once; call this before a
    short script exits, or in a test before looking at the broker. Needs an app context.

    :returns: ``False`` if ``timeout`` seconds passed first.
    """
    return _state().sender.flush(timeout)


_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


def _flush_at_exit(sender: Sender) -> None:
    _senders.add(sender)


@atexit.register
def _flush_all() -> None:
    for sender in list(_senders):
        try:  # one sender's failure must not keep the others from flushing
            if not sender.flush(timeout=5.0):
                logger.error("flask-eventlib: %d events were not sent before exit", sender.pending())
        except Exception:
            logger.exception("flask-eventlib: a sender failed to flush at exit")


def get_dispatcher() -> Dispatcher:
    """The current app's :class:`~flask_eventlib.dispatch.Dispatcher`."""
    return _state().dispatcher
