"""Moved: the ingest (``POST /event/log``) is now :mod:`flask_eventlib.ingest`, and serving the JS
client :mod:`flask_eventlib.script`. This module re-exports the names it held, for code that
imports them from here. The ingest's settings are the app state's ``http`` attribute
(``app.extensions["eventlib"].http``).
"""

from __future__ import annotations

from .ingest import HttpSettings, Problem, RateLimit, Refused, blueprint
from .script import SCRIPT_PATH, eventlib_script

__all__ = [
    "SCRIPT_PATH",
    "HttpSettings",
    "Problem",
    "RateLimit",
    "Refused",
    "blueprint",
    "eventlib_script",
]
