"""Events of the ``accounts`` blueprint."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, fields, validate

from flask_eventlib import BaseEvent, ValidationError, handler

from .. import store

#: Good enough for a demo: something@something.tld, no spaces.
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class SignedUpSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(max=254))


class SignedUp(BaseEvent):
    """Someone signed up. Data: ``{"email": str}``, stripped and lower-cased by ``clean()``.

    Public: the sign-up page logs it from the browser and shows the server's validation errors
    (``POST /accounts/signup`` logs it without JavaScript). In a real app an account would be
    created by a view, which would log the event, private, itself.
    """

    public = True
    schema = SignedUpSchema

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.data  # the schema: a string, no other key
        email = str(data["email"]).strip().lower()
        if not EMAIL.fullmatch(email):
            raise ValidationError(
                f"{email!r} is not a valid email address.",
                messages={"email": ["Not a valid email address."]},
            )
        return {"email": email}

    @handler
    def count_signup(self) -> None:
        store.increment("signups")
