"""The module a test worker starts from: ``celery -A tests.sample.worker:celery worker``.

Configured from the environment by the test that starts it; without ``SAMPLE_BROKER_URL`` it uses
the embedded filesystem broker in ``SAMPLE_FS_DIR``. ``SAMPLE_CONFIG`` (JSON) adds app settings.
"""

import json
import os

from flask_eventlib import EventLib

from . import create_app

eventlib = EventLib()
app = create_app(
    eventlib,
    EVENTLIB_BROKER_URL=os.environ.get("SAMPLE_BROKER_URL") or None,
    EVENTLIB_FILESYSTEM_BROKER_DIR=os.environ.get("SAMPLE_FS_DIR"),
    EVENTLIB_QUEUE=os.environ["SAMPLE_QUEUE"],
    SAMPLE_RECORD_KEY=os.environ["SAMPLE_RECORD_KEY"],
    EVENTLIB_STORE_URL=os.environ.get("SAMPLE_STORE_URL") or None,
    EVENTLIB_CELERY_CONFIG=json.loads(os.environ.get("SAMPLE_CELERY_CONFIG") or "{}"),
    # A restarted worker must find the local log its predecessor left: one path for all of them.
    **({"EVENTLIB_SPOOL_PATH": os.environ["SAMPLE_SPOOL_PATH"]} if os.environ.get("SAMPLE_SPOOL_PATH") else {}),
    **json.loads(os.environ.get("SAMPLE_CONFIG") or "{}"),
)
celery = eventlib.celery
