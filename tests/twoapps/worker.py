"""A worker process holding both apps, as the test process does; it serves ``TWOAPPS_WHICH``'s.

``celery -A tests.twoapps.worker:celery worker``; the settings come from the environment.
"""

import os

from . import create

apps = {
    which: create(
        which,
        EVENTLIB_BROKER_URL=os.environ["SAMPLE_BROKER_URL"],
        EVENTLIB_QUEUE=os.environ[f"TWOAPPS_{which.upper()}_QUEUE"],
        EVENTLIB_STORE_URL=os.environ["SAMPLE_STORE_URL"],
        SAMPLE_RECORD_KEY=os.environ["SAMPLE_RECORD_KEY"],
    )
    for which in ("north", "south")
}
celery = apps[os.environ["TWOAPPS_WHICH"]].extensions["eventlib"].celery
