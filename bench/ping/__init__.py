"""The bench's blueprint: its ``events`` module declares ``bench.Ping``."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("bench", __name__)
