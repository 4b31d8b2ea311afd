"""What the sample handlers do: append a JSON record of the event to a Redis list."""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from flask import current_app

from flask_eventlib import BaseEvent


def client() -> redis.Redis:
    """The current app's Redis client (one per app)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get("sample_redis")
    if found is None:
        found = app.extensions["sample_redis"] = redis.Redis.from_url(app.config["SAMPLE_REDIS_URL"])
    return found  # type: ignore[no-any-return]


def key(suffix: str) -> str:
    """A Redis key under this app's record key."""
    return f"{current_app.config['SAMPLE_RECORD_KEY']}:{suffix}"


def record(handler: str, event: BaseEvent, **extra: Any) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    entry = {
        "handler": handler,
        "id": event.id,
        "name": event.name,
        "data": {key: repr(value) for key, value in event.data.items()},
        "types": {key: type(value).__name__ for key, value in event.data.items()},
        "context": {key: repr(value) for key, value in event.context.items()},
        "pid": os.getpid(),
        "app": app.import_name,
        **extra,
    }
    client().rpush(app.config["SAMPLE_RECORD_KEY"], json.dumps(entry))
