"""Moved: the ingest (``POST /event/log``) is now :mod:`flask_eventlib.ingest`, and serving the JS
client :mod:`flask_eventlib.script`. This module re-exports the names it held, for code that
imports them from here.
"""

from __future__ import annotations

from .ingest import HTTP_EXTENSION_KEY, HttpSettings, Problem, RateLimit, Refused, blueprint, init_http
from .script import SCRIPT_PATH, eventlib_script

__all__ = [
    "HTTP_EXTENSION_KEY",
    "SCRIPT_PATH",
    "HttpSettings",
    "Problem",
    "RateLimit",
    "Refused",
    "blueprint",
    "eventlib_script",
    "init_http",
]
