"""Events of the ``deals`` blueprint: ``deals.DealClick`` and ``deals.Purchase``."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from flask_eventlib import BaseEvent, handler

from .. import store
from .views import DEALS


class DealClickSchema(Schema):
    """What a browser may send: the id of a deal on offer, nothing else."""

    deal_id = fields.Integer(required=True, strict=True, validate=validate.OneOf(sorted(DEALS)))


class DealClick(BaseEvent):
    """Someone clicked a deal. Data: ``{"deal_id": int}``.

    Public: the deals page logs it from the browser, ``yipit.event.log("deals.DealClick", {deal_id: 7})``.
    Anyone can send a public event, so its schema checks every field and refuses unknown keys.
    """

    public = True
    schema = DealClickSchema

    @handler
    def count_click(self) -> None:
        """Method handlers run first, in the worker, with ``self`` the event."""
        store.increment(f"clicks:{self.data['deal_id']}")


class PurchaseSchema(Schema):
    """Loads a purchase: strings from a form or URL become an ``int`` and a ``Decimal``."""

    deal_id = fields.Integer(required=True)
    amount = fields.Decimal(required=True, places=2, validate=validate.Range(min=0, min_inclusive=False))
    coupon = fields.String(load_default=None, validate=validate.Length(max=32))


class Purchase(BaseEvent):
    """Someone bought a deal. The default ``clean()`` loads the data through ``schema``."""

    schema = PurchaseSchema

    @handler
    def count_purchase(self) -> None:
        store.increment("purchases")
