"""The bench app for child processes, configured by the runner through ``BENCH_CONFIG`` (JSON).

``gunicorn bench.wsgi:app``, ``celery -A bench.wsgi:celery worker`` (flask-eventlib's worker) and
``celery -A bench.wsgi:raw_celery worker`` (the baseline's).
"""

from __future__ import annotations

import json
import os

from .app import create_app

app, eventlib = create_app(**json.loads(os.environ["BENCH_CONFIG"]))
celery = eventlib.celery
raw_celery, raw_task = app.extensions["bench"]
