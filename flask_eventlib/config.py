"""Every ``EVENTLIB_*`` configuration key, named once, with its default.

The extension reads these names from ``app.config`` (after ``EventLib(**overrides)``, whose
keyword arguments are the lowercase names without the prefix, e.g. ``queue="events"``).
"""

from __future__ import annotations

from typing import Any

#: Broker URL for the Celery app the extension creates (``redis://...`` or ``amqp://...``).
#: ``None`` means the embedded filesystem broker in ``EVENTLIB_FILESYSTEM_BROKER_DIR``, which
#: needs no server but serves only processes on this machine.
BROKER_URL = "EVENTLIB_BROKER_URL"
#: Folder of the embedded filesystem broker; default ``<app.instance_path>/eventlib-broker``.
FILESYSTEM_BROKER_DIR = "EVENTLIB_FILESYSTEM_BROKER_DIR"
#: Name of the Celery queue that carries events. Default ``"eventlib"``.
QUEUE = "EVENTLIB_QUEUE"
#: Extra Celery settings (a dict) applied to the Celery app the extension creates.
CELERY_CONFIG = "EVENTLIB_CELERY_CONFIG"
#: Process events in the caller, synchronously, through the full encode/decode round trip.
#: Default ``False``.
ALWAYS_EAGER = "EVENTLIB_ALWAYS_EAGER"
#: In eager mode, re-raise a handler's exception instead of only logging it. Default ``False``.
PROPAGATE_ERRORS = "EVENTLIB_PROPAGATE_ERRORS"
#: ``{"label": "dotted.module"}``: events modules outside blueprints. Default ``{}``.
EVENT_MODULES = "EVENTLIB_EVENT_MODULES"
#: Dotted names of modules to import at ``init_app`` so their ``@handler`` functions register.
#: Default ``[]``.
HANDLER_MODULES = "EVENTLIB_HANDLER_MODULES"

DEFAULTS: dict[str, Any] = {
    BROKER_URL: None,
    FILESYSTEM_BROKER_DIR: None,
    QUEUE: "eventlib",
    CELERY_CONFIG: {},
    ALWAYS_EAGER: False,
    PROPAGATE_ERRORS: False,
    EVENT_MODULES: {},
    HANDLER_MODULES: [],
}


def key_for(override: str) -> str:
    """Map a constructor keyword (``queue``) to its config key (``EVENTLIB_QUEUE``).

    :raises TypeError: for a keyword that names no setting.
    """
    key = "EVENTLIB_" + override.upper()
    if key not in DEFAULTS:
        known = ", ".join(sorted(k.removeprefix("EVENTLIB_").lower() for k in DEFAULTS))
        raise TypeError(f"EventLib() got an unknown setting {override!r}; known settings: {known}")
    return key
