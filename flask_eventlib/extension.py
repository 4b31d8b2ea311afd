"""``EventLib``: the Flask extension that wires the core to an app, and the ``log()`` callers use."""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from . import config
from .dispatch import Dispatcher
from .exceptions import ConfigurationError
from .publishing import TaskPublisher
from .registry import Registry, default_registry
from .serialization import Codec, default_codec
from .tasks import bind_task, create_celery, filesystem_broker_settings

EXTENSION_KEY = "eventlib"


@dataclass
class _State:
    """What ``init_app`` sets up for one Flask app, kept in ``app.extensions["eventlib"]``."""

    extension: EventLib
    dispatcher: Dispatcher
    celery: Any
    task: Any
    queue: str


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
        if self._celery is None:
            raise ConfigurationError(
                "EventLib.celery is made by init_app(app): initialise the extension first, or "
                "pass celery= to EventLib()"
            )
        return self._celery

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

        celery = self._celery if self._celery is not None else self._create_celery(app, queue)
        self._celery = celery

        def run(messages: list[str]) -> None:
            with app.app_context():
                state.dispatcher.process(messages)

        task = bind_task(celery, queue, run)
        dispatcher = Dispatcher(
            self.registry,
            self.codec,
            TaskPublisher(task, queue),
            eager=bool(conf[config.ALWAYS_EAGER]),
            propagate=bool(conf[config.PROPAGATE_ERRORS]),
        )
        state = _State(self, dispatcher, celery, task, queue)
        app.extensions[EXTENSION_KEY] = state

        from .cli import eventlib_cli

        app.cli.add_command(eventlib_cli)

    def _discover(self, app: Flask) -> None:
        for blueprint in app.blueprints.values():
            self.registry.discover(blueprint.name, _package_of(blueprint.import_name))
        modules = app.config[config.EVENT_MODULES]
        if not isinstance(modules, dict):
            raise ConfigurationError(
                f"{config.EVENT_MODULES} must be a dict of {{'label': 'dotted.module'}}, not {modules!r}"
            )
        for label, module in modules.items():
            self.registry.register_module(label, module)

    def _create_celery(self, app: Flask, queue: str) -> Any:
        conf = app.config
        settings = dict(conf[config.CELERY_CONFIG])
        broker_url = conf[config.BROKER_URL]
        if not broker_url:
            folder = conf[config.FILESYSTEM_BROKER_DIR] or os.path.join(app.instance_path, "eventlib-broker")
            for sub in ("queue", "control"):
                os.makedirs(os.path.join(folder, sub), exist_ok=True)
            broker_url = "filesystem://"
            settings = {**filesystem_broker_settings(folder), **settings}
        return create_celery(app.import_name, broker_url=broker_url, queue=queue, settings=settings)


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


def get_dispatcher() -> Dispatcher:
    """The current app's :class:`~flask_eventlib.dispatch.Dispatcher`."""
    return _state().dispatcher
