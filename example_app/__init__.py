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
Every ``EVENTLIB_*`` and ``EXAMPLE_*`` environment variable is read, its value parsed as JSON when
it is JSON (``EVENTLIB_RETRIES=5`` is the int 5), as Flask's ``from_prefixed_env`` does.

``EXAMPLE_INSTANCE_PATH``
    Flask's instance folder (default: ``instance/`` beside the package). It holds the SQLite
    database and the embedded filesystem broker's folder, so the web server and the worker
    must agree on it.
``EVENTLIB_BROKER_URL``
    e.g. ``redis://127.0.0.1:6379/0``; unset means the embedded filesystem broker. Any other
    ``EVENTLIB_*`` setting of flask-eventlib works the same way (``EVENTLIB_QUEUE``, ...).
``EXAMPLE_DATABASE``
    The SQLite file the handlers write (default ``<instance path>/example.sqlite3``).
``EXAMPLE_REDIS_URL`` / ``EXAMPLE_REDIS_PREFIX``
    When the URL is set, handlers also count in Redis, under keys starting with the prefix
    (default ``example:``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from flask_eventlib import EventLib

from . import store

#: Environment variables with these prefixes are settings.
ENVIRONMENT_PREFIXES = ("EVENTLIB_", "EXAMPLE_")


def settings_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The ``EVENTLIB_*`` and ``EXAMPLE_*`` variables of ``environ``, JSON values parsed."""
    settings: dict[str, Any] = {}
    for key, value in environ.items():
        if key.startswith(ENVIRONMENT_PREFIXES):
            try:
                settings[key] = json.loads(value)
            except ValueError:
                settings[key] = value
    return settings


def create_app(**config: Any) -> Flask:
    """Create the example app; ``config`` overrides the defaults and the environment."""
    from .accounts import bp as accounts_bp
    from .deals import bp as deals_bp
    from .views import bp as site_bp

    settings = {**settings_from_environment(), **config}
    instance_path = settings.pop("EXAMPLE_INSTANCE_PATH", None)
    app = Flask(__name__, instance_path=os.path.abspath(instance_path) if instance_path else None)
    app.config.update(
        EVENTLIB_HANDLER_MODULES=[f"{__name__}.handlers"],
        EXAMPLE_DATABASE=None,
        EXAMPLE_REDIS_URL=None,
        EXAMPLE_REDIS_PREFIX="example:",
    )
    app.config.update(settings)

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
