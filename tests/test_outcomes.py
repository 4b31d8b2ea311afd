"""The worker's one INFO line per event: each handler's outcome, so a user sees that handlers ran."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask import Flask

from flask_eventlib import BaseEvent, DontRetry, EventLib, handler, log


class Ordered(BaseEvent):
    @handler
    def count(self) -> None:
        pass

    @handler(retries=1, backoff=0)
    def flaky(self) -> None:
        raise ValueError("no stock")

    @handler
    def refuse(self) -> None:
        raise DontRetry("no email")


class Lonely(BaseEvent):
    pass


def lines(tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    app = Flask("outcomes", instance_path=str(tmp_path))
    EventLib(app, always_eager=True)
    state = app.extensions["eventlib"]
    state.registry.register_event("shop", Ordered)
    state.registry.register_event("shop", Lonely)
    with caplog.at_level(logging.INFO, logger="flask_eventlib.outcomes"), app.app_context():
        event_id = log(name, {})
    found = [r.getMessage() for r in caplog.records if r.name == "flask_eventlib.outcomes"]
    return [message for message in found if event_id in message]


def test_one_line_per_event_names_each_handler_and_how_it_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (line,) = lines(tmp_path, caplog, "shop.Ordered")
    prefix = f"{__name__}.Ordered"
    assert line.endswith(
        f"{prefix}.count ok; {prefix}.flaky failed (ValueError: no stock), dead-lettered after 2 attempts; "
        f"{prefix}.refuse failed (DontRetry: no email), dead-lettered after 1 attempt"
    )
    assert line.startswith("Event shop.Ordered (id ")


def test_an_event_without_handlers_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (line,) = lines(tmp_path, caplog, "shop.Lonely")
    assert line.endswith("no handlers (is its handlers' module in EVENTLIB_HANDLER_MODULES?)")


def test_the_line_can_be_silenced_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("flask_eventlib.outcomes")
    logger.setLevel(logging.WARNING)
    try:
        app = Flask("outcomes", instance_path=str(tmp_path))
        EventLib(app, always_eager=True)
        app.extensions["eventlib"].registry.register_event("shop", Lonely)
        with caplog.at_level(logging.INFO, logger="flask_eventlib"), app.app_context():
            log("shop.Lonely", {})
        assert not [r for r in caplog.records if r.name == "flask_eventlib.outcomes"]
    finally:
        logger.setLevel(logging.NOTSET)
