"""The ``accounts`` blueprint: a sign-up form that logs ``accounts.SignedUp``."""

from __future__ import annotations

from .views import bp

__all__ = ["bp"]
