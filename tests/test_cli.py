"""``flask eventlib ...``: events, describe, schema, types and check (``worker`` runs in test_embedded_broker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from marshmallow import Schema, fields, validate

from flask_eventlib import BaseEvent, EventLib, handler
from flask_eventlib.jsonschema import json_schema
from flask_eventlib.typescript import typescript


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["eventlib", *args])


class SignupSchema(Schema):
    email = fields.Email(required=True, metadata={"description": "Where the welcome mail goes."})
    plan = fields.String(validate=validate.OneOf(["free", "pro"]), load_default="free")
    seats = fields.Integer(allow_none=True)


class SignedUp(BaseEvent):
    """Someone created an account.

    Logged by the sign-up form, in the browser."""

    public = True
    schema = SignupSchema

    @handler
    def welcome(self) -> None: ...


class Deleted(BaseEvent):
    pass


class Bare(BaseEvent):
    public = True


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    """An app with three events of its own: one fine, one nobody handles, one public without schema."""
    flask_app = Flask("cli", instance_path=str(tmp_path))
    EventLib(flask_app, broker_url="memory://")
    registry = flask_app.extensions["eventlib"].registry
    for cls in (SignedUp, Deleted, Bare):
        registry.register_event("users", cls)

    @registry.handler("users.SignedUp")
    def add_to_newsletter(event: BaseEvent) -> None: ...

    @registry.handler("users.Bare")
    def count(event: BaseEvent) -> None: ...

    return flask_app


def test_the_group_lists_its_commands(app: Flask) -> None:
    result = run(app, "--help")
    assert result.exit_code == 0
    for command in ("check", "describe", "events", "schema", "types", "worker"):
        assert f"  {command} " in result.output


def test_events_is_a_table_with_handlers_in_run_order(app: Flask) -> None:
    result = run(app, "events")
    assert result.exit_code == 0, result.output
    local = "tests.test_cli.app.<locals>"
    assert result.output == (
        "EVENT           PUBLIC  SCHEMA        HANDLERS (in run order)\n"
        f"users.Bare      yes     -             {local}.count\n"
        "users.Deleted   no      -             (none)\n"
        "users.SignedUp  yes     SignupSchema  tests.test_cli.SignedUp.welcome\n"
        f"                                      {local}.add_to_newsletter\n"
        "\n"
        "2 problems: `flask eventlib check` explains.\n"
    )


def test_events_of_the_sample_app(eager_app: Flask) -> None:
    result = run(eager_app, "events")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["EVENT", "PUBLIC", "SCHEMA", "HANDLERS", "(in", "run", "order)"]
    start = next(i for i, line in enumerate(lines) if line.startswith("deals.DealClick "))
    assert [line.split()[-1] for line in lines[start : start + 4]] == [
        "tests.sample.deals.events.DealClick.first",
        "tests.sample.deals.events.DealClick.second",
        "tests.sample.handlers.on_click",
        "tests.sample.handlers.audit",
    ]
    purchase = next(line for line in lines if line.startswith("deals.Purchase "))
    assert purchase.split()[1:3] == ["no", "PurchaseSchema"]


def test_describe_shows_the_data_fields_and_the_handlers(app: Flask) -> None:
    result = run(app, "describe", "users.SignedUp")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "users.SignedUp  (tests.test_cli.SignedUp)\n"
        "  Someone created an account.\n"
        "\n"
        "  Logged by the sign-up form, in the browser.\n"
        "public:   yes: browsers may log it\n"
        "schema:   tests.test_cli.SignupSchema\n"
        "data:\n"
        "  email  string          (required)\n"
        '  plan   "free" | "pro"\n'
        "  seats  number | null\n"
        "handlers, in run order:\n"
        "  1. tests.test_cli.SignedUp.welcome\n"
        "  2. tests.test_cli.app.<locals>.add_to_newsletter\n"
    )


def test_describe_an_event_without_schema_or_handler(app: Flask) -> None:
    result = run(app, "describe", "users.Deleted")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "users.Deleted  (tests.test_cli.Deleted)\n"
        "public:   no: only server code logs it\n"
        "schema:   none (clean() checks the data)\n"
        "data:     any object\n"
        "handlers: none (`flask eventlib check` reports it)\n"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "users.SignedUpp",
            "There is no event named SignedUpp in the users app. Did you mean 'users.SignedUp'? "
            "`flask eventlib events` lists every event.",
        ),
        ("users.Nope", "There is no event named Nope in the users app. `flask eventlib events` lists every event."),
        (
            "user.SignedUp",
            "There is no event named SignedUp in the user app. There is no app 'user'; the apps with events are "
            "'users'. Did you mean 'users.SignedUp'? `flask eventlib events` lists every event.",
        ),
        (
            "SignedUp",
            "'SignedUp' is not an event name: expected 'app.EventName', e.g. 'deals.DealClick'. "
            "Did you mean 'users.SignedUp'? `flask eventlib events` lists every event.",
        ),
    ],
)
def test_describe_an_unknown_name_is_a_usage_error_with_a_suggestion(app: Flask, name: str, message: str) -> None:
    result = run(app, "describe", name)
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: Invalid value for NAME: {message}\n")


def test_schema_prints_the_public_events_json_schema(app: Flask) -> None:
    registry = app.extensions["eventlib"].registry
    result = run(app, "schema")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document == json_schema(registry.events())
    assert list(document["$defs"]) == ["users.Bare", "users.SignedUp"]
    assert result.output == json.dumps(document, indent=2, sort_keys=True) + "\n"
    everything = json.loads(run(app, "schema", "--all").output)
    assert list(everything["$defs"]) == ["users.Bare", "users.Deleted", "users.SignedUp"]


def test_types_prints_the_declarations(app: Flask) -> None:
    registry = app.extensions["eventlib"].registry
    result = run(app, "types")
    assert result.exit_code == 0, result.output
    assert result.output == typescript(registry.events())
    assert '    "users.SignedUp": {\n' in result.output and "users.Deleted" not in result.output
    assert "users.Deleted" in run(app, "types", "--all").output


def test_check_exits_1_and_explains_each_problem(app: Flask) -> None:
    result = run(app, "check")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "1. users.Bare is public but has no schema, so browsers can send it any data: set `schema = SomeSchema` "
        "(a Marshmallow schema) on tests.test_cli.Bare, or make it private.\n"
        "2. users.Deleted has no handler, so logging it does nothing: add a @handler method to "
        "tests.test_cli.Deleted or a @handler('users.Deleted') function in a module listed in "
        "EVENTLIB_HANDLER_MODULES.\n"
    )


def test_check_passes_when_all_is_well(tmp_path: Path) -> None:
    fine = Flask("fine", instance_path=str(tmp_path))
    EventLib(fine, broker_url="memory://")
    fine.extensions["eventlib"].registry.register_event("users", SignedUp)
    result = run(fine, "check")
    assert result.exit_code == 0, result.output
    assert result.output == "OK: 1 event, each with a handler; every public event has a schema.\n"


def test_an_app_without_events(tmp_path: Path) -> None:
    empty = Flask("empty", instance_path=str(tmp_path))
    EventLib(empty, broker_url="memory://")
    assert run(empty, "events").output == (
        "No events are registered: put BaseEvent subclasses in the events module of a blueprint.\n"
    )
    assert run(empty, "types").output.endswith("  interface YipitEventMap {\n  }\n}\n")


class Broken(BaseEvent):
    public = True
    schema = "deal_id: int"


@pytest.mark.parametrize("command", [["schema"], ["types"], ["describe", "shop.Broken"]])
def test_an_event_whose_schema_is_not_marshmallow_is_an_error_message(tmp_path: Path, command: list[str]) -> None:
    broken = Flask("broken", instance_path=str(tmp_path))
    EventLib(broken, broker_url="memory://")
    broken.extensions["eventlib"].registry.register_event("shop", Broken)
    result = run(broken, *command)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: tests.test_cli.Broken.schema = 'deal_id: int' is not a Marshmallow schema: set it to a "
        "marshmallow.Schema subclass or instance (or override clean() to validate another way)\n"
    )


def test_deadletters_with_the_store_down_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    down = Flask("shop", instance_path=str(tmp_path))
    EventLib(down, broker_url="memory://", store_url="redis://:s3cret@127.0.0.1:1/0")
    result = run(down, "deadletters", "list")
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: Cannot reach the dead-letter store redis://:***@127.0.0.1:1/0: ConnectionError")
    assert "EVENTLIB_STORE_URL" in line and "s3cret" not in line


def test_celery_given_the_extension_says_which_target_to_give_it(tmp_path: Path) -> None:
    (tmp_path / "wrongtarget.py").write_text(
        "from flask import Flask\n"
        "from flask_eventlib import EventLib\n"
        f"app = Flask('wrongtarget', instance_path={str(tmp_path / 'instance')!r})\n"
        "eventlib = EventLib(app, broker_url='memory://')\n"
    )
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "wrongtarget:eventlib", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "celery -A was given the EventLib extension, not a Celery app" in last
    assert "`celery -A yourapp.worker:celery worker`" in last and "user_options" not in last
