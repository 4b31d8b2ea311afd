"""Events of the ``accounts`` blueprint."""

from __future__ import annotations

import re
from typing import Any

from flask_eventlib import BaseEvent, ValidationError, handler

from .. import store

#: Good enough for a demo: something@something.tld, no spaces.
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class SignedUp(BaseEvent):
    """Someone signed up. Data: ``{"email": str}``, stripped and lower-cased by ``clean()``."""

    def clean(self) -> dict[str, Any]:
        self.require_data_keys(["email"])
        email = str(self.data["email"]).strip().lower()
        if not EMAIL.fullmatch(email):
            raise ValidationError(
                f"{email!r} is not a valid email address.",
                messages={"email": ["Not a valid email address."]},
            )
        return {"email": email}

    @handler
    def count_signup(self) -> None:
        store.increment("signups")
