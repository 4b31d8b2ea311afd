"""Two Flask apps for one process, ``north`` and ``south``: each has a ``deals`` blueprint that
declares its own ``DealClick``, with a method handler, and function handlers in its own module.

Each handler records ``"<app>.<handler>"`` with the shared recorder, so a test sees which app's
handlers ran for which app's events, in the test process and in worker processes.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from flask import Flask

from flask_eventlib import EventLib


def create(which: str, **config: Any) -> Flask:
    """The ``north`` or ``south`` app."""
    package = f"{__name__}.{which}"
    deals = __import__(f"{package}.deals", fromlist=["bp"])
    app = Flask(package)
    app.config.update(
        EVENTLIB_HANDLER_MODULES=[f"{package}.handlers"],
        SAMPLE_REDIS_URL=os.environ.get("EVENTLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        EVENTLIB_SPOOL_PATH=os.path.join(tempfile.gettempdir(), f"eventlib-twoapps-{which}-{os.getpid()}.sqlite3"),
    )
    app.config.update(config)
    app.register_blueprint(deals.bp, url_prefix="/deals")
    EventLib(app)
    return app
