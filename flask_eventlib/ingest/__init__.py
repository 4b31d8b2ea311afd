"""The browser's endpoint, ``POST /event/log``: a Flask-free parser, the error model, the guards
(origin, rate), the settings, and the answer of one request (Werkzeug's request, no Flask); then
its two ways in, the only modules of them that import Flask: the front door (a WSGI middleware in
front of Flask's dispatch, the default) and the blueprint's view (``EVENTLIB_HTTP_THROUGH_FLASK``).
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
