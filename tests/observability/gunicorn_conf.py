"""The gunicorn settings docs/metrics.md shows: ``gunicorn -c tests/observability/gunicorn_conf.py``.

The test empties the folder itself; a deployment does it before gunicorn starts (as here, at
import, in the master only: gunicorn reads this file once, before it forks).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    # Removes the exited worker's live gauges (flask-eventlib has none: its counters and
    # histograms stay in the folder, so totals do not go back when a worker is recycled).
    multiprocess.mark_process_dead(worker.pid)
