"""The operations console: a blueprint of server-rendered pages over the events of one app.

``EVENTLIB_CONSOLE = True`` registers it at ``EVENTLIB_CONSOLE_URL_PREFIX`` (``/eventlib``):
the overview (rates, durations, what waits where, the workers), the events of the registry, the
dead letters (grouped; replay, purge) and one event by id. Its figures come from
:mod:`flask_eventlib.figures`.
"""

from __future__ import annotations

from flask import Flask

from .. import config
from .guard import check_setup
from .views import bp


def register(app: Flask) -> None:
    """Register the console on ``app`` at its URL prefix (``check_setup`` first)."""
    app.register_blueprint(bp, url_prefix=app.config[config.CONSOLE_URL_PREFIX])


__all__ = ["bp", "check_setup", "register"]
