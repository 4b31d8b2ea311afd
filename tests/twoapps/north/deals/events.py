"""The north app's deals.DealClick: a different class from the other app's, with the same name."""

from __future__ import annotations

from flask_eventlib import BaseEvent, handler
from tests.sample.recorder import record


class DealClick(BaseEvent):
    def clean(self) -> None:
        self.require_data_keys(["north_deal"])

    @handler
    def count(self) -> None:
        record("north.DealClick.count", self)
