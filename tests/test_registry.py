"""Discovery, names, handler order and the errors of the registry (no broker, no worker)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import flask_eventlib.core
from flask_eventlib import BaseEvent, ConfigurationError, EventLib, EventNotFound, Registry, handler, log
from flask_eventlib.testing import check_events
from tests.sample.deals.events import DealClick, SpecialClick


def test_blueprint_events_modules_are_discovered(eager_app: Flask) -> None:
    events = eager_app.extensions["eventlib"].registry.events()
    assert events["deals.DealClick"] is DealClick
    assert events["users.SignedUp"].__module__ == "tests.sample.users.events"
    # Imported into users.events, defined elsewhere: not a users event.
    assert "users.DealClick" not in events
    assert not any(name.endswith(".BaseEvent") or name.endswith("NOT_AN_EVENT") for name in events)


def test_unknown_event_message_is_the_specs() -> None:
    registry = Registry()
    registry.register_event("deals", DealClick)
    with pytest.raises(EventNotFound) as info:
        registry.find("deals.DoesNotExist")
    assert str(info.value) == "There is no event named DoesNotExist in the deals app"
    assert info.value.message == str(info.value) and info.value.hint is None  # nothing close to suggest


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("deals.DealClik", "Did you mean 'deals.DealClick'?"),
        (
            "deal.DealClick",
            "There is no app 'deal'; the apps with events are 'deals', 'users'. Did you mean 'deals.DealClick'?",
        ),
        ("nowhere.X", "There is no app 'nowhere'; the apps with events are 'deals', 'users'."),
    ],
)
def test_unknown_event_message_is_the_specs_then_a_hint(name: str, hint: str) -> None:
    registry = Registry()
    registry.register_event("deals", DealClick)
    registry.register_event("users", type("SignedUp", (BaseEvent,), {}))
    with pytest.raises(EventNotFound) as info:
        registry.find(name)
    label, event = name.split(".")
    assert info.value.message == f"There is no event named {event} in the {label} app"
    assert str(info.value) == f"{info.value.message}. {hint}" and info.value.hint == hint


def test_an_app_without_events_says_where_events_come_from() -> None:
    with pytest.raises(EventNotFound, match=r"in the deals app\. This app has no events: .*events module"):
        Registry().find("deals.DealClick")


@pytest.mark.parametrize("name", ["DealClick", "deals.DealClick.extra", "", "deals.", 42, None])
def test_malformed_names_say_which_form_is_expected(name: object) -> None:
    with pytest.raises(EventNotFound, match="expected 'app.EventName'"):
        Registry().find(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["deals.__class__", "deals.__init__", "deals.clean", "deals.BaseEvent"])
def test_attribute_names_are_not_events(eager_app: Flask, name: str) -> None:
    registry = eager_app.extensions["eventlib"].registry
    with pytest.raises(EventNotFound, match="There is no event named"):
        registry.find(name)


def test_method_handlers_in_declaration_order_with_inherited_first() -> None:
    assert flask_eventlib.core.HANDLER_REGISTRY[DealClick] == [DealClick.first, DealClick.second]
    assert flask_eventlib.core.HANDLER_REGISTRY[SpecialClick] == [
        DealClick.first,
        DealClick.second,
        SpecialClick.third,
    ]
    assert DealClick in flask_eventlib.core.HANDLER_REGISTRY
    with pytest.raises(KeyError):
        flask_eventlib.core.HANDLER_REGISTRY[object]


def test_registered_handlers_methods_then_functions_then_wildcards() -> None:
    registry = Registry()
    registry.register_event("deals", DealClick)
    calls: list[str] = []

    @registry.handler("*")
    def everything(event: BaseEvent) -> None:
        calls.append("*")

    @registry.handler("deals.*")
    def all_deals(event: BaseEvent) -> None:
        calls.append("deals.*")

    @registry.handler("deals.DealClick")
    def on_click(event: BaseEvent) -> None:
        calls.append("on_click")

    @registry.handler("deals.DealClick")
    def on_click_again(event: BaseEvent) -> None:
        calls.append("on_click_again")

    event = DealClick({"deal_id": 1}, registry=registry)
    event.name = "deals.DealClick"
    assert event.registered_handlers() == [
        event.first,
        event.second,
        on_click,
        on_click_again,
        all_deals,
        everything,
    ]


def test_overriding_a_handler_without_the_mark_removes_it() -> None:
    class Base(BaseEvent):
        @handler
        def a(self) -> None: ...

        @handler()
        def b(self) -> None: ...

    class Child(Base):
        def a(self) -> None: ...

        @handler
        def c(self) -> None: ...

    assert Child._method_handler_names == ("b", "c")
    assert Base._method_handler_names == ("a", "b")


@pytest.mark.parametrize("target", ["DealClick", "deals.Deal.Click", "deals.", ".x", "deals.**", ""])
def test_bad_handler_targets_are_refused(target: str) -> None:
    with pytest.raises(ConfigurationError, match="'app.EventName'"):
        handler(target)


def test_bare_handler_on_a_function_explains_how_to_name_the_event() -> None:
    def module_level(event: BaseEvent) -> None: ...

    module_level.__qualname__ = "module_level"
    with pytest.raises(ConfigurationError, match=r"@handler\('app.EventName'\)"):
        handler(module_level)


def test_duplicate_event_names_are_refused() -> None:
    registry = Registry()

    class Clash(BaseEvent):
        pass

    registry.register_event("one", Clash)
    registry.register_event("one", Clash)  # the same class again is fine

    other = type("Clash", (BaseEvent,), {})
    with pytest.raises(ConfigurationError, match="Two events are named 'one.Clash'"):
        registry.register_event("one", other)
    with pytest.raises(ConfigurationError, match="cannot also be 'two.Clash'"):
        registry.register_event("two", Clash)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_import_error_inside_an_events_module_propagates(tmp_package: Path) -> None:
    write(
        tmp_package / "brokenpkg" / "__init__.py",
        "from flask import Blueprint\nbp = Blueprint('broken', __name__)\n",
    )
    write(tmp_package / "brokenpkg" / "events.py", "import module_that_does_not_exist\n")
    from brokenpkg import bp  # type: ignore[import-not-found]

    app = Flask("x")
    app.register_blueprint(bp)
    with pytest.raises(ModuleNotFoundError, match="module_that_does_not_exist"):
        EventLib(app, broker_url="memory://")


def test_blueprint_without_events_module_and_event_modules_setting(tmp_package: Path) -> None:
    write(
        tmp_package / "plainpkg" / "__init__.py",
        "from flask import Blueprint\nbp = Blueprint('plain', __name__)\n",
    )
    write(
        tmp_package / "elsewhere.py",
        """
        from flask_eventlib import BaseEvent

        class Ping(BaseEvent):
            pass
        """,
    )
    from plainpkg import bp  # type: ignore[import-not-found]

    app = Flask("x")
    app.register_blueprint(bp)
    EventLib(app, broker_url="memory://", event_modules={"ops": "elsewhere"})
    registry = app.extensions["eventlib"].registry
    assert list(registry.events()) == ["ops.Ping"]
    with pytest.raises(EventNotFound, match="There is no event named Nope in the plain app"):
        registry.find("plain.Nope")


def test_event_modules_must_be_a_dict() -> None:
    with pytest.raises(ConfigurationError, match="must be a dict"):
        EventLib(Flask("x"), broker_url="memory://", event_modules=["ops"])


def test_labels_with_dots_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="without dots"):
        Registry().register_event("a.b", DealClick)


def test_nested_blueprint_uses_its_own_name(tmp_package: Path) -> None:
    write(
        tmp_package / "outer" / "__init__.py",
        "from flask import Blueprint\nbp = Blueprint('outer', __name__)\n",
    )
    write(
        tmp_package / "outer" / "inner" / "__init__.py",
        "from flask import Blueprint\nbp = Blueprint('inner', __name__)\n",
    )
    write(
        tmp_package / "outer" / "inner" / "events.py",
        "from flask_eventlib import BaseEvent\nclass Deep(BaseEvent):\n    pass\n",
    )
    from outer import bp as outer_bp  # type: ignore[import-not-found]
    from outer.inner import bp as inner_bp  # type: ignore[import-not-found]

    outer_bp.register_blueprint(inner_bp)
    app = Flask("x")
    app.register_blueprint(outer_bp)
    EventLib(app, broker_url="memory://")
    assert list(app.extensions["eventlib"].registry.events()) == ["inner.Deep"]


def test_a_handler_module_of_the_app_that_no_setting_lists_is_warned_about_and_reported(
    tmp_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_package / "shopx" / "__init__.py", "")
    write(
        tmp_package / "shopx" / "receipts.py",
        """
        from flask_eventlib import handler

        sent = []


        @handler("ops.Ping")
        def send_receipt(event):
            sent.append(event.id)
        """,
    )
    write(
        tmp_package / "shopx" / "events.py", "from flask_eventlib import BaseEvent\nclass Ping(BaseEvent):\n    pass\n"
    )
    import shopx.receipts  # type: ignore[import-not-found]  # imported by the app, but not listed

    def make(**config: Any) -> Flask:
        app = Flask("shopx")
        EventLib(app, always_eager=True, broker_url="memory://", event_modules={"ops": "shopx.events"}, **config)
        return app

    with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
        forgotten = make()
    assert "shopx.receipts.send_receipt is marked @handler, but its module is not in EVENTLIB_HANDLER_MODULES" in (
        caplog.text
    )
    assert check_events(forgotten)[0] == (
        "shopx.receipts.send_receipt is marked @handler, but its module is not in EVENTLIB_HANDLER_MODULES, so "
        "it never runs: add 'shopx.receipts' to EVENTLIB_HANDLER_MODULES."
    )
    with forgotten.app_context():
        log("ops.Ping")
    assert shopx.receipts.sent == []  # not listed: it does not run for this app

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
        listed = make(handler_modules=["shopx.receipts"])
    assert "is marked @handler" not in caplog.text and check_events(listed) == []
    with listed.app_context():
        event_id = log("ops.Ping")
    assert shopx.receipts.sent == [event_id]
