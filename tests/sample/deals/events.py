from __future__ import annotations

from marshmallow import Schema, fields

from flask_eventlib import BaseEvent, handler

from ..recorder import record


class DealClick(BaseEvent):
    def clean(self) -> None:
        self.require_data_keys(["deal_id"])

    @handler
    def first(self) -> None:
        record("DealClick.first", self)

    @handler
    def second(self) -> None:
        record("DealClick.second", self)

    def not_a_handler(self) -> None:
        record("DealClick.not_a_handler", self)


class SpecialClick(DealClick):
    """Inherits DealClick's method handlers, then adds its own."""

    @handler
    def third(self) -> None:
        record("SpecialClick.third", self)


class PurchaseSchema(Schema):
    deal_id = fields.Integer(required=True)
    amount = fields.Decimal(required=True)
    coupon = fields.String(load_default=None)


class Purchase(BaseEvent):
    schema = PurchaseSchema

    @handler
    def store(self) -> None:
        record("Purchase.store", self)


class Typed(BaseEvent):
    """Records the repr and type of every value it receives."""

    @handler
    def store(self) -> None:
        record("Typed.store", self)


class Flaky(BaseEvent):
    """Its first handler always fails; the others must still run."""

    @handler
    def explode(self) -> None:
        raise RuntimeError(f"boom for {self.data('n')}")

    @handler
    def after(self) -> None:
        record("Flaky.after", self)


class Renamed(BaseEvent):
    """clean() returns a new dict, which replaces the data."""

    def clean(self) -> dict[str, object]:
        return {"upper": str(self.data("word", "")).upper()}

    @handler
    def store(self) -> None:
        record("Renamed.store", self)
