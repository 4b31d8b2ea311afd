"""The module a worker starts from: ``celery -A example_app.worker:celery worker``.

It builds the app from the environment, like the web process does, so both find the same broker
and the same database.
"""

from __future__ import annotations

from . import create_app

app = create_app()
#: The Celery app EventLib made for ``app``, with the events task bound to it.
celery = app.extensions["eventlib"].celery
