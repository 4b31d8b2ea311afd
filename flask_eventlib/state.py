"""One app's state: everything ``EventLib.init_app`` built for it, at ``app.extensions["eventlib"]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .dispatch import Batch, Dispatcher
    from .figures import Figures
    from .ingest.settings import HttpSettings
    from .publishers import Router
    from .publishing import Sender
    from .registry import Registry
    from .runner import Runner
    from .serialization import Codec
    from .store import Store

#: The key of an app's :class:`EventLibState` in ``app.extensions``.
EXTENSION_KEY = "eventlib"


@dataclass(frozen=True)
class EventLibState:
    """What :class:`EventLib` set up for one Flask app: ``app.extensions["eventlib"]``.

    Public: the command line, the test helpers, the browser endpoint and an app's own code use
    these attributes. ``current_app.extensions["eventlib"].log(...)`` is what :func:`log` does.
    """

    #: The Flask app's name.
    app_name: str
    #: The package the app's code lives in (where ``check_events`` looks for unlisted handlers).
    package: str
    #: The extension object that set it up.
    extension: Any
    #: This app's events and function handlers.
    registry: Registry
    #: How events are encoded.
    codec: Codec
    #: The caller's side: find, build, clean, encode, publish.
    dispatcher: Dispatcher
    #: The workers' side: run handlers, retries, dead letters, dedup.
    runner: Runner
    #: Where encoded events go: the configured strategy, which tests may override.
    publisher: Router
    #: The background thread that publishes to the broker, with the spool behind it.
    sender: Sender
    #: The Celery app that carries the events.
    celery: Any
    #: The Celery task that processes a message of events.
    task: Any
    #: The Celery task that runs one handler again.
    retry_task: Any
    #: The Celery queue of the events.
    queue: str
    #: Dedup marks and dead letters (``None``: neither).
    store: Store | None
    #: Whether handlers run in the caller (``EVENTLIB_ALWAYS_EAGER``).
    eager: bool
    #: The browser endpoint's settings (``None`` with ``EVENTLIB_HTTP_ENABLED = False``).
    http: HttpSettings | None = None
    #: The console's figures of this process (``None``: not gathered, see ``EVENTLIB_CONSOLE_FIGURES``).
    figures: Figures | None = None

    def log(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        context: dict[str, Any] | None = None,
        public_only: bool = False,
    ) -> str:
        """Log an event of this app; see :func:`flask_eventlib.log`.

        :param id: the event id, when the caller made it (the JS client does).
        :param context: server-side facts about the event, not its data.
        :param public_only: refuse events whose class is not ``public`` (raises
            :class:`~flask_eventlib.exceptions.EventNotPublic`).
        """
        return self.dispatcher.log(name, data, id=id, context=context, public_only=public_only)

    def batch(self, context: dict[str, Any] | None = None, *, public_only: bool = False) -> Batch:
        """Events of this app to log together, sharing ``context``: ``add()`` each (it raises
        what :meth:`log` raises, and keeps nothing of a refused event), then ``publish()`` them
        in one hand-over. The browser endpoint logs a request's events this way."""
        return self.dispatcher.batch(context, public_only=public_only)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until this app's events logged so far are published or spooled; see :func:`flush`."""
        return self.sender.flush(timeout)


def state_of(app: Flask | None = None, *, caller: str | None = None) -> EventLibState:
    """The :class:`EventLibState` of ``app`` (default: the current app).

    :param caller: what needs it, named in the errors (default: ``log()``).
    :raises ConfigurationError: outside an app context, or when EventLib is not initialised on it.
    """
    if app is None:
        try:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        except RuntimeError:
            raise ConfigurationError(
                f"{caller or 'log()'} needs a Flask application context: call it in a request, a CLI command, or "
                "inside `with app.app_context():`."
            ) from None
    try:
        return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
    except KeyError:
        where = f"{caller}: " if caller else ""
        raise ConfigurationError(
            f"{where}EventLib is not initialised on the Flask app {app.name!r}: call EventLib(app) or "
            "eventlib.init_app(app) in your app factory."
        ) from None
