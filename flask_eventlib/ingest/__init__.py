"""The browser's front door, ``POST /event/log``: a Flask-free parser, the error model, the guards
(origin, rate), the settings, and the view, the only one of them that imports Flask.
"""

from __future__ import annotations

from .errors import Problem, Refused
from .guards import RateLimit, check_origin, normalise_origin
from .parser import MAX_DEPTH, Item, Params, read_events
from .settings import HttpSettings, settings_from_config
from .view import blueprint, register_http

__all__ = [
    "MAX_DEPTH",
    "HttpSettings",
    "Item",
    "Params",
    "Problem",
    "RateLimit",
    "Refused",
    "blueprint",
    "check_origin",
    "normalise_origin",
    "read_events",
    "register_http",
    "settings_from_config",
]
