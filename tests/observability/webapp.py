"""The sample app with Prometheus metrics on, behind gunicorn: ``gunicorn tests.observability.webapp:app``.

``GET /log/<event>/<n>`` logs ``n`` events ``ops.<event>`` and answers the process id that served
it. Configured from the environment by the test that starts it (the same ``SAMPLE_*`` variables
as ``tests/sample/worker.py``); ``PROMETHEUS_MULTIPROC_DIR`` must be set before it starts.
"""

from __future__ import annotations

import os

from flask import jsonify

from flask_eventlib import log
from tests.sample import create_app

app = create_app(
    EVENTLIB_BROKER_URL=os.environ["SAMPLE_BROKER_URL"],
    EVENTLIB_QUEUE=os.environ["SAMPLE_QUEUE"],
    SAMPLE_RECORD_KEY=os.environ["SAMPLE_RECORD_KEY"],
    EVENTLIB_STORE_URL=os.environ["SAMPLE_STORE_URL"],
    EVENTLIB_SPOOL_PATH=os.environ["SAMPLE_SPOOL_PATH"],
    EVENTLIB_METRICS=True,
)


@app.get("/log/<event>/<int:n>")
def log_events(event: str, n: int) -> object:
    for _ in range(n):
        log(f"ops.{event}", {})
    return jsonify(pid=os.getpid())
