"""Optional Redis counters: used only when ``EXAMPLE_REDIS_URL`` is configured."""

from __future__ import annotations

from collections.abc import Iterable

import redis
from flask import Flask, current_app

_EXTENSION_KEY = "example_redis"


def enabled() -> bool:
    """Whether the current app counts in Redis too."""
    return bool(current_app.config.get("EXAMPLE_REDIS_URL"))


def client() -> redis.Redis:
    """The current app's Redis client, made on first use and kept for the process's life."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found: redis.Redis | None = app.extensions.get(_EXTENSION_KEY)
    if found is None:
        found = app.extensions[_EXTENSION_KEY] = redis.Redis.from_url(app.config["EXAMPLE_REDIS_URL"])
    return found


def close(app: Flask) -> None:
    """Close ``app``'s Redis client if it made one (a process that ends need not bother)."""
    found: redis.Redis | None = app.extensions.pop(_EXTENSION_KEY, None)
    if found is not None:
        found.close()


def key(name: str) -> str:
    """``name`` behind the configured prefix (``EXAMPLE_REDIS_PREFIX``)."""
    return f"{current_app.config['EXAMPLE_REDIS_PREFIX']}{name}"


def incr(name: str) -> int:
    """Add one to the counter ``name``; return its new value."""
    return int(client().incr(key(name)))


def read(names: Iterable[str]) -> dict[str, int]:
    """The counters ``names`` (0 for a missing one)."""
    names = list(names)
    if not names:
        return {}
    values = client().mget([key(name) for name in names])
    return {name: int(value or 0) for name, value in zip(names, values, strict=True)}
