"""A small shop that shows flask-eventlib: views log events, a Celery worker runs their handlers.

Click through it at http://127.0.0.1:5000/: *Click* on a deal logs ``deals.DealClick`` from the
browser with the JS client (``yipit.event.log``, loaded by ``{{ eventlib_script() }}`` in
``base.html``); *Buy* posts a form whose view logs ``deals.Purchase``; *Sign up* logs
``accounts.SignedUp`` from the browser and shows the validation error the server sends back; the
*Dashboard* follows the counts the handlers write. Without JavaScript, the forms post to views
that log the same events on the server.

Run it with ``python -m example_app`` (see ``__main__.py``), or by hand::

    celery -A example_app.worker:celery worker --loglevel=INFO   # one terminal
    flask --app example_app run                                  # another

Settings: ``create_app(**config)`` keywords beat environment variables, which beat the defaults.
The environment is read with Flask's ``app.config.from_prefixed_env()``, as the README's
quickstart does: ``FLASK_EVENTLIB_BROKER_URL=redis://...`` sets ``EVENTLIB_BROKER_URL``, and a
value is parsed as JSON when it is JSON (``FLASK_EVENTLIB_RETRIES=5`` is the int 5).

``FLASK_EXAMPLE_INSTANCE_PATH``
    Flask's instance folder (default: ``instance/`` beside the package). It holds the SQLite
    database and the embedded filesystem broker's folder, so the web server and the worker
    must agree on it.
``FLASK_EVENTLIB_BROKER_URL``
    e.g. ``redis://127.0.0.1:6379/0``; unset means the embedded filesystem broker. Any other
    setting of flask-eventlib works the same way (``FLASK_EVENTLIB_QUEUE``, ...).
``FLASK_EXAMPLE_DATABASE``
    The SQLite file the handlers write (default ``<instance path>/example.sqlite3``).
``FLASK_EXAMPLE_REDIS_URL`` / ``FLASK_EXAMPLE_REDIS_PREFIX``
    When the URL is set, handlers also count in Redis, under keys starting with the prefix
    (default ``example:``).

In debug (``python -m example_app`` runs in debug, as does ``flask --app example_app run --debug``)
the operations console is on, at http://127.0.0.1:5000/eventlib/, open to anyone who can reach
the server (it listens on 127.0.0.1 only). Every process of the example, workers too, gathers the
console's figures. Buy a deal with the coupon ``EXPIRED`` to see a handler retried, then
dead-lettered, and replayed from the console.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from flask_eventlib import EventLib

from . import store

#: Environment variables with these prefixes are settings (``from_prefixed_env()`` reads ``FLASK_*``).
ENVIRONMENT_PREFIXES = ("FLASK_",)


def create_app(**config: Any) -> Flask:
    """Create the example app; ``config`` overrides the defaults and the environment."""
    from .accounts import bp as accounts_bp
    from .deals import bp as deals_bp
    from .views import bp as site_bp

    # The instance folder is an argument of Flask(), so it is read before the config is.
    instance_path = config.pop("EXAMPLE_INSTANCE_PATH", None) or os.environ.get("FLASK_EXAMPLE_INSTANCE_PATH")
    app = Flask(__name__, instance_path=os.path.abspath(instance_path) if instance_path else None)
    app.config.update(
        EVENTLIB_HANDLER_MODULES=[f"{__name__}.handlers"],
        EXAMPLE_DATABASE=None,
        EXAMPLE_REDIS_URL=None,
        EXAMPLE_REDIS_PREFIX="example:",
    )
    app.config.from_prefixed_env()
    app.config.pop("EXAMPLE_INSTANCE_PATH", None)
    app.config.update(config)
    # The console in debug only: without an access check, init_app refuses it anywhere else.
    app.config.setdefault("EVENTLIB_CONSOLE", bool(app.debug))
    # Workers too, started in debug or not, so that a console opened in debug sees their figures.
    app.config.setdefault("EVENTLIB_CONSOLE_FIGURES", True)
    if app.config["EVENTLIB_CONSOLE"] and not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = "example-only: set FLASK_SECRET_KEY to a secret of your own"

    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config["EXAMPLE_DATABASE"]:
        app.config["EXAMPLE_DATABASE"] = os.path.join(app.instance_path, "example.sqlite3")
    store.init_db(app.config["EXAMPLE_DATABASE"])

    # Blueprints first: EventLib finds the events of each one in its package's `events` module.
    app.register_blueprint(site_bp)
    app.register_blueprint(deals_bp, url_prefix="/deals")
    app.register_blueprint(accounts_bp, url_prefix="/accounts")
    EventLib(app)
    return app


def broker_description(app: Flask) -> str:
    """Which broker ``app`` sends its events through, for people (passwords hidden)."""
    from kombu.utils.url import maybe_sanitize_url

    celery = app.extensions["eventlib"].celery
    url = str(celery.conf.broker_url)
    if url.startswith("filesystem:"):
        folder = os.path.dirname(celery.conf.broker_transport_options["data_folder_in"])
        return f"the embedded filesystem broker in {folder}"
    return str(maybe_sanitize_url(url))
