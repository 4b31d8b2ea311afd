"""The chaos suite: real workers killed, a real Redis stopped, RabbitMQ cut off by a proxy; figures at the end.

``EVENTLIB_CHAOS_EVENTS`` scales the number of events (default 1000).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

CHAOS_EVENTS = int(os.environ.get("EVENTLIB_CHAOS_EVENTS", "1000"))
REPORT: list[str] = []


@pytest.fixture
def chaos_report() -> Iterator[list[str]]:
    """Lines appended here are printed in the test summary, even when the test passes."""
    yield REPORT
