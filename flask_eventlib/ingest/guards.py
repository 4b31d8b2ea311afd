"""The ingest's guards before any event is read: the origin check (CSRF) and the rate limit.

Flask-free: the view passes the headers and the app's own URL as strings.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import cast
from urllib.parse import urlsplit

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .. import config
from .errors import Refused

logger = logging.getLogger("flask_eventlib")

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(value: str, *, strict: bool = False) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; ``None`` if not an origin.

    :param strict: refuse a path, query or credentials (for configured origins; a ``Referer``
        has a path).
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    scheme = parts.scheme.lower()
    if not scheme or not host:
        return None
    if strict and (parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc or "*" in host):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def check_origin(origin: str | None, referer: str | None, host_url: str, allowed: frozenset[str]) -> None:
    """Refuse a browser request from a foreign page (CSRF); a request without both headers passes.

    :param origin: the ``Origin`` header, if sent; it beats the ``Referer``.
    :param referer: the ``Referer`` header, if sent.
    :param host_url: the app's own URL as the request reached it, e.g. ``http://localhost/``.
    :param allowed: the other origins allowed, normalised (``HttpSettings.allowed_origins``).
    :raises Refused: 403 for an origin that is neither the app's own nor allowed.
    """
    if origin is not None:
        source, candidate = "Origin", normalise_origin(origin)
    elif referer is not None:
        source, candidate = "Referer", normalise_origin(referer)
    else:
        return  # not sent by a browser (curl, another server): nothing to forge
    if candidate is not None and (candidate == normalise_origin(host_url) or candidate in allowed):
        return
    raise Refused(
        403,
        "origin_refused",
        f"The request's {source} is neither this site nor one of {config.ALLOWED_ORIGINS}.",
    )


class RateLimit:
    """Fixed-window counters per client address, kept by the ``limits`` library (Flask-Limiter's
    engine) in memory or in a shared storage such as Redis.

    Used directly rather than through Flask-Limiter, whose hooks run on every request of the app
    (about 20 us each, and 100 us on this endpoint): this checks the endpoint's requests alone.
    If the storage fails, counting falls back to this process's memory for a minute at a time
    (fail open: a request is never refused or held up because the storage is down). A Redis storage
    answers within :attr:`STORAGE_TIMEOUT` or counts as failed, so a Redis that stops answering
    costs a request tens of milliseconds, not seconds; ``?socket_timeout=`` in the URL overrides it.

    :param rate: e.g. ``"120/minute"`` or ``"10/second;500/hour"``.
    :param storage_url: ``memory://`` or e.g. ``redis://host:6379/0``.
    """

    _NAMESPACE = "flask-eventlib"
    _RETRY_STORAGE_AFTER = 60.0
    #: Seconds a Redis storage may take to connect or answer before it counts as failed.
    STORAGE_TIMEOUT = 0.05

    def __init__(self, rate: str, storage_url: str) -> None:
        self.rate = rate
        self.items: list[RateLimitItem] = parse_many(rate)
        options: dict[str, float] = {}
        if storage_url.split(":", 1)[0].startswith("redis"):
            options = {"socket_timeout": self.STORAGE_TIMEOUT, "socket_connect_timeout": self.STORAGE_TIMEOUT}
        self._limiter: FixedWindowRateLimiter | MemoryWindows
        if storage_url.split(":", 1)[0] == "memory":
            self._limiter = MemoryWindows()
        else:
            self._limiter = FixedWindowRateLimiter(cast(Storage, storage_from_string(storage_url, **options)))
        self._fallback = MemoryWindows()
        self._storage_down_until = 0.0

    def check(self, client: str) -> None:
        """Count a request of ``client``.

        :raises Refused: 429, with the seconds until it may retry, when ``client`` is over the limit.
        """
        retry_after = self.hit(client)
        if retry_after is not None:
            raise Refused(
                429,
                "rate_limited",
                f"Too many requests from this client (at most {self.rate}); retry after Retry-After seconds.",
                retry_after=retry_after,
            )

    def hit(self, client: str) -> int | None:
        """Count a request of ``client``; ``None`` if allowed, else the seconds until it may retry."""
        if time.monotonic() >= self._storage_down_until:
            try:
                return self._hit(self._limiter, client)
            except Exception as exc:
                logger.warning("The rate limit's storage failed (%s); counting in memory for a minute", exc)
                self._storage_down_until = time.monotonic() + self._RETRY_STORAGE_AFTER
        return self._hit(self._fallback, client)

    def _hit(self, limiter: FixedWindowRateLimiter | MemoryWindows, client: str) -> int | None:
        if isinstance(limiter, MemoryWindows):
            return limiter.hit(self.items, client)
        for item in self.items:
            if not limiter.hit(item, self._NAMESPACE, client):
                reset_at, _ = limiter.get_window_stats(item, self._NAMESPACE, client)
                return max(1, math.ceil(reset_at - time.time()))
        return None


class MemoryWindows:
    """Fixed-window counters in this process's memory, for ``memory://`` and as the fallback.

    As with ``limits``' MemoryStorage, a client's window opens at its first hit and lasts the
    rate's period. That storage expires keys with a timer thread, started again after each expiry:
    a thread start (hundreds of microseconds) every few requests under load. Here ended windows are
    swept by the request that finds a sweep due, at most once a second. At most
    :attr:`MAX_CLIENTS` counters are kept; past that (a flood of addresses), every counter is
    dropped and counting starts over, so memory stays bounded and no client is refused for
    another's traffic.
    """

    MAX_CLIENTS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (rate's position, client) -> [when its window ends, hits in it]
        self._counts: dict[tuple[int, str], list[float]] = {}
        self._swept = 0.0
        self._dropped_warned = False

    def hit(self, items: list[RateLimitItem], client: str) -> int | None:
        """Count a request of ``client`` against each of ``items`` in turn; ``None`` if allowed,
        else the seconds until the first window it is over ends (as with ``limits``, the hits
        that passed earlier items stay counted)."""
        now = time.monotonic()
        with self._lock:
            if now - self._swept >= 1.0:
                self._sweep(now)
            for position, item in enumerate(items):
                key = (position, client)
                counter = self._counts.get(key)
                if counter is None or counter[0] <= now:
                    counter = self._counts[key] = [now + item.get_expiry(), 0]
                counter[1] += 1
                if counter[1] > item.amount:
                    return max(1, math.ceil(counter[0] - now))
        return None

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [key for key, (ends, _) in self._counts.items() if ends <= now]:
            del self._counts[key]
        if len(self._counts) > self.MAX_CLIENTS:
            if not self._dropped_warned:
                logger.warning(
                    "The rate limit counts more than %d clients in this process: dropping its counters "
                    "(set EVENTLIB_RATE_LIMIT_STORAGE_URL to a Redis to count across processes)",
                    self.MAX_CLIENTS,
                )
                self._dropped_warned = True
            self._counts.clear()
