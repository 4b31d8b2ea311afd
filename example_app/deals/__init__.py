"""The ``deals`` blueprint: a few hardcoded deals, and the events their buttons log."""

from __future__ import annotations

from .views import DEALS, Deal, bp

__all__ = ["DEALS", "Deal", "bp"]
