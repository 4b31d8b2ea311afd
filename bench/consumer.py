"""The stream consumer's handler in ``python -m bench.streams``: what ``bench.Ping``'s handler does.

One Redis ``INCR`` per event (:func:`bench.effect.touch`), under ``<BENCH_KEY>:<BENCH_CONSUMER_TAG>``
so that the consumer's count and timestamps are apart from the worker's.
"""

from __future__ import annotations

import os

from flask_eventlib import BaseEvent, external_handler

from .effect import touch


@external_handler("bench.Ping")
def count(event: BaseEvent) -> None:
    touch(f"{event.data['key']}:{os.environ['BENCH_CONSUMER_TAG']}", event.data.get("total", 0))
