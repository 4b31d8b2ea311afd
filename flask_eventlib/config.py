"""Every ``EVENTLIB_*`` configuration key, declared once, with its default and its type.

The extension reads these names from ``app.config`` (after ``EventLib(**overrides)``, whose
keyword arguments are the lowercase names without the prefix, e.g. ``queue="events"``).
:func:`validate` checks a whole config at ``init_app``: an ``EVENTLIB_*`` key that names no
setting is an error with a did-you-mean, and each value must have its declared type.

To add a setting, declare it here, in one statement, with a ``#:`` comment::

    #: What it does. Default ``10``.
    NEW_THING = setting("EVENTLIB_NEW_THING", 10, integer(minimum=1))

(the README's configuration table must list it: ``tests/test_readme.py`` checks).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .exceptions import ConfigurationError
from .handlers import check_target

PREFIX = "EVENTLIB_"

#: ``check(key, value)`` raises :class:`ConfigurationError` naming ``key`` when ``value`` is wrong.
Check = Callable[[str, Any], None]


@dataclass(frozen=True)
class Setting:
    """One ``EVENTLIB_*`` setting: its key, its default and the check of its values."""

    key: str
    default: Any
    check: Check


#: Every setting, by key, in the order they are declared.
SETTINGS: dict[str, Setting] = {}


def setting(key: str, default: Any, check: Check) -> str:
    """Declare the setting ``key``; return ``key``, for a module constant naming it."""
    if not key.startswith(PREFIX) or key in SETTINGS:
        raise ValueError(f"{key!r} is not a new {PREFIX}* key")
    check(key, default)  # a default its own check refuses is a bug here, not the user's
    SETTINGS[key] = Setting(key, default, check)
    return key


# -- the checks ----------------------------------------------------------------------------------


def _refuse(key: str, wanted: str, value: Any) -> ConfigurationError:
    return ConfigurationError(f"{key} must be {wanted}, not {_describe(key, value)}")


def _describe(key: str, value: Any) -> str:
    shown = mask_url(value) if isinstance(value, str) and "URL" in key else value
    return f"the {type(value).__name__} {shown!r}"


def boolean(key: str, value: Any) -> None:
    """``True`` or ``False`` (not ``"false"``, which Python would take as true)."""
    if not isinstance(value, bool):
        raise _refuse(key, "True or False", value)


def integer(*, minimum: int = 0) -> Check:
    """An ``int`` (not a ``bool``) of at least ``minimum``."""

    def check(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _refuse(key, f"an integer of at least {minimum}", value)

    return check


def number(*, minimum: float = 0.0, above: bool = False) -> Check:
    """An ``int`` or ``float`` (not a ``bool``) of at least ``minimum`` (more than it if ``above``)."""
    wanted = f"a number {'greater than' if above else 'of at least'} {minimum:g} (seconds)"

    def check(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise _refuse(key, wanted, value)
        if value < minimum or (above and value == minimum):
            raise _refuse(key, wanted, value)

    return check


def one_of(*choices: str) -> Check:
    """One of ``choices``."""

    def check(key: str, value: Any) -> None:
        if value not in choices:
            raise _refuse(key, "one of " + ", ".join(map(repr, choices)), value)

    return check


def text(*, example: str, optional: bool = False) -> Check:
    """A non-empty ``str`` (or ``None`` when ``optional``)."""
    wanted = f"a string, e.g. {example!r}" + (", or None" if optional else "")

    def check(key: str, value: Any) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or not value:
            raise _refuse(key, wanted, value)

    return check


def path(key: str, value: Any) -> None:
    """``None`` (the default place) or a file system path."""
    if value is not None and not (isinstance(value, str | os.PathLike) and os.fspath(value)):
        raise _refuse(key, "a path (a str or a pathlib.Path), or None for the default", value)


def dictionary(*, example: str, values: type | None = None) -> Check:
    """A ``dict`` with ``str`` keys (and values of type ``values``, when given)."""

    def check(key: str, value: Any) -> None:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _refuse(key, f"a dict, e.g. {example}", value)
        if values is not None and not all(isinstance(v, values) for v in value.values()):
            raise _refuse(key, f"a dict of {values.__name__} values, e.g. {example}", value)

    return check


def strings(*, example: str) -> Check:
    """A list (or tuple, or set) of strings; a lone string is refused, since it would be read letter by letter."""

    def check(key: str, value: Any) -> None:
        if not isinstance(value, list | tuple | set | frozenset) or not all(isinstance(v, str) for v in value):
            raise _refuse(key, f"a list of strings, e.g. {example}", value)

    return check


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def url(
    *, schemes: tuple[str, ...] | None = None, example: str, optional: bool = False, several: bool = False
) -> Check:
    """A URL ``scheme://...`` whose host and port parse (of one of ``schemes``, when given).

    :param optional: ``None`` (and ``""``) are allowed: the setting's default behaviour.
    :param several: a ``;``-separated list of URLs is allowed (Celery's broker fail-over).
    """

    def check(key: str, value: Any) -> None:
        if optional and value in (None, ""):
            return
        if not isinstance(value, str):
            raise _refuse(key, f"a URL string, e.g. {example!r}" + (", or None" if optional else ""), value)
        for part in value.split(";") if several else [value]:
            problem = _url_problem(part.strip(), schemes)
            if problem:
                raise ConfigurationError(f"{key} = {mask_url(value)!r} is not a valid URL: {problem}; e.g. {example!r}")

    return check


def _url_problem(value: str, schemes: tuple[str, ...] | None) -> str | None:
    if not _URL.match(value):
        return "it must start with scheme://"
    parts = urlsplit(value)
    if schemes is not None and parts.scheme not in schemes:
        return f"the scheme {parts.scheme!r} is not one of {', '.join(schemes)}"
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "its port is not a number from 0 to 65535"
    if parts.netloc.rpartition("@")[2].startswith(":"):
        return "it names a port but no host"
    return None


def mask_url(value: str) -> str:
    """``value`` with the password of each URL in it replaced by ``***``, for messages and logs."""
    # Also in a URL missing its colon (``redis//:secret@host``): whatever stands between
    # ``user:`` and ``@`` after ``//`` or at the start is a password.
    return re.sub(r"((?://|^|;)[^:/@\s;]*:)[^@/\s;]*@", r"\1***@", value)


def validate(conf: Mapping[str, Any]) -> None:
    """Check every ``EVENTLIB_*`` key of ``conf`` (an app's config, defaults set).

    :raises ConfigurationError: for a key that names no setting (with the nearest one), or a
        value of the wrong type (naming its key).
    """
    unknown = sorted(k for k in conf if isinstance(k, str) and k.startswith(PREFIX) and k not in SETTINGS)
    if unknown:
        problems = []
        for key in unknown:
            near = _nearest(key.removeprefix(PREFIX), [k.removeprefix(PREFIX) for k in SETTINGS])
            problems.append(f"{key} (did you mean {PREFIX}{near}?)" if near else key)
        raise ConfigurationError(
            f"Unknown flask-eventlib setting{'s' if len(unknown) > 1 else ''} in app.config: {', '.join(problems)}. "
            "Every EVENTLIB_* key must name a setting (the README's configuration table lists them; "
            "flask_eventlib.config declares them)."
        )
    for key, declared in SETTINGS.items():
        if key in conf:
            declared.check(key, conf[key])


def _nearest(name: str, names: list[str]) -> str | None:
    """The name of ``names`` closest to ``name``, if one is close enough to be a typo of it."""
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return near[0] if near else None


def key_for(override: str) -> str:
    """Map a constructor keyword (``queue``) to its config key (``EVENTLIB_QUEUE``).

    :raises TypeError: for a keyword that names no setting.
    """
    key = PREFIX + override.upper()
    if key not in SETTINGS:
        names = [k.removeprefix(PREFIX).lower() for k in SETTINGS]
        near = _nearest(override.lower(), names)
        hint = f"did you mean {near!r}? " if near else ""
        raise TypeError(
            f"EventLib() got an unknown setting {override!r}; {hint}known settings: {', '.join(sorted(names))}"
        )
    return key


# -- the settings --------------------------------------------------------------------------------


def _url_prefix(key: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and (value == "" or value.startswith("/"))):
        raise _refuse(key, "a path starting with '/', e.g. '/event' (or '' for the root)", value)


#: Broker URL for the Celery app the extension creates (``redis://...`` or ``amqp://...``; several,
#: separated by ``;``, for Celery's fail-over). ``None`` means the embedded filesystem broker in
#: ``EVENTLIB_FILESYSTEM_BROKER_DIR``, which needs no server but serves only processes on this
#: machine (``init_app`` warns about it outside debug and testing).
BROKER_URL = setting("EVENTLIB_BROKER_URL", None, url(example="redis://127.0.0.1:6379/0", optional=True, several=True))
#: Folder of the embedded filesystem broker; default ``<app.instance_path>/eventlib-broker``.
FILESYSTEM_BROKER_DIR = setting("EVENTLIB_FILESYSTEM_BROKER_DIR", None, path)
#: Name of the Celery queue that carries events. Default ``"eventlib"``.
QUEUE = setting("EVENTLIB_QUEUE", "eventlib", text(example="eventlib"))
#: Extra Celery settings (a dict) applied to the Celery app the extension creates.
CELERY_CONFIG = setting(
    "EVENTLIB_CELERY_CONFIG", {}, dictionary(example="{'broker_transport_options': {'visibility_timeout': 7200}}")
)
#: Process events in the caller, synchronously, through the full encode/decode round trip.
#: Default ``False``.
ALWAYS_EAGER = setting("EVENTLIB_ALWAYS_EAGER", False, boolean)
#: In eager mode, re-raise a handler's exception instead of only logging it. Default ``False``.
PROPAGATE_ERRORS = setting("EVENTLIB_PROPAGATE_ERRORS", False, boolean)
#: ``{"label": "dotted.module"}``: events modules outside blueprints. Default ``{}``.
EVENT_MODULES = setting("EVENTLIB_EVENT_MODULES", {}, dictionary(example="{'web': 'shop.web_events'}", values=str))
#: Dotted names of modules to import at ``init_app`` so their ``@handler`` functions register.
#: Default ``[]``.
HANDLER_MODULES = setting("EVENTLIB_HANDLER_MODULES", [], strings(example="['shop.receipts']"))
#: Inside a request, keep the request's events and send them together when it ends.
#: Default ``True``.
BATCH_REQUESTS = setting("EVENTLIB_BATCH_REQUESTS", True, boolean)
#: Send a request's events even when it failed (an exception, or a status of 400 or more).
#: ``False`` sends them only for successful requests, like publishing after a commit.
#: Default ``True``.
SEND_ON_FAILED_REQUEST = setting("EVENTLIB_SEND_ON_FAILED_REQUEST", True, boolean)
#: The most events in one broker message. Default ``100``.
MAX_EVENTS_PER_MESSAGE = setting("EVENTLIB_MAX_EVENTS_PER_MESSAGE", 100, integer(minimum=1))
#: The least time, in seconds, between two messages of the background sender: events that come
#: within it of the last message wait for the next, so under load a message carries the events of
#: many requests; after a quiet spell an event goes at once. ``0``: every batch at once.
#: Default ``0.02``.
PUBLISH_LINGER = setting("EVENTLIB_PUBLISH_LINGER", 0.02, number())
#: How many messages waiting in the broker's queue mean that the workers are behind: then the
#: sender waits up to ``EVENTLIB_PUBLISH_BACKLOG_LINGER`` between two messages, or until it has
#: ``EVENTLIB_MAX_EVENTS_PER_MESSAGE`` events, so what the workers catch up on is full messages.
#: ``0``: never. Default ``50``.
PUBLISH_BACKLOG_DEPTH = setting("EVENTLIB_PUBLISH_BACKLOG_DEPTH", 50, integer(minimum=0))
#: The least time, in seconds, between two messages while the workers are behind. Default ``0.5``.
PUBLISH_BACKLOG_LINGER = setting("EVENTLIB_PUBLISH_BACKLOG_LINGER", 0.5, number())
#: Seconds the sender waits for the broker (to connect, for Redis's reply, for RabbitMQ's confirm
#: of a publish) before spooling events locally. Default ``2.0``.
PUBLISH_TIMEOUT = setting("EVENTLIB_PUBLISH_TIMEOUT", 2.0, number(above=True))
#: The SQLite file where events wait while the broker is down;
#: default ``<app.instance_path>/eventlib-spool.sqlite3``.
SPOOL_PATH = setting("EVENTLIB_SPOOL_PATH", None, path)
#: The most events the spool holds; past that new events are dropped, counted and logged.
#: Default ``100000``.
SPOOL_MAX_EVENTS = setting("EVENTLIB_SPOOL_MAX_EVENTS", 100_000, integer(minimum=1))
#: What a logged event survives before the broker has it: ``"process"`` (the default: the death
#: of the process that logged it, SIGKILL included, through the local log), ``"machine"`` (power
#: loss too: the local log is synced to disk, once per request), or ``"memory"`` (neither: events
#: wait in memory until sent).
DURABILITY = setting("EVENTLIB_DURABILITY", "process", one_of("memory", "process", "machine"))
#: The folder of the local log's segment files, shared by the processes of one deployment;
#: default: the spool's path without its extension, plus ``-log``
#: (``<app.instance_path>/eventlib-spool-log``).
LOCAL_LOG_DIR = setting("EVENTLIB_LOCAL_LOG_DIR", None, path)
#: The most bytes one process's local log holds; past that new events wait in memory only,
#: counted, logged and signalled. Default ``67108864`` (64 MiB).
LOCAL_LOG_MAX_BYTES = setting("EVENTLIB_LOCAL_LOG_MAX_BYTES", 64 * 1024 * 1024, integer(minimum=1))
#: How many times a failing handler is retried (after its first attempt). Default ``3``.
RETRIES = setting("EVENTLIB_RETRIES", 3, integer(minimum=0))
#: Seconds before a handler's first retry; later retries wait twice as long each, with jitter.
#: Default ``1.0``.
RETRY_BACKOFF = setting("EVENTLIB_RETRY_BACKOFF", 1.0, number())
#: The longest wait between two attempts of a handler, in seconds. Default ``300.0``.
RETRY_BACKOFF_MAX = setting("EVENTLIB_RETRY_BACKOFF_MAX", 300.0, number())
#: Seconds during which a handler that succeeded for an event id is not run again for a
#: redelivery or a client retry of the same id; ``0`` turns dedup off. Default ``86400``.
DEDUP_TTL = setting("EVENTLIB_DEDUP_TTL", 86_400, number())
#: The longest time, in seconds, a worker may keep the dedup marks of a message's finished events
#: before writing them to the store, so that the events finishing within it share one write
#: (fewer round trips for fast handlers). The price: a worker killed mid-message (SIGKILL, OOM, a
#: handler that kills it) re-runs the handlers that finished in its last interval, besides the one
#: it was in. A handler that takes longer is marked as soon as it ends, and every mark is written
#: before the message is acknowledged. Default ``0.01``: a message of fast handlers is marked in
#: one write, which bought 8 to 25 % of the worker's throughput (bench rows 3a and 3d, 2026-12-07);
#: ``0`` writes after every event, so that only the handler cut off runs again.
DEDUP_MARK_INTERVAL = setting("EVENTLIB_DEDUP_MARK_INTERVAL", 0.01, number())
#: Seconds a worker's claim on a handler it is about to run lasts, renewed every third of it
#: while the handler runs, so that two deliveries of the same event at the same moment do not
#: both run it; a crashed worker's claims end with it. With dedup only; ``0`` turns claims off.
#: Default ``60``.
CLAIM_TTL = setting("EVENTLIB_CLAIM_TTL", 60, number())
#: Where dedup marks and dead letters live: ``redis://...``, ``sqlite:////path`` or
#: ``memory://``. Default: the broker's Redis, else ``<app.instance_path>/eventlib-store.sqlite3``
#: (``memory://`` in eager mode).
STORE_URL = setting(
    "EVENTLIB_STORE_URL",
    None,
    url(
        schemes=("redis", "rediss", "unix", "sqlite", "memory"),
        example="redis://127.0.0.1:6379/0",
        optional=True,
    ),
)


def _streams(key: str, value: Any) -> None:
    example = "{'analytics': ['deals.*', 'web.PageView']}"
    dictionary(example=example)(key, value)
    for stream, targets in value.items():
        strings(example=example)(f"{key}[{stream!r}]", targets)
        for target in targets:
            try:
                check_target(target)
            except ConfigurationError:
                raise ConfigurationError(
                    f"{key}[{stream!r}] names {target!r}, which is not an event target: use 'app.EventName' "
                    "(e.g. 'deals.DealClick'), 'app.*' for every event of an app, or '*' for every event"
                ) from None


def _optional_seconds(key: str, value: Any) -> None:
    if value is not None:
        number(above=True)(key, value)


#: ``{"stream": ["app.EventName", "app.*", "*"]}``: the worker also publishes each event whose
#: name matches one of a stream's targets to that Redis Stream, once per event id, for consumers
#: outside the app (``flask eventlib consume``; ``docs/streams.md``). Default ``{}``.
STREAMS = setting("EVENTLIB_STREAMS", {}, _streams)
#: The Redis of the streams; default: the broker's Redis, else the store's.
STREAMS_URL = setting(
    "EVENTLIB_STREAMS_URL",
    None,
    url(schemes=("redis", "rediss", "unix"), example="redis://127.0.0.1:6379/0", optional=True),
)
#: Each stream is trimmed to about this many entries (``XADD ... MAXLEN ~``: whole nodes of 100
#: entries, so up to 100 more). Default ``1000000``.
STREAMS_MAXLEN = setting("EVENTLIB_STREAMS_MAXLEN", 1_000_000, integer(minimum=1))
#: Seconds after which entries are trimmed too (``MINID ~``), whatever the length; ``None``: the
#: length alone bounds them. Default ``None``.
STREAMS_MAX_AGE = setting("EVENTLIB_STREAMS_MAX_AGE", None, _optional_seconds)
#: Register ``POST <EVENTLIB_URL_PREFIX>/log``, where browsers log public events. Default ``True``.
HTTP_ENABLED = setting("EVENTLIB_HTTP_ENABLED", True, boolean)
#: URL prefix of the browser endpoint. Default ``"/event"`` (the endpoint is ``/event/log``).
URL_PREFIX = setting("EVENTLIB_URL_PREFIX", "/event", _url_prefix)
#: Answer the browser endpoint through Flask's dispatch, as a view: the app's ``before_request``
#: and ``after_request`` hooks, its session and extensions (CSRFProtect, Flask-Limiter, Flask-Login)
#: then apply to it, and the events' ``clean()`` can read ``flask.request``. Default ``False``: a
#: front door in front of Flask answers it, in the app's context but without a request context,
#: at about the cost of a bare Flask view (see "Logging from the browser" in the README).
HTTP_THROUGH_FLASK = setting("EVENTLIB_HTTP_THROUGH_FLASK", False, boolean)
#: The most events in one request to the browser endpoint. Default ``50``.
MAX_BATCH = setting("EVENTLIB_MAX_BATCH", 50, integer(minimum=1))
#: The largest body (and query string), in bytes, the browser endpoint reads. Default ``65536``.
MAX_CONTENT_LENGTH = setting("EVENTLIB_MAX_CONTENT_LENGTH", 65_536, integer(minimum=1))
#: Origins (``"https://www.example.com"``) besides the app's own whose pages may log events
#: through the browser endpoint. Default ``[]``.
ALLOWED_ORIGINS = setting("EVENTLIB_ALLOWED_ORIGINS", [], strings(example="['https://www.example.com']"))
#: Requests per client address to the browser endpoint, in the notation of ``limits`` (and Flask-Limiter)
#: (``"120/minute"``, ``"10/second;500/hour"``); ``None`` turns the limit off.
#: Default ``"120/minute"``.
RATE_LIMIT = setting("EVENTLIB_RATE_LIMIT", "120/minute", text(example="120/minute", optional=True))
#: Where the rate limit's counters live: ``memory://`` (per process) or ``redis://...`` (shared
#: by every worker process). Default ``"memory://"``.
RATE_LIMIT_STORAGE_URL = setting(
    "EVENTLIB_RATE_LIMIT_STORAGE_URL", "memory://", url(example="redis://127.0.0.1:6379/0", optional=True)
)


def needs(module: str, package: str, extra: str) -> Check:
    """``True`` or ``False``; ``True`` only where ``module`` is installed (from ``package``, in
    ``pip install 'flask-eventlib[extra]'``)."""

    def check(key: str, value: Any) -> None:
        boolean(key, value)
        if value and not _installed(module):
            raise ConfigurationError(
                f"{key} = True needs the {package} package, which is not installed: "
                f"pip install 'flask-eventlib[{extra}]' (or set {key} = False)"
            )

    return check


def _installed(module: str) -> bool:
    try:  # a submodule's spec imports its parent, which may be missing too
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _path_or_none(key: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value.startswith("/")):
        raise _refuse(key, "a path starting with '/', e.g. '/metrics', or None to serve none", value)


#: Count events and handlers in Prometheus metrics (``flask_eventlib.metrics``; needs
#: ``pip install 'flask-eventlib[metrics]'``). Default ``False``.
METRICS = setting("EVENTLIB_METRICS", False, needs("prometheus_client", "prometheus-client", "metrics"))
#: Where the app serves the metrics, with ``EVENTLIB_METRICS``; ``None`` serves none (route
#: ``flask_eventlib.metrics.view`` yourself). Default ``"/metrics"``.
METRICS_URL = setting("EVENTLIB_METRICS_URL", "/metrics", _path_or_none)
#: Carry the trace context of the code that calls ``log()`` in each event, and run each handler
#: in an OpenTelemetry span that continues it (``flask_eventlib.tracing``; needs
#: ``pip install 'flask-eventlib[tracing]'``). Default ``False``.
TRACING = setting("EVENTLIB_TRACING", False, needs("opentelemetry.trace", "opentelemetry-api", "tracing"))


def _console_prefix(key: str, value: Any) -> None:
    if not (isinstance(value, str) and value.startswith("/") and len(value) > 1 and not value.endswith("/")):
        raise _refuse(key, "a path starting with '/', e.g. '/eventlib'", value)


def _function(key: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise _refuse(key, "a function of no arguments (or None), e.g. lambda: current_user.is_admin", value)


def _optional_boolean(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise _refuse(key, "True, False or None", value)


#: Serve the operations console at ``EVENTLIB_CONSOLE_URL_PREFIX`` and gather its figures in this
#: process. Outside debug and testing, ``init_app`` refuses it without ``EVENTLIB_CONSOLE_ACCESS``.
#: Default ``False``.
CONSOLE = setting("EVENTLIB_CONSOLE", False, boolean)
#: URL prefix of the console. Default ``"/eventlib"``.
CONSOLE_URL_PREFIX = setting("EVENTLIB_CONSOLE_URL_PREFIX", "/eventlib", _console_prefix)
#: Who may use the console: a function of no arguments, called in each of its requests, that
#: returns true to let the request in (false: 403; a response, such as a redirect to the login
#: page: that response). Needed outside debug and testing. Also ``EventLib(console_access=...)``.
#: Default ``None``.
CONSOLE_ACCESS = setting("EVENTLIB_CONSOLE_ACCESS", None, _function)
#: Keys (any case, at any depth) whose values the console shows as ``[redacted]`` in events' data
#: and context. Default ``["password", "secret", "token"]``.
CONSOLE_REDACT = setting(
    "EVENTLIB_CONSOLE_REDACT", ["password", "secret", "token"], strings(example="['password', 'card_number']")
)
#: Gather the console's figures in this process (counts, durations, traces, a heartbeat), written
#: about once a second beside the store. ``None``: when ``EVENTLIB_CONSOLE`` is on; set ``True`` in
#: workers whose app does not serve the console. Default ``None``.
CONSOLE_FIGURES = setting("EVENTLIB_CONSOLE_FIGURES", None, _optional_boolean)

#: Every setting's default, by key (derived from :data:`SETTINGS`).
DEFAULTS: dict[str, Any] = {key: declared.default for key, declared in SETTINGS.items()}
