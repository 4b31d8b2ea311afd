from __future__ import annotations

from flask_eventlib import BaseEvent, handler

# Imported, not defined here: it must not become "users.DealClick".
from ..deals.events import DealClick  # noqa: F401
from ..recorder import record

NOT_AN_EVENT = 42


class SignedUp(BaseEvent):
    def clean(self) -> None:
        self.require_data_keys(["email", "plan"])

    @handler
    def welcome(self) -> None:
        record("SignedUp.welcome", self)
