from __future__ import annotations

from marshmallow import Schema, fields, validate

from flask_eventlib import BaseEvent, handler

from ..recorder import record


class PageViewSchema(Schema):
    page = fields.String()
    param1 = fields.String()
    param2 = fields.String()


class PageView(BaseEvent):
    """Public: the spec's ``?__event__=app.EventName&param1=val1&param2=val2`` example."""

    public = True
    schema = PageViewSchema

    @handler
    def store(self) -> None:
        record("PageView.store", self)


class SearchSchema(Schema):
    query = fields.String(required=True)
    page = fields.Raw()  # kept as sent: a string from a query string or form, a number from JSON


class Search(BaseEvent):
    """Public, with a required key."""

    public = True
    schema = SearchSchema

    @handler
    def store(self) -> None:
        record("Search.store", self)


class RatingSchema(Schema):
    stars = fields.Integer(required=True, validate=validate.Range(min=1, max=5))


class Rating(BaseEvent):
    """Public, with a range check."""

    public = True
    schema = RatingSchema

    @handler
    def store(self) -> None:
        record("Rating.store", self)


class Internal(BaseEvent):
    """Private (the default): only server code may log it."""

    @handler
    def store(self) -> None:
        record("Internal.store", self)
