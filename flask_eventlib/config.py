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
#: Inside a request, keep the request's events and send them together when it ends.
#: Default ``True``.
BATCH_REQUESTS = "EVENTLIB_BATCH_REQUESTS"
#: Send a request's events even when it failed (an exception, or a status of 400 or more).
#: ``False`` sends them only for successful requests, like publishing after a commit.
#: Default ``True``.
SEND_ON_FAILED_REQUEST = "EVENTLIB_SEND_ON_FAILED_REQUEST"
#: The most events in one broker message. Default ``100``.
MAX_EVENTS_PER_MESSAGE = "EVENTLIB_MAX_EVENTS_PER_MESSAGE"
#: The least time, in seconds, between two messages of the background sender: events that come
#: within it of the last message wait for the next, so under load a message carries the events of
#: many requests; after a quiet spell an event goes at once. ``0``: every batch at once.
#: Default ``0.02``.
PUBLISH_LINGER = "EVENTLIB_PUBLISH_LINGER"
#: Seconds the sender waits for the broker (to connect, for Redis's reply, for RabbitMQ's confirm
#: of a publish) before spooling events locally. Default ``2.0``.
PUBLISH_TIMEOUT = "EVENTLIB_PUBLISH_TIMEOUT"
#: The SQLite file where events wait while the broker is down;
#: default ``<app.instance_path>/eventlib-spool.sqlite3``.
SPOOL_PATH = "EVENTLIB_SPOOL_PATH"
#: The most events the spool holds; past that new events are dropped, counted and logged.
#: Default ``100000``.
SPOOL_MAX_EVENTS = "EVENTLIB_SPOOL_MAX_EVENTS"
#: What a logged event survives before the broker has it: ``"process"`` (the default: the death
#: of the process that logged it, SIGKILL included, through the local log), ``"machine"`` (power
#: loss too: the local log is synced to disk, once per request), or ``"memory"`` (neither: events
#: wait in memory until sent).
DURABILITY = "EVENTLIB_DURABILITY"
#: The folder of the local log's segment files, shared by the processes of one deployment;
#: default: the spool's path without its extension, plus ``-log``
#: (``<app.instance_path>/eventlib-spool-log``).
LOCAL_LOG_DIR = "EVENTLIB_LOCAL_LOG_DIR"
#: The most bytes one process's local log holds; past that new events wait in memory only,
#: counted, logged and signalled. Default ``67108864`` (64 MiB).
LOCAL_LOG_MAX_BYTES = "EVENTLIB_LOCAL_LOG_MAX_BYTES"
#: How many times a failing handler is retried (after its first attempt). Default ``3``.
RETRIES = "EVENTLIB_RETRIES"
#: Seconds before a handler's first retry; later retries wait twice as long each, with jitter.
#: Default ``1.0``.
RETRY_BACKOFF = "EVENTLIB_RETRY_BACKOFF"
#: The longest wait between two attempts of a handler, in seconds. Default ``300.0``.
RETRY_BACKOFF_MAX = "EVENTLIB_RETRY_BACKOFF_MAX"
#: Seconds during which a handler that succeeded for an event id is not run again for a
#: redelivery or a client retry of the same id; ``0`` turns dedup off. Default ``86400``.
DEDUP_TTL = "EVENTLIB_DEDUP_TTL"
#: Seconds a worker's claim on a handler it is about to run lasts, renewed every third of it
#: while the handler runs, so that two deliveries of the same event at the same moment do not
#: both run it; a crashed worker's claims end with it. With dedup only; ``0`` turns claims off.
#: Default ``60``.
CLAIM_TTL = "EVENTLIB_CLAIM_TTL"
#: Where dedup marks and dead letters live: ``redis://...``, ``sqlite:////path`` or
#: ``memory://``. Default: the broker's Redis, else ``<app.instance_path>/eventlib-store.sqlite3``
#: (``memory://`` in eager mode).
STORE_URL = "EVENTLIB_STORE_URL"
#: Register ``POST <EVENTLIB_URL_PREFIX>/log``, where browsers log public events. Default ``True``.
HTTP_ENABLED = "EVENTLIB_HTTP_ENABLED"
#: URL prefix of the browser endpoint. Default ``"/event"`` (the endpoint is ``/event/log``).
URL_PREFIX = "EVENTLIB_URL_PREFIX"
#: The most events in one request to the browser endpoint. Default ``50``.
MAX_BATCH = "EVENTLIB_MAX_BATCH"
#: The largest body (and query string), in bytes, the browser endpoint reads. Default ``65536``.
MAX_CONTENT_LENGTH = "EVENTLIB_MAX_CONTENT_LENGTH"
#: Origins (``"https://www.example.com"``) besides the app's own whose pages may log events
#: through the browser endpoint. Default ``[]``.
ALLOWED_ORIGINS = "EVENTLIB_ALLOWED_ORIGINS"
#: Requests per client address to the browser endpoint, in the notation of ``limits`` (and Flask-Limiter)
#: (``"120/minute"``, ``"10/second;500/hour"``); ``None`` turns the limit off.
#: Default ``"120/minute"``.
RATE_LIMIT = "EVENTLIB_RATE_LIMIT"
#: Where the rate limit's counters live: ``memory://`` (per process) or ``redis://...`` (shared
#: by every worker process). Default ``"memory://"``.
RATE_LIMIT_STORAGE_URL = "EVENTLIB_RATE_LIMIT_STORAGE_URL"

DEFAULTS: dict[str, Any] = {
    BROKER_URL: None,
    FILESYSTEM_BROKER_DIR: None,
    QUEUE: "eventlib",
    CELERY_CONFIG: {},
    ALWAYS_EAGER: False,
    PROPAGATE_ERRORS: False,
    EVENT_MODULES: {},
    HANDLER_MODULES: [],
    BATCH_REQUESTS: True,
    SEND_ON_FAILED_REQUEST: True,
    MAX_EVENTS_PER_MESSAGE: 100,
    PUBLISH_LINGER: 0.02,
    PUBLISH_TIMEOUT: 2.0,
    SPOOL_PATH: None,
    SPOOL_MAX_EVENTS: 100_000,
    DURABILITY: "process",
    LOCAL_LOG_DIR: None,
    LOCAL_LOG_MAX_BYTES: 64 * 1024 * 1024,
    RETRIES: 3,
    RETRY_BACKOFF: 1.0,
    RETRY_BACKOFF_MAX: 300.0,
    DEDUP_TTL: 86_400,
    CLAIM_TTL: 60,
    STORE_URL: None,
    HTTP_ENABLED: True,
    URL_PREFIX: "/event",
    MAX_BATCH: 50,
    MAX_CONTENT_LENGTH: 65_536,
    ALLOWED_ORIGINS: [],
    RATE_LIMIT: "120/minute",
    RATE_LIMIT_STORAGE_URL: "memory://",
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
