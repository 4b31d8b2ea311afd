"""Errors that teach: each mistake a developer can make names the thing involved and says the fix.

Also: handler failures reach any logging handler with structured ``extra`` fields.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_eventlib import BaseEvent, ConfigurationError, EventLib, Registry, handler, log
from flask_eventlib.handlers import MARKED
from flask_eventlib.testing import check_events
from tests.conftest import Records
from tests.sample.deals.events import DealClick


def misnamed_target() -> None:
    handler("DealClick")


def bare_handler_on_a_function() -> None:
    def on_click(event: BaseEvent) -> None: ...

    on_click.__qualname__ = "on_click"  # as if defined at module level
    handler(on_click)


def registering_a_class_that_is_not_an_event() -> None:
    class DealClick:
        pass

    Registry().register_event("deals", DealClick)  # type: ignore[arg-type]


class NotMarshmallow(BaseEvent):
    schema = {"deal_id": int}


def logging_an_event_whose_schema_is_not_marshmallow() -> None:
    app = Flask("schema")
    EventLib(app, always_eager=True, broker_url="memory://")
    app.extensions["eventlib"].registry.register_event("deals", NotMarshmallow)
    with app.app_context():
        log("deals.NotMarshmallow", {"deal_id": 1})


def duplicate_event_names() -> None:
    class Clash(BaseEvent):
        pass

    registry = Registry()
    registry.register_event("deals", Clash)
    registry.register_event("deals", type("Clash", (BaseEvent,), {"__module__": "shop.legacy"}))


def logging_outside_an_app_context() -> None:
    log("deals.DealClick", {"deal_id": 1})


def logging_in_an_app_without_the_extension() -> None:
    with Flask("bare").app_context():
        log("deals.DealClick", {"deal_id": 1})


def initialising_twice() -> None:
    app = Flask("twice")
    EventLib(app, always_eager=True, broker_url="memory://")
    EventLib(app, always_eager=True, broker_url="memory://")


def an_unknown_setting() -> None:
    EventLib(broker="redis://")


def a_handler_on_something_not_callable() -> None:
    Registry().add_function_handler("deals.DealClick", "deals.handlers.count")  # type: ignore[arg-type]


#: (the mistake, the error, what the message must name, how it must say to fix it)
CASES: list[tuple[Callable[[], Any], type[Exception], list[str], list[str]]] = [
    (
        misnamed_target,
        ConfigurationError,
        ["@handler('DealClick')"],
        ["'app.EventName' (e.g. 'deals.DealClick')", "'app.*'", "'*'"],
    ),
    (
        bare_handler_on_a_function,
        ConfigurationError,
        ["'on_click' is not defined in a class"],
        ["name its event: @handler('app.EventName')"],
    ),
    (
        registering_a_class_that_is_not_an_event,
        ConfigurationError,
        ["DealClick", "is not a subclass of flask_eventlib.BaseEvent"],
        ["define it as `class Name(BaseEvent): ...`"],
    ),
    (
        logging_an_event_whose_schema_is_not_marshmallow,
        ConfigurationError,
        ["tests.test_errors.NotMarshmallow.schema = {'deal_id': <class 'int'>} is not a Marshmallow schema"],
        ["set it to a marshmallow.Schema subclass or instance"],
    ),
    (
        duplicate_event_names,
        ConfigurationError,
        ["Two events are named 'deals.Clash'", "duplicate_event_names.<locals>.Clash", "shop.legacy.Clash"],
        ["Rename one of the classes or give one of the apps another label"],
    ),
    (
        logging_outside_an_app_context,
        ConfigurationError,
        ["log() needs a Flask application context"],
        ["inside `with app.app_context():`"],
    ),
    (
        logging_in_an_app_without_the_extension,
        ConfigurationError,
        ["EventLib is not initialised on the Flask app 'bare'"],
        ["call EventLib(app) or eventlib.init_app(app)"],
    ),
    (
        initialising_twice,
        ConfigurationError,
        ["EventLib is already initialised on the Flask app 'twice'"],
        ["call init_app() once per app"],
    ),
    (an_unknown_setting, TypeError, ["unknown setting 'broker'"], ["known settings:", "broker_url"]),
    (
        a_handler_on_something_not_callable,
        ConfigurationError,
        ["@handler('deals.DealClick') decorates 'deals.handlers.count', which is not callable"],
        ["put it on a function that takes the event"],
    ),
]


@pytest.mark.parametrize(("mistake", "error", "names", "fixes"), CASES, ids=[case[0].__name__ for case in CASES])
def test_the_error_names_the_thing_and_the_fix(
    mistake: Callable[[], Any], error: type[Exception], names: list[str], fixes: list[str]
) -> None:
    with pytest.raises(error) as info:
        mistake()
    message = str(info.value)
    for fragment in [*names, *fixes]:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_a_well_formed_target_that_matches_no_event_is_reported_with_a_suggestion() -> None:
    registry = Registry()
    registry.register_event("deals", DealClick)  # it has method handlers of its own

    @registry.handler("deals.DealClik")
    def count(event: BaseEvent) -> None: ...

    (problem,) = check_events(registry)
    assert problem.startswith("@handler('deals.DealClik') on tests.test_errors.")
    assert problem.endswith("count matches no registered event, so it never runs; did you mean 'deals.DealClick'?")


@pytest.fixture
def forget(request: pytest.FixtureRequest) -> Iterator[list[Callable[..., Any]]]:
    """Functions a test marks with @handler outside an event; taken out of MARKED afterwards."""
    marked: list[Callable[..., Any]] = []
    yield marked
    for func in marked:
        MARKED.discard(func)


def test_a_handler_method_in_a_class_that_is_not_an_event_is_reported(forget: list[Callable[..., Any]]) -> None:
    class DealClick:  # forgot to subclass BaseEvent
        @handler
        def count(self) -> None: ...

    class AuditMixin:  # a mixin used by an event: its handler runs, so it is fine
        @handler
        def audit(self) -> None: ...

    class Audited(AuditMixin, BaseEvent):
        pass

    forget.extend([DealClick.count, AuditMixin.audit])
    registry = Registry()
    registry.register_event("deals", Audited)
    assert Audited._method_handler_names == ("audit",)
    owner = "test_a_handler_method_in_a_class_that_is_not_an_event_is_reported.<locals>.DealClick"
    assert check_events(registry) == [
        f"tests.test_errors.{owner}.count is marked @handler, but {owner} is not a BaseEvent subclass, so it "
        "never runs: define it as `class DealClick(BaseEvent)`, or register a function with "
        "@handler('app.EventName')."
    ]


def test_duplicate_names_from_a_blueprint_and_an_events_module(tmp_package: Path) -> None:
    (tmp_package / "shopdeals").mkdir()
    (tmp_package / "shopdeals" / "__init__.py").write_text(
        "from flask import Blueprint\nbp = Blueprint('deals', __name__)\n"
    )
    event = "from flask_eventlib import BaseEvent\n\nclass DealClick(BaseEvent):\n    pass\n"
    (tmp_package / "shopdeals" / "events.py").write_text(event)
    (tmp_package / "legacy_events.py").write_text(event)
    from shopdeals import bp  # type: ignore[import-not-found]

    app = Flask("dup", instance_path=str(tmp_package))
    app.register_blueprint(bp)
    with pytest.raises(ConfigurationError) as info:
        EventLib(app, broker_url="memory://", event_modules={"deals": "legacy_events"})
    assert str(info.value) == (
        "Two events are named 'deals.DealClick': shopdeals.events.DealClick and legacy_events.DealClick. "
        "Rename one of the classes or give one of the apps another label."
    )


# -- logging integration --------------------------------------------------------------------------


class JSONFormatter(logging.Formatter):
    """What a structured logger does with the record: its ``extra`` fields become JSON keys."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: getattr(record, key, None) for key in ("event_name", "event_id", "handler", "attempt")}
        return json.dumps({"message": record.getMessage(), **fields})


def test_handler_failures_carry_extra_fields_to_any_logging_handler(eager_app: Flask, records: Records) -> None:
    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.lines: list[dict[str, Any]] = []
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)
            self.lines.append(json.loads(self.format(record)))

    collect = Collect()
    collect.setFormatter(JSONFormatter())
    logger = logging.getLogger("flask_eventlib")
    logger.addHandler(collect)
    try:
        with eager_app.app_context():
            event_id = log("deals.Flaky", {"n": 1})
    finally:
        logger.removeHandler(collect)
    first = collect.lines[0]
    assert first["event_name"] == "deals.Flaky"
    assert first["event_id"] == event_id
    assert first["handler"] == "tests.sample.deals.events.Flaky.explode"
    assert first["attempt"] == 1
    assert first["message"].startswith("Handler tests.sample.deals.events.Flaky.explode failed for event deals.Flaky")
    # Every failure of either failing handler, each with its traceback for Sentry and friends.
    assert {line["handler"] for line in collect.lines} == {
        "tests.sample.deals.events.Flaky.explode",
        "tests.sample.handlers.flaky_function_fails",
    }
    assert all(record.exc_info and record.exc_info[0] is not None for record in collect.records)
    assert "Flaky.after" in records.handlers_for(event_id)
