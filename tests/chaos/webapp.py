"""The sample app behind gunicorn for the process-death tests: ``gunicorn tests.chaos.webapp:app``.

``GET /work/<n>`` logs ``n`` ``ops.Work`` events and answers their ids. Configured from the
environment by the test that starts it; every gunicorn worker shares one spool and local log.
"""

from __future__ import annotations

import os
import time

from flask import jsonify, request

from flask_eventlib import log
from tests.sample import create_app

app = create_app(
    EVENTLIB_BROKER_URL=os.environ["SAMPLE_BROKER_URL"],
    EVENTLIB_QUEUE=os.environ["SAMPLE_QUEUE"],
    SAMPLE_RECORD_KEY=os.environ["SAMPLE_RECORD_KEY"],
    EVENTLIB_STORE_URL=os.environ["SAMPLE_STORE_URL"],
    EVENTLIB_SPOOL_PATH=os.environ["SAMPLE_SPOOL_PATH"],
    EVENTLIB_DURABILITY=os.environ.get("SAMPLE_DURABILITY", "process"),
)


@app.get("/ping")
def ping() -> str:
    return "pong"


@app.get("/work/<int:n>")
def work(n: int) -> object:
    """``?ms=`` makes the request last that long after logging (under gevent, a greenlet sleep)."""
    ids = [log("ops.Work", {"ms": 0}) for _ in range(n)]
    time.sleep(int(request.args.get("ms", 0)) / 1000)  # the request's own work, not a wait for work
    return jsonify(ids)
