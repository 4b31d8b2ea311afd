"""flask_eventlib.testing: capturing events in users' tests, the pytest fixture, and check_events()."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from marshmallow import Schema, fields

from flask_eventlib import BaseEvent, EventLib, EventNotFound, Registry, ValidationError, handler, log
from flask_eventlib.testing import capture_events, check_events, handler_labels
from tests.conftest import Records


def test_captured_events_are_what_handlers_would_receive_and_no_handler_runs(
    eager_app: Flask, records: Records
) -> None:
    with eager_app.app_context(), capture_events() as events:
        click_id = log("deals.DealClick", {"deal_id": 7})
        log("deals.Purchase", {"deal_id": "42", "amount": "19.90"})
    assert events.names == ["deals.DealClick", "deals.Purchase"]
    assert events[0].id == click_id and events[0].data == {"deal_id": 7}
    # Loaded by the schema, then encoded and decoded: the types a handler gets.
    assert events[1].data == {"deal_id": 42, "amount": Decimal("19.90"), "coupon": None}
    assert len(events.messages) == 2 and click_id in events.messages[0]
    assert records.all() == []  # eager mode, yet nothing ran


def test_log_still_validates_and_serializes_while_capturing(eager_app: Flask) -> None:
    with eager_app.app_context(), capture_events(eager_app) as events:
        with pytest.raises(ValidationError, match="deal_id"):
            log("deals.DealClick", {})
        with pytest.raises(TypeError, match=r"data\['when'\]"):
            log("deals.Typed", {"when": object()})
        with pytest.raises(EventNotFound):
            log("deals.Nope")
    assert len(events) == 0


def test_assert_logged_matches_a_subset_of_the_data(eager_app: Flask) -> None:
    with eager_app.app_context(), capture_events() as events:
        log("deals.DealClick", {"deal_id": 7, "source": "list"})
        log("deals.DealClick", {"deal_id": 8})
    assert events.assert_logged("deals.DealClick", deal_id=7).data("source") == "list"
    assert events.assert_logged("deals.DealClick").data("deal_id") == 8  # the latest one
    events.assert_not_logged("deals.Purchase")
    events.assert_not_logged("deals.DealClick", deal_id=9)
    with pytest.raises(AssertionError) as missing:
        events.assert_logged("deals.DealClick", deal_id=9)
    assert str(missing.value) == (
        "No deals.DealClick event with deal_id=9 was logged; logged: "
        "deals.DealClick {'deal_id': 7, 'source': 'list'}; deals.DealClick {'deal_id': 8}"
    )
    with pytest.raises(AssertionError, match=r"^Expected no deals.DealClick event with deal_id=8, but 1 was"):
        events.assert_not_logged("deals.DealClick", deal_id=8)
    events.clear()
    with pytest.raises(AssertionError, match="no event was logged at all"):
        events.assert_logged("deals.DealClick")


def test_events_logged_in_a_request_are_captured_at_once(eager_app: Flask) -> None:
    @eager_app.post("/click/<int:deal_id>")
    def click(deal_id: int) -> tuple[str, int]:
        log("deals.DealClick", {"deal_id": deal_id})
        return "", 204

    with capture_events(eager_app) as events:
        assert eager_app.test_client().post("/click/3").status_code == 204
    events.assert_logged("deals.DealClick", deal_id=3)


def test_run_handlers_runs_them_in_the_caller_and_raises_their_error(eager_app: Flask, records: Records) -> None:
    with eager_app.app_context(), capture_events(run_handlers=True) as events:
        event_id = log("deals.DealClick", {"deal_id": 1})
        with pytest.raises(RuntimeError, match="boom for 2"):
            log("deals.Flaky", {"n": 2})
    assert records.handlers_for(event_id) == [
        "DealClick.first",
        "DealClick.second",
        "handlers.on_click",
        "handlers.audit",
    ]
    assert events.names == ["deals.DealClick", "deals.Flaky"]


def test_the_app_publishes_as_before_once_the_capture_ends(eager_app: Flask, records: Records) -> None:
    publisher = eager_app.extensions["eventlib"].publisher
    before = publisher.default
    with eager_app.app_context():
        with capture_events() as events:
            captured_id = log("deals.DealClick", {"deal_id": 1})
        assert publisher.default is before and [event.id for event in events] == [captured_id]
        event_id = log("deals.DealClick", {"deal_id": 2})
    assert records.handlers_for(captured_id) == []  # captured: never run
    assert len(records.handlers_for(event_id)) == 4  # eager again


def test_the_pytest_fixture(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from flask import Flask

            from flask_eventlib import BaseEvent, EventLib, Registry

            pytest_plugins = ["flask_eventlib.testing"]


            class Signup(BaseEvent):
                def clean(self):
                    self.require_data_keys(["plan"])


            @pytest.fixture
            def app(tmp_path):
                app = Flask("fixture", instance_path=str(tmp_path))
                EventLib(app, broker_url="memory://")
                app.extensions["eventlib"].registry.register_event("users", Signup)
                return app
            """
        )
    )
    (tmp_path / "test_signup.py").write_text(
        textwrap.dedent(
            """
            from flask_eventlib import log


            def test_signup_is_logged(app, eventlib_events):
                with app.app_context():
                    log("users.Signup", {"plan": "pro", "seats": 3})
                eventlib_events.assert_logged("users.Signup", plan="pro")
                assert len(eventlib_events) == 1


            def test_each_test_starts_empty(eventlib_events):
                assert len(eventlib_events) == 0
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# -- check_events ---------------------------------------------------------------------------------


def test_an_app_whose_events_are_fine_passes_the_check(tmp_path: Path) -> None:
    app = Flask("fine", instance_path=str(tmp_path))
    EventLib(app, broker_url="memory://")
    app.extensions["eventlib"].registry.register_event("shop", PublicWithSchema)
    assert check_events(app) == []
    with app.app_context():
        assert check_events() == []


def test_handler_labels_are_in_run_order_as_the_logs_name_them(eager_app: Flask) -> None:
    registry = eager_app.extensions["eventlib"].registry
    assert handler_labels(registry, "deals.Purchase") == [
        "tests.sample.deals.events.Purchase.store",
        "tests.sample.handlers.audit",
    ]


class _Schema(Schema):
    n = fields.Integer()


class Unhandled(BaseEvent):
    pass


class PublicWithoutSchema(BaseEvent):
    public = True

    @handler
    def store(self) -> None: ...


class PublicWithSchema(BaseEvent):
    public = True
    schema = _Schema

    @handler
    def store(self) -> None: ...


class BadSchema(BaseEvent):
    schema = "n: int"

    @handler
    def store(self) -> None: ...


def test_check_events_reports_each_kind_of_problem() -> None:
    registry = Registry()
    for cls in (Unhandled, PublicWithoutSchema, PublicWithSchema, BadSchema):
        registry.register_event("shop", cls)

    @registry.handler("shop.PublicWithSchem")
    def misspelled(event: BaseEvent) -> None: ...

    @registry.handler("shpo.*")
    def wrong_app(event: BaseEvent) -> None: ...

    @registry.handler("*")
    def everything(event: BaseEvent) -> None: ...

    problems = check_events(registry)
    where = "tests.test_testing"
    assert problems == [
        f"shop.BadSchema: {where}.BadSchema.schema = 'n: int' is not a Marshmallow schema: set it to a "
        "marshmallow.Schema subclass or instance (or override clean() to validate another way)",
        "shop.PublicWithoutSchema is public but has no schema, so browsers can send it any data: set "
        f"`schema = SomeSchema` (a Marshmallow schema) on {where}.PublicWithoutSchema, or make it private.",
        f"@handler('shop.PublicWithSchem') on {where}.test_check_events_reports_each_kind_of_problem."
        "<locals>.misspelled matches no registered event, so it never runs; did you mean 'shop.PublicWithSchema'?",
        f"@handler('shpo.*') on {where}.test_check_events_reports_each_kind_of_problem.<locals>.wrong_app "
        "matches no registered event, so it never runs; did you mean 'shop.*'?",
    ]
    # Unhandled has a handler: the "*" one. Without it, it is reported.
    registry = Registry()
    registry.register_event("shop", Unhandled)
    assert check_events(registry) == [
        f"shop.Unhandled has no handler, so logging it does nothing: add a @handler method to {where}.Unhandled "
        "or a @handler('shop.Unhandled') function in a module listed in EVENTLIB_HANDLER_MODULES."
    ]


def test_check_events_needs_an_initialised_app() -> None:
    with pytest.raises(Exception, match="EventLib is not initialised on the Flask app 'bare'"):
        check_events(Flask("bare"))


def test_capture_events_needs_an_initialised_app() -> None:
    with (
        pytest.raises(Exception, match="capture_events\\(\\): EventLib is not initialised"),
        capture_events(Flask("bare")),
    ):
        pass


def test_a_fresh_app_with_its_own_registry(tmp_path: Path) -> None:
    app = Flask("fresh", instance_path=str(tmp_path))
    EventLib(app, broker_url="memory://")
    app.extensions["eventlib"].registry.register_event("shop", PublicWithSchema)
    with app.app_context(), capture_events() as events:
        log("shop.PublicWithSchema", {"n": "5"})
    assert events.assert_logged("shop.PublicWithSchema", n=5).name == "shop.PublicWithSchema"
