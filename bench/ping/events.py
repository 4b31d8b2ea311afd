"""``bench.Ping``: the event every benchmark logs; its handler does what the raw Celery task does."""

from __future__ import annotations

from flask_eventlib import BaseEvent, handler

from ..effect import touch


class Ping(BaseEvent):
    """Public, so the browser endpoint accepts it; checked like a typical event."""

    public = True

    def clean(self) -> None:
        self.require_data_keys(["key", "n"])

    @handler
    def count(self) -> None:
        touch(self.data["key"], self.data.get("total", 0))
