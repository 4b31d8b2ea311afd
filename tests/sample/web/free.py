"""A public event without a schema, registered only by tests that need free-form data.

Not an ``events`` module, so the sample app does not discover it (``flask eventlib check`` would
rightly report it); tests register it in a fresh registry with ``EVENTLIB_EVENT_MODULES``.
"""

from __future__ import annotations

from flask_eventlib import BaseEvent, handler

from ..recorder import record


class Anything(BaseEvent):
    public = True

    @handler
    def store(self) -> None:
        record("Anything.store", self)


class Broken(BaseEvent):
    """A public event whose ``clean()`` fails with an error that is not a refusal (a bug in it)."""

    public = True

    def clean(self) -> None:
        raise RuntimeError("clean() of free.Broken has a bug")

    @handler
    def store(self) -> None:
        record("Broken.store", self)


class FromApp(BaseEvent):
    """A public event whose ``clean()`` reads the app's config: the front door runs it in the app's context."""

    public = True

    def clean(self) -> None:
        from flask import current_app

        self.data["tag"] = current_app.config["SAMPLE_TAG"]

    @handler
    def store(self) -> None:
        record("FromApp.store", self)


class FromRequest(BaseEvent):
    """A public event whose ``clean()`` reads ``flask.request``: only the view (through Flask) has one."""

    public = True

    def clean(self) -> None:
        from flask import request

        self.data["tag"] = request.headers.get("X-Tag", "")

    @handler
    def store(self) -> None:
        record("FromRequest.store", self)
