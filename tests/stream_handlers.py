"""``@external_handler`` functions for the stream tests' consumer processes (no Flask app).

Each run of ``record`` adds one to ``<STREAM_TEST_KEY>:runs`` (a hash by event id) and to
``<STREAM_TEST_KEY>:by`` (by process id), in one round trip, so a test sees every handler run of
every consumer process. ``STREAM_TEST_SLEEP`` slows each run; ``STREAM_TEST_KILL_AT=N`` makes the
process SIGKILL itself right after its N-th run was recorded, before its dedup mark is written.
``deals.Flaky`` always fails.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import redis

from flask_eventlib import BaseEvent, external_handler

_state: dict[str, Any] = {"runs": 0}


def _client() -> redis.Redis:
    found = _state.get("client")
    if found is None or _state.get("pid") != os.getpid():
        found = _state["client"] = redis.Redis.from_url(
            os.environ.get("EVENTLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        )
        _state["pid"] = os.getpid()
    return found  # type: ignore[no-any-return]


@external_handler("deals.*")
def record(event: BaseEvent) -> None:
    key = os.environ["STREAM_TEST_KEY"]
    pause = float(os.environ.get("STREAM_TEST_SLEEP") or 0)
    if pause:
        time.sleep(pause)  # a slow handler, the point of the test
    pipe = _client().pipeline(transaction=False)
    pipe.hincrby(f"{key}:runs", event.id or "", 1)
    pipe.hincrby(f"{key}:by", str(os.getpid()), 1)
    pipe.execute()
    _state["runs"] += 1
    if _state["runs"] == int(os.environ.get("STREAM_TEST_KILL_AT") or 0):
        os.kill(os.getpid(), signal.SIGKILL)


@external_handler("deals.Flaky")
def always_fails(event: BaseEvent) -> None:
    raise RuntimeError(f"flaky {event.id}")
