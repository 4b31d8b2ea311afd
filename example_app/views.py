"""The front page and the dashboard (``site`` blueprint; it has no events module)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request
from werkzeug.wrappers import Response

from . import redis_counters, store
from .deals import DEALS

bp = Blueprint("site", __name__)


@bp.get("/")
def index() -> str:
    """The deals, each with a click button and a buy form; after a form, what it logged."""
    logged = request.args.get("logged"), request.args.get("event")
    return render_template("index.html", deals=DEALS.values(), logged=logged if all(logged) else None)


def dashboard_data() -> dict[str, Any]:
    """What the workers have counted so far, read from SQLite (and Redis when configured)."""
    counts = store.counters()
    deal_ids = sorted({*DEALS, *(int(n.split(":", 1)[1]) for n in counts if n.startswith("clicks:"))})
    revenue = sum((Decimal(str(row.data["amount"])) for row in store.events("deals.Purchase", limit=None)), Decimal(0))
    data: dict[str, Any] = {
        "clicks": {str(deal_id): counts.get(f"clicks:{deal_id}", 0) for deal_id in deal_ids},
        "purchases": counts.get("purchases", 0),
        "revenue": str(revenue),
        "signups": counts.get("signups", 0),
        "redis_clicks": None,
        # The latest events, so the dashboard follows them as it follows the counts.
        "latest": [
            # ``text``: the data as the page shows it (Flask's ``tojson``), so a refresh changes nothing else.
            {
                "name": row.name,
                "data": row.data,
                "text": current_app.json.dumps(row.data),
                "logged_at": str(row.logged_at),
            }
            for row in store.events(limit=10)
        ],
    }
    if redis_counters.enabled():
        found = redis_counters.read(f"clicks:{deal_id}" for deal_id in deal_ids)
        data["redis_clicks"] = {str(deal_id): found[f"clicks:{deal_id}"] for deal_id in deal_ids}
    return data


@bp.get("/dashboard")
def dashboard() -> str:
    """The counts as a page, with the latest stored events."""
    return render_template("dashboard.html", data=dashboard_data(), deals=DEALS, events=store.events(limit=10))


@bp.get("/dashboard.json")
def dashboard_json() -> Response:
    """The counts as JSON."""
    return jsonify(dashboard_data())
