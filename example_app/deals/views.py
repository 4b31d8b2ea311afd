"""Views of the ``deals`` blueprint: each logs an event and redirects back to the deals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

import flask_eventlib

bp = Blueprint("deals", __name__)


@dataclass(frozen=True)
class Deal:
    """A deal on the front page."""

    id: int
    title: str
    price: Decimal


#: The deals on offer, by id (hardcoded: the example is about events, not a catalogue).
DEALS: dict[int, Deal] = {
    deal.id: deal
    for deal in (
        Deal(7, "Two coffees for one", Decimal("3.50")),
        Deal(42, "Half-price bike repair", Decimal("19.90")),
        Deal(99, "Cinema night for two", Decimal("12.00")),
    )
}


def _logged(name: str, event_id: str) -> Response:
    """Back to the deals, which say what was logged; the event's id is in a header too (the tests use it)."""
    response = redirect(url_for("site.index", logged=name, event=event_id), code=303)
    response.headers["X-Event-Id"] = event_id
    return response


@bp.post("/<int:deal_id>/click")
def click(deal_id: int) -> Response:
    """Log ``deals.DealClick``; a worker counts it."""
    if deal_id not in DEALS:
        abort(404)
    return _logged("deals.DealClick", flask_eventlib.log("deals.DealClick", {"deal_id": deal_id}))


@bp.post("/<deal_id>/buy")
def buy(deal_id: str) -> Response | tuple[str, int]:
    """Log ``deals.Purchase`` with the raw strings: the event's schema converts and checks them."""
    data = {"deal_id": deal_id, "amount": request.form.get("amount", "")}
    if request.form.get("coupon"):
        data["coupon"] = request.form["coupon"]
    try:
        event_id = flask_eventlib.log("deals.Purchase", data)
    except flask_eventlib.ValidationError as exc:
        return render_template("error.html", title="Purchase refused", error=exc), 400
    return _logged("deals.Purchase", event_id)
