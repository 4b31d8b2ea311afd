"""``EventLib``: the Flask extension that builds one app's event library, and the ``log()`` callers use.

``init_app`` builds, for each Flask app and in dependency order, everything its events need: a
registry scanned from the app's modules, the codec, the Celery app and its tasks, the store, the
background sender, the publishing strategy, the caller's dispatcher and the workers' runner. They
are kept together in one public :class:`EventLibState` at ``app.extensions["eventlib"]``; nothing
is shared with another app in the same process, and nothing is patched after it is built.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, request

from . import config
from .dispatch import Dispatcher
from .exceptions import ConfigurationError
from .figures import Figures, sink_for
from .ingest import register_http
from .ingest.settings import settings_from_config
from .locallog import LocalLog
from .publishers import Background, Eager, Pending, Publisher, RequestBuffer, Router
from .publishing import Sender, Spool
from .registry import Registry
from .runner import Runner, Watcher, log_outcome
from .serialization import Codec, default_codec
from .state import EXTENSION_KEY, EventLibState, state_of
from .store import MemoryStore, Store, store_from_url
from .streams import StreamPublisher, default_url, matches
from .tasks import (
    bind_task,
    check_broker_url,
    create_celery,
    filesystem_broker_settings,
    make_schedule_retry,
    make_send,
    on_worker_start,
    unbind,
)

logger = logging.getLogger("flask_eventlib")

_VIEWS_MODULE = f"{__package__}.ingest.view"


class EventLib:
    """The flask-eventlib extension.

    ::

        eventlib = EventLib(app)            # or EventLib() and later eventlib.init_app(app)
        celery = eventlib.celery            # for `celery -A yourmodule:celery worker`

    :param app: the Flask app to initialise now.
    :param celery: a Celery app to use; by default one is created for each Flask app from its
        ``EVENTLIB_BROKER_URL``. A Celery app serves one Flask app.
    :param registry: deprecated: each app builds its own registry from its modules. Events and
        handlers registered in a registry given here are added to each app's registry.
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
        if registry is not None:
            warnings.warn(
                "EventLib(registry=...) is no longer needed: each app builds its own registry from its "
                "blueprints' events modules and EVENTLIB_HANDLER_MODULES. Leave it out; it will be removed.",
                DeprecationWarning,
                stacklevel=2,
            )
        self._extra = registry
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

    @property
    def user_options(self) -> Any:
        """Not a Celery app: what ``celery -A module:eventlib`` reaches first, so it says so.

        :raises ConfigurationError: always, naming the right ``-A`` target.
        """
        raise ConfigurationError(
            "celery -A was given the EventLib extension, not a Celery app. Point it at the Celery app: "
            "in a module that creates the Flask app, add `celery = eventlib.celery` and run "
            "`celery -A yourapp.worker:celery worker` (see shop/worker.py in the README), or run "
            "`flask --app yourapp.worker eventlib worker`."
        )

    def init_app(self, app: Flask) -> None:
        """Configure ``app``: read settings, build its registry and its way to the workers."""
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
        # Nothing is ignored: a misspelled key, a value of the wrong type or a URL that does not
        # parse fails here, in every process, rather than as events that never arrive.
        config.validate(conf)
        _warn_unread_environment(app)
        queue = conf[config.QUEUE]
        eager = bool(conf[config.ALWAYS_EAGER])

        # Every setting is checked before anything is registered on the app or the Celery app.
        http = settings_from_config(conf) if conf[config.HTTP_ENABLED] else None
        console = bool(conf[config.CONSOLE])
        if console:
            from . import console as console_pages

            console_pages.check_setup(app)
        registry = self._build_registry(app)
        # A Celery app passed in is used as it is; otherwise each Flask app gets its own.
        celery = self._celery if self._celery is not None else self._create_celery(app, queue)
        if not eager and str(celery.conf.broker_url or "").startswith("filesystem") and not (app.debug or app.testing):
            logger.warning(
                "The Flask app %r sends its events through the embedded filesystem broker in %s: events stay "
                "on this machine, and only a worker on this machine runs their handlers. Set "
                "EVENTLIB_BROKER_URL to a Redis or RabbitMQ URL in production (this warning is not shown "
                "in debug or testing mode).",
                app.name,
                (celery.conf.broker_transport_options or {}).get("data_folder_in", "?").rpartition("/")[0],
            )
        store = self._create_store(app, celery, eager)
        spans, capture = _tracing(conf)
        gather = conf[config.CONSOLE_FIGURES]
        figures = Figures(sink_for(store), app_name=app.name) if (console if gather is None else gather) else None
        watchers: list[Watcher] = [figures] if figures is not None else []
        if conf[config.METRICS]:
            from .metrics import Runs

            watchers.append(Runs())
        runner = Runner(
            registry,
            self.codec,
            store=store,
            schedule_retry=None if eager else make_schedule_retry(celery, queue),
            retries=int(conf[config.RETRIES]),
            backoff=float(conf[config.RETRY_BACKOFF]),
            backoff_max=float(conf[config.RETRY_BACKOFF_MAX]),
            dedup_ttl=float(conf[config.DEDUP_TTL]),
            mark_interval=float(conf[config.DEDUP_MARK_INTERVAL]),
            claim_ttl=float(conf[config.CLAIM_TTL]),
            signal_sender=app,
            spans=spans,
            streams=_stream_publisher(app, celery, registry),
            watchers=tuple(watchers),
        )
        spool_path = conf[config.SPOOL_PATH] or os.path.join(app.instance_path, "eventlib-spool.sqlite3")
        local_log = None if eager else _local_log(app, spool_path)
        send = make_send(celery, queue, float(conf[config.PUBLISH_TIMEOUT]))
        sender = Sender(
            figures.wrap_send(send) if figures else send,
            spool=Spool(spool_path, int(conf[config.SPOOL_MAX_EVENTS])),
            max_batch=int(conf[config.MAX_EVENTS_PER_MESSAGE]),
            retry_interval=float(conf[config.PUBLISH_TIMEOUT]) / 2 or 0.5,
            linger=float(conf[config.PUBLISH_LINGER]),
            backlog_depth=int(conf[config.PUBLISH_BACKLOG_DEPTH]),
            backlog_linger=float(conf[config.PUBLISH_BACKLOG_LINGER]),
            local_log=local_log,
            signal_sender=app,
            tick=figures.tick if figures else None,
        )
        background = Background(sender, local_log)
        hooks = _RequestHooks(background, send_on_failed_request=bool(conf[config.SEND_ON_FAILED_REQUEST]))
        strategy: Publisher
        if eager:
            strategy = Eager(runner.inline(), propagate=bool(conf[config.PROPAGATE_ERRORS]))
        elif conf[config.BATCH_REQUESTS]:
            strategy = RequestBuffer(hooks.then, hooks.current_buffer, local_log)
        else:
            strategy = hooks.then
        publisher = Router(strategy)
        dispatcher = Dispatcher(
            registry,
            self.codec,
            publisher,
            signal_sender=app,
            trace=capture,
            counted=figures.logged_event if figures is not None else None,
        )

        def run(messages: list[str]) -> None:
            with app.app_context():
                runner.process(messages)

        def retry(message: str, handler: str, attempt: int, first_failed_at: float | None) -> None:
            with app.app_context():
                result = runner.process_retry(message, handler, attempt, first_failed_at)
            if result is not None:
                log_outcome(result.event, [result], retry=True)

        task, retry_task = bind_task(celery, queue, run, retry, owner=app, owner_name=app.name)
        state = EventLibState(
            app_name=app.name,
            package=_app_package(app),
            extension=self,
            registry=registry,
            codec=self.codec,
            dispatcher=dispatcher,
            runner=runner,
            publisher=publisher,
            sender=sender,
            celery=celery,
            task=task,
            retry_task=retry_task,
            queue=queue,
            store=store,
            eager=eager,
            http=http,
            figures=figures,
        )
        app.extensions[EXTENSION_KEY] = state
        if http is not None:
            try:
                register_http(app, http)
            except Exception:
                # Not half set up: a second init_app may try again.
                del app.extensions[EXTENSION_KEY]
                unbind(celery)
                raise
        self._last_celery = celery
        if conf[config.METRICS]:
            from .metrics import instrument

            instrument(app, conf[config.METRICS_URL])
        app.after_request(hooks.after_request)
        app.teardown_request(hooks.teardown_request)
        if figures is not None:
            figures.connect(app)
            on_worker_start(celery, _worker_figures(figures, sender), figures.flush)
        if console:
            console_pages.register(app)
        if local_log is not None or figures is not None:
            sender.start()  # recovers what dead processes left, and ticks the figures, without waiting for an event

        from .cli import eventlib_cli

        app.cli.add_command(eventlib_cli)

    def _build_registry(self, app: Flask) -> Registry:
        """The app's registry: its blueprints' events modules, then the listed modules."""
        registry = Registry()
        if self._extra is not None:
            registry.include(self._extra)
        for blueprint in app.blueprints.values():
            if blueprint.import_name == _VIEWS_MODULE:
                continue  # the extension's own /event/log blueprint holds no events
            registry.discover(blueprint.name, _package_of(blueprint.import_name))
        modules = app.config[config.EVENT_MODULES]
        if not isinstance(modules, dict):
            raise ConfigurationError(
                f"{config.EVENT_MODULES} must be a dict of {{'label': 'dotted.module'}}, not {modules!r}"
            )
        for label, module in modules.items():
            registry.register_module(label, module)
        for module in app.config[config.HANDLER_MODULES]:
            registry.scan_handlers(module)
        _warn_unlisted(app, registry)
        return registry

    def _create_store(self, app: Flask, celery: Any, eager: bool) -> Store:
        url = app.config[config.STORE_URL]
        if url:
            return store_from_url(url)
        if eager:
            return MemoryStore()
        broker = str(celery.conf.broker_url or "").split(";")[0]  # the first of a fail-over list
        if broker.startswith(("redis://", "rediss://")):
            return store_from_url(broker)
        return store_from_url("sqlite:///" + os.path.join(app.instance_path, "eventlib-store.sqlite3"))

    def _create_celery(self, app: Flask, queue: str) -> Any:
        conf = app.config
        settings = {"broker_connection_timeout": float(conf[config.PUBLISH_TIMEOUT])}
        settings.update(conf[config.CELERY_CONFIG])
        broker_url = conf[config.BROKER_URL]
        if broker_url:
            check_broker_url(config.BROKER_URL, broker_url)
        else:
            # Its folders are made on first use (a publish, a worker's start), not here.
            folder = conf[config.FILESYSTEM_BROKER_DIR] or os.path.join(app.instance_path, "eventlib-broker")
            broker_url = "filesystem://"
            settings = {**filesystem_broker_settings(folder), **settings}
        return create_celery(app.import_name, broker_url=broker_url, queue=queue, settings=settings)


_BUFFER = "_eventlib_events"
_STATUS = "_eventlib_status"
#: Marks a request whose events were handed over: events logged later go straight on.
_HANDED_OVER = Pending()


class _RequestHooks:
    """One message per request: the request's list of events, and its hand-over at the end.

    :param then: where a request's events go when it ends (the background sender).
    :param send_on_failed_request: hand over the events of a failed request too.
    """

    def __init__(self, then: Background, *, send_on_failed_request: bool) -> None:
        self.then = then
        self.send_on_failed_request = send_on_failed_request

    def current_buffer(self) -> Pending | None:
        """The current request's events, or ``None`` outside a request or after its hand-over."""
        try:
            # One look through the proxy (has_request_context() and then request.__dict__ cost
            # ten times as much).
            state = request._get_current_object().__dict__  # type: ignore[attr-defined]
        except RuntimeError:  # outside a request
            return None
        found = state.get(_BUFFER)
        if found is None:
            found = state[_BUFFER] = Pending()
        return None if found is _HANDED_OVER else found

    def after_request(self, response: Response) -> Response:
        state = request._get_current_object().__dict__  # type: ignore[attr-defined]  # one look through the proxy
        if _BUFFER in state:
            state[_STATUS] = response.status_code
        return response

    def teardown_request(self, error: BaseException | None) -> None:
        """Send the request's events: one hand-over to the sender, which publishes them together.

        Teardown functions registered before ``init_app`` run after this one (Flask runs them in
        reverse order); the events they log go straight to the sender.
        """
        state = request._get_current_object().__dict__  # type: ignore[attr-defined]  # one look through the proxy
        buffered = state.get(_BUFFER)
        state[_BUFFER] = _HANDED_OVER
        if not buffered:
            return
        failed = error is not None or state.get(_STATUS, 500) >= 400
        if failed and not self.send_on_failed_request:
            logger.info("Discarded %d events of a failed request (EVENTLIB_SEND_ON_FAILED_REQUEST)", len(buffered))
            self.then.discard(buffered)
            return
        self.then.hand_over(buffered)


def _worker_figures(figures: Figures, sender: Sender) -> Callable[[], None]:
    """What a worker process does first: say so in its heartbeats, which the sender's tick sends."""

    def started() -> None:
        figures.worker_started()
        sender.start()

    return started


def _local_log(app: Flask, spool_path: str) -> LocalLog | None:
    """The app's local log (``None`` with ``EVENTLIB_DURABILITY = "memory"``)."""
    conf = app.config
    durability = conf[config.DURABILITY]  # checked with every setting (config.validate)
    if durability == "memory":
        return None
    folder = conf[config.LOCAL_LOG_DIR] or os.path.splitext(spool_path)[0] + "-log"
    return LocalLog(folder, durability=durability, max_bytes=int(conf[config.LOCAL_LOG_MAX_BYTES]), signal_sender=app)


def _tracing(conf: Any) -> tuple[Any, Any]:
    """The runner's handler spans and the dispatcher's trace capture (``None, None``: tracing off,
    and ``opentelemetry`` is never imported)."""
    if not conf[config.TRACING]:
        return None, None
    from .tracing import Capture, HandlerSpans

    return HandlerSpans(), Capture()


def _stream_publisher(app: Flask, celery: Any, registry: Registry) -> StreamPublisher | None:
    """What publishes the app's events to ``EVENTLIB_STREAMS`` in its workers (``None``: no streams)."""
    conf = app.config
    routes = conf[config.STREAMS]
    if not routes:
        return None
    broker = str(celery.conf.broker_url or "")
    url = default_url(conf[config.STREAMS_URL], broker, conf[config.STORE_URL])
    if url is None:
        raise ConfigurationError(
            f"{config.STREAMS} needs a Redis for its streams, and neither the broker ({config.mask_url(broker)!r}) "
            f"nor the store is one: set {config.STREAMS_URL} = 'redis://host:6379/0'"
        )
    names = list(registry.events())
    for stream, targets in routes.items():
        for target in targets:
            if not any(matches(target, name) for name in names):
                logger.warning(
                    "%s[%r] names %r, which matches none of the events of the Flask app %r: nothing goes "
                    "to that stream for it (`flask eventlib events` lists the events)",
                    config.STREAMS,
                    stream,
                    target,
                    app.name,
                )
    max_age = conf[config.STREAMS_MAX_AGE]
    return StreamPublisher(
        url,
        routes,
        maxlen=int(conf[config.STREAMS_MAXLEN]),
        max_age=None if max_age is None else float(max_age),
        dedup_ttl=float(conf[config.DEDUP_TTL]),
    )


def _package_of(import_name: str) -> str:
    """The package a blueprint's module belongs to (the module itself if it is a package)."""
    module = importlib.import_module(import_name)
    if hasattr(module, "__path__"):
        return import_name
    return import_name.rpartition(".")[0]


def _app_package(app: Flask) -> str:
    """The package the app's code lives in: where its handler modules are expected."""
    own = sys.modules.get(app.import_name)
    package = app.import_name if hasattr(own, "__path__") else app.import_name.rpartition(".")[0]
    return package or app.import_name


def _warn_unread_environment(app: Flask) -> None:
    """Warn when the environment sets a setting this app's config does not have.

    The extension reads ``app.config`` only: ``EVENTLIB_BROKER_URL=redis://... celery worker`` on
    an app that does not read its environment would run on the embedded broker, unnoticed.
    """
    for key in config.SETTINGS:
        for variable in (key, "FLASK_" + key):
            raw = os.environ.get(variable)
            if raw is None:
                continue
            try:
                wanted = json.loads(raw)
            except ValueError:
                wanted = raw
            if app.config.get(key) != wanted:
                shown = config.mask_url(raw) if "URL" in key else raw
                logger.warning(
                    "The environment sets %s=%r, but the Flask app %r has %s=%r: flask-eventlib reads "
                    "app.config only. Call app.config.from_prefixed_env() in the app factory, before "
                    "init_app, and name the variable FLASK_%s.",
                    variable,
                    shown,
                    app.name,
                    key,
                    config.mask_url(app.config[key]) if isinstance(app.config[key], str) else app.config[key],
                    key,
                )


def _warn_unlisted(app: Flask, registry: Registry) -> None:
    for func in registry.unlisted_handlers(_app_package(app)):
        logger.warning(
            "%s.%s is marked @handler, but its module is not in %s, so it does not run for the app %r: add %r to %s.",
            func.__module__,
            func.__qualname__,
            config.HANDLER_MODULES,
            app.name,
            func.__module__,
            config.HANDLER_MODULES,
        )


def log(name: str, data: dict[str, Any] | None = None) -> str:
    """Log the event ``name`` with ``data``; return the new event's id.

    The event is found, built from a copy of ``data``, cleaned, serialized and sent to the
    workers (processed at once in eager mode). Needs an application context.

    :raises EventNotFound: for an unknown event name.
    :raises ValidationError: when the event's ``clean()`` or schema refuses the data.
    :raises TypeError: when a value cannot be serialized (the message names the key).
    """
    try:  # the current app's state in one look; state_of() explains what is missing
        state: EventLibState = current_app._get_current_object().extensions[EXTENSION_KEY]  # type: ignore[attr-defined]
    except (RuntimeError, KeyError):
        state = state_of()
    return state.dispatcher.log(name, data)


def flush(timeout: float | None = 10.0) -> bool:
    """Wait until the current app's events logged so far are published (or spooled).

    ``log()`` hands events to a background sender and returns at once; call this before a
    short script exits, or in a test before looking at the broker. Needs an app context.

    :returns: ``False`` if ``timeout`` seconds passed first.
    """
    return state_of().sender.flush(timeout)
