"""A small Flask app for the tests: two blueprints with events, function handlers elsewhere.

Every handler records what it saw in a Redis list (``SAMPLE_RECORD_KEY``), so a test process can
observe a worker process's side effects.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from flask import Flask

from flask_eventlib import EventLib


def create_app(eventlib: EventLib | None = None, **config: Any) -> Flask:
    from .deals import bp as deals_bp
    from .ops import bp as ops_bp
    from .users.views import bp as users_bp
    from .web import bp as web_bp

    app = Flask(__name__)
    app.config.update(
        EVENTLIB_HANDLER_MODULES=["tests.sample.handlers"],
        SAMPLE_REDIS_URL=os.environ.get("EVENTLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        SAMPLE_RECORD_KEY="eventlib-test:records",
        EVENTLIB_RETRY_BACKOFF=0.05,
        # Short leases: a test that kills a worker sees its claims end within seconds.
        EVENTLIB_CLAIM_TTL=5,
        EVENTLIB_SPOOL_PATH=os.path.join(tempfile.gettempdir(), f"eventlib-test-spool-{os.getpid()}.sqlite3"),
    )
    app.config.update(config)
    app.register_blueprint(deals_bp, url_prefix="/deals")
    app.register_blueprint(users_bp, url_prefix="/users")
    app.register_blueprint(ops_bp, url_prefix="/ops")
    app.register_blueprint(web_bp, url_prefix="/web")
    (eventlib or EventLib()).init_app(app)
    return app
