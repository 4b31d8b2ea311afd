"""Schemas out: Marshmallow fields to JSON Schema and TypeScript, and the TypeScript compiler's verdict."""

from __future__ import annotations

import enum
import gc
import json
import shutil
import subprocess
import weakref
from pathlib import Path
from typing import Any

import jsonschema
import marshmallow
import pytest
from flask import Flask
from marshmallow import Schema, fields, validate

from flask_eventlib import BaseEvent, ConfigurationError, EventLib
from flask_eventlib.jsonschema import JSON_SCHEMA_DIALECT, event_json_schema, field_json_schema, json_schema
from flask_eventlib.schemas import load, schema_instance
from flask_eventlib.typescript import TS_INTERFACE, ts_type, typescript

TYPESCRIPT = Path(__file__).resolve().parent / "typescript"
DECIMAL = {"type": ["number", "string"], "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"}


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.Enum):
    S = 1
    M = 2


class Custom(fields.Field):  # type: ignore[type-arg]
    """A field the generator knows nothing about."""


FIELDS: list[tuple[str, Any, dict[str, Any], str]] = [
    ("integer", fields.Integer(), {"type": "integer"}, "number"),
    ("float", fields.Float(), {"type": "number"}, "number"),
    ("decimal", fields.Decimal(), DECIMAL, "number | string"),
    ("string", fields.String(), {"type": "string"}, "string"),
    ("boolean", fields.Boolean(), {"type": "boolean"}, "boolean"),
    ("datetime", fields.DateTime(), {"type": "string", "format": "date-time"}, "string"),
    ("aware", fields.AwareDateTime(), {"type": "string", "format": "date-time"}, "string"),
    ("timestamp", fields.DateTime(format="timestamp"), {"type": "number"}, "number"),
    ("strftime", fields.DateTime(format="%d/%m/%Y"), {"type": "string"}, "string"),
    ("date", fields.Date(), {"type": "string", "format": "date"}, "string"),
    ("time", fields.Time(), {"type": "string", "format": "time"}, "string"),
    ("timedelta", fields.TimeDelta(), {"type": "number"}, "number"),
    ("email", fields.Email(), {"type": "string", "format": "email"}, "string"),
    ("url", fields.URL(), {"type": "string", "format": "uri"}, "string"),
    ("uuid", fields.UUID(), {"type": "string", "format": "uuid"}, "string"),
    ("ipv4", fields.IPv4(), {"type": "string", "format": "ipv4"}, "string"),
    ("ip", fields.IP(), {"type": "string"}, "string"),
    ("list", fields.List(fields.Integer()), {"type": "array", "items": {"type": "integer"}}, "number[]"),
    (
        "tuple",
        fields.Tuple((fields.String(), fields.Integer())),
        {
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "integer"}],
            "minItems": 2,
            "maxItems": 2,
        },
        "[string, number]",
    ),
    ("dict", fields.Dict(), {"type": "object"}, "Record<string, unknown>"),
    (
        "dict of",
        fields.Dict(keys=fields.String(), values=fields.Float()),
        {"type": "object", "additionalProperties": {"type": "number"}},
        "Record<string, number>",
    ),
    (
        "dict with known keys",
        fields.Dict(keys=fields.String(validate=validate.OneOf(["a", "b"])), values=fields.Integer()),
        {"type": "object", "additionalProperties": {"type": "integer"}, "propertyNames": {"enum": ["a", "b"]}},
        'Partial<Record<"a" | "b", number>>',
    ),
    ("enum by name", fields.Enum(Color), {"type": "string", "enum": ["RED", "BLUE"]}, '"RED" | "BLUE"'),
    ("enum by value", fields.Enum(Color, by_value=True), {"type": "string", "enum": ["red", "blue"]}, '"red" | "blue"'),
    ("int enum", fields.Enum(Size, by_value=True), {"type": "integer", "enum": [1, 2]}, "1 | 2"),
    ("constant", fields.Constant("v1"), {"const": "v1", "default": "v1"}, '"v1"'),
    ("raw", fields.Raw(), {}, "unknown"),
    ("custom", Custom(), {}, "unknown"),
    ("method", fields.Method(deserialize="load_it"), {}, "unknown"),
    ("pluck", fields.Pluck("Inner", "sku"), {}, "unknown"),
    ("nullable", fields.Integer(allow_none=True), {"type": ["integer", "null"]}, "number | null"),
    ("nullable unknown", fields.Raw(allow_none=True), {}, "unknown"),
    (
        "nullable decimal",
        fields.Decimal(allow_none=True),
        {**DECIMAL, "type": ["number", "string", "null"]},
        "number | string | null",
    ),
    ("default", fields.String(load_default="free"), {"type": "string", "default": "free"}, "string"),
    ("callable default", fields.String(load_default=lambda: "x"), {"type": "string"}, "string"),
    (
        "one of",
        fields.String(validate=validate.OneOf(["a", "b"]), allow_none=True),
        {"type": ["string", "null"], "enum": ["a", "b", None]},
        '"a" | "b" | null',
    ),
    (
        "length",
        fields.String(validate=validate.Length(min=1, max=5)),
        {"type": "string", "minLength": 1, "maxLength": 5},
        "string",
    ),
    (
        "exact length list",
        fields.List(fields.String(), validate=validate.Length(equal=2)),
        {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "string[]",
    ),
    (
        "range",
        fields.Integer(validate=[validate.Range(min=1, max=10, max_inclusive=False)]),
        {"type": "integer", "minimum": 1, "exclusiveMaximum": 10},
        "number",
    ),
    (
        "decimal range",
        fields.Decimal(validate=validate.Range(min=__import__("decimal").Decimal("0.5"))),
        {**DECIMAL, "minimum": 0.5},
        "number | string",
    ),
    (
        "regexp",
        fields.String(validate=validate.Regexp(r"[A-Z]{3}")),
        {"type": "string", "pattern": "^(?:[A-Z]{3})"},
        "string",
    ),
    ("case-insensitive regexp", fields.String(validate=validate.Regexp("abc", flags=2)), {"type": "string"}, "string"),
    ("equal", fields.Integer(validate=validate.Equal(3)), {"type": "integer", "const": 3}, "3"),
    (
        "and",
        fields.Integer(validate=validate.And(validate.Range(min=0), validate.Range(max=9))),
        {"type": "integer", "minimum": 0, "maximum": 9},
        "number",
    ),
    ("predicate", fields.String(validate=lambda value: value.isupper()), {"type": "string"}, "string"),
    (
        "contains only",
        fields.List(fields.String(), validate=validate.ContainsOnly(["x", "y"])),
        {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}},
        'Array<"x" | "y">',
    ),
    (
        "metadata",
        fields.Integer(metadata={"description": "The deal's id.", "title": "Deal"}),
        {"type": "integer", "description": "The deal's id.", "title": "Deal"},
        "number",
    ),
    (
        "json_schema override",
        Custom(metadata={"json_schema": {"type": "string", "format": "hostname"}}),
        {"type": "string", "format": "hostname"},
        "string",
    ),
]


@pytest.mark.parametrize(("field", "expected", "ts"), [f[1:] for f in FIELDS], ids=[f[0] for f in FIELDS])
def test_field_mapping(field: Any, expected: dict[str, Any], ts: str) -> None:
    schema = field_json_schema(field)
    assert schema == expected
    assert ts_type(schema) == ts
    jsonschema.Draft202012Validator.check_schema(schema)


class Line(Schema):
    sku = fields.String(required=True)
    qty = fields.Integer(load_default=1, validate=validate.Range(min=1))


class Tree(Schema):
    label = fields.String()
    children = fields.List(fields.Nested(lambda: Tree()))


class Order(Schema):
    deal_id = fields.Integer(required=True)
    lines = fields.Nested(Line, many=True, required=True)
    buyer = fields.Nested(Line(only=("sku",)))
    tree = fields.Nested(Tree)
    plan = fields.String(data_key="plan-name")
    secret = fields.String(load_only=True)
    computed = fields.Integer(dump_only=True)


class Loose(Schema):
    class Meta:
        unknown = marshmallow.EXCLUDE

    n = fields.Integer(required=True)


class OrderPlaced(BaseEvent):
    """An order was placed.

    Logged by the checkout, once per order."""

    public = True
    schema = Order


class LooseEvent(BaseEvent):
    public = True
    schema = Loose


class PartialEvent(BaseEvent):
    public = True
    schema = Order(partial=("lines",))


class Untyped(BaseEvent):
    public = True


class Hidden(BaseEvent):
    schema = Loose


EVENTS: dict[str, type[BaseEvent]] = {
    "shop.OrderPlaced": OrderPlaced,
    "shop.LooseEvent": LooseEvent,
    "shop.PartialEvent": PartialEvent,
    "shop.Untyped": Untyped,
    "shop.Hidden": Hidden,
}


def test_an_event_schema_is_an_object_with_sorted_properties_and_required_keys() -> None:
    schema = event_json_schema(OrderPlaced, name="shop.OrderPlaced")
    assert schema["title"] == "shop.OrderPlaced"
    assert schema["description"] == "An order was placed.\n\nLogged by the checkout, once per order."
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False  # Marshmallow's default: unknown keys raise
    # data_key names the property; dump_only fields are not loaded; load_only ones are.
    assert list(schema["properties"]) == ["buyer", "deal_id", "lines", "plan-name", "secret", "tree"]
    assert schema["required"] == ["deal_id", "lines"]
    assert schema["properties"]["lines"] == {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "qty": {"type": "integer", "minimum": 1, "default": 1},
                "sku": {"type": "string"},
            },
            "required": ["sku"],
            "additionalProperties": False,
        },
    }
    # `only` is honoured, and a recursive schema stops at an untyped object.
    assert list(schema["properties"]["buyer"]["properties"]) == ["sku"]
    assert schema["properties"]["tree"]["properties"]["children"] == {"type": "array", "items": {"type": "object"}}


def test_partial_and_unknown_are_honoured() -> None:
    assert event_json_schema(PartialEvent)["required"] == ["deal_id"]
    loose = event_json_schema(LooseEvent)
    assert "additionalProperties" not in loose  # EXCLUDE: extra keys are accepted (and dropped)
    assert ts_type(loose) == "{\n  n: number;\n  [key: string]: unknown;\n}"


def test_an_event_without_schema_is_any_object() -> None:
    schema = event_json_schema(Untyped, name="shop.Untyped")
    assert schema == {"type": "object", "title": "shop.Untyped"}
    assert ts_type(schema) == "Record<string, unknown>"


def test_the_document_has_public_events_only_unless_asked_and_is_valid_json_schema() -> None:
    document = json_schema(EVENTS)
    assert document["$schema"] == JSON_SCHEMA_DIALECT == "https://json-schema.org/draft/2020-12/schema"
    assert list(document["$defs"]) == ["shop.LooseEvent", "shop.OrderPlaced", "shop.PartialEvent", "shop.Untyped"]
    assert "shop.Hidden" in json_schema(EVENTS, include_private=True)["$defs"]
    jsonschema.Draft202012Validator.check_schema(document)
    # Deterministic: the same events in another order give the same text.
    again = json_schema(dict(reversed(list(EVENTS.items()))))
    assert json.dumps(again, sort_keys=True) == json.dumps(document, sort_keys=True)


ORDER_CASES: list[tuple[dict[str, Any], bool]] = [
    ({"deal_id": 1, "lines": [{"sku": "A"}]}, True),
    ({"deal_id": 1, "lines": [{"sku": "A", "qty": 3}], "plan-name": "pro", "buyer": {"sku": "B"}}, True),
    ({"deal_id": 1, "lines": [], "tree": {"label": "x", "children": [{"label": "y"}]}}, True),
    ({"deal_id": 1}, False),  # lines is required
    ({"deal_id": None, "lines": []}, False),
    ({"deal_id": 1, "lines": [{"qty": 2}]}, False),  # sku is required
    ({"deal_id": 1, "lines": [{"sku": "A", "qty": 0}]}, False),  # qty >= 1
    ({"deal_id": 1, "lines": [], "extra": 1}, False),  # unknown keys raise
    ({"deal_id": 1, "lines": [], "buyer": {"sku": "B", "qty": 1}}, False),  # only=("sku",)
]


@pytest.mark.parametrize(("data", "valid"), ORDER_CASES)
def test_json_schema_and_marshmallow_agree(data: dict[str, Any], valid: bool) -> None:
    validator = jsonschema.Draft202012Validator(event_json_schema(OrderPlaced))
    assert validator.is_valid(data) is valid
    try:
        Order().load(data)
    except marshmallow.ValidationError:
        loaded = False
    else:
        loaded = True
    assert loaded is valid


def test_typescript_declares_the_global_event_map_sorted() -> None:
    text = typescript(EVENTS)
    assert TS_INTERFACE == "YipitEventMap"
    assert "export {};\n\ndeclare global {\n  interface YipitEventMap {\n" in text
    names = [line.strip().split(":")[0] for line in text.splitlines() if line.startswith('    "')]
    assert names == ['"shop.LooseEvent"', '"shop.OrderPlaced"', '"shop.PartialEvent"', '"shop.Untyped"']
    assert '    "shop.Untyped": Record<string, unknown>;\n' in text
    assert (
        "    /**\n     * An order was placed.\n     *\n     * Logged by the checkout, once per order.\n     */\n"
        in text
    )
    assert '      "plan-name"?: string;\n' in text and "      deal_id: number;\n" in text
    assert "Hidden" not in text and "Hidden" in typescript(EVENTS, include_private=True)
    assert typescript(EVENTS) == typescript(dict(reversed(list(EVENTS.items()))))


def test_a_schema_that_is_not_marshmallow_is_named_with_its_event() -> None:
    class NotASchema(BaseEvent):
        schema = dict

    with pytest.raises(ConfigurationError) as info:
        event_json_schema(NotASchema)
    assert "NotASchema.schema = <class 'dict'> is not a Marshmallow schema" in str(info.value)
    assert "set it to a marshmallow.Schema subclass or instance" in str(info.value)


def test_load_and_schema_instance_keep_working() -> None:
    assert schema_instance(Loose) is schema_instance(Loose)
    instance = Loose()
    assert schema_instance(instance) is instance
    assert load(Loose, {"n": "3", "dropped": 1}) == {"n": 3}


def test_a_schema_class_shares_one_instance_and_does_not_outlive_its_users() -> None:
    class Stricter(Loose):
        pass

    assert schema_instance(Stricter) is schema_instance(Stricter)
    assert type(schema_instance(Stricter)) is Stricter  # not the instance of its base, Loose
    assert type(schema_instance(Loose)) is Loose
    # Schema.from_dict() classes are not in Marshmallow's class registry: once the caller lets go,
    # nothing of flask-eventlib's may keep the class (and its instance) alive.
    generated = Schema.from_dict({"n": fields.Integer()})
    assert schema_instance(generated) is schema_instance(generated)
    gone = weakref.ref(generated)
    del generated
    gc.collect()
    assert gone() is None


# -- the TypeScript compiler ------------------------------------------------------------------


class ClickSchema(Schema):
    deal_id = fields.Integer(required=True)
    source = fields.String(validate=validate.OneOf(["list", "map"]))


class PurchaseSchema(Schema):
    deal_id = fields.Integer(required=True)
    amount = fields.Decimal(required=True)
    coupon = fields.String(load_default=None)
    when = fields.DateTime()
    lines = fields.Nested(Line, many=True)


class DealClick(BaseEvent):
    public = True
    schema = ClickSchema


class Purchase(BaseEvent):
    public = True
    schema = PurchaseSchema


class SignedUp(BaseEvent):
    public = True


class Internal(BaseEvent):
    pass


def tsc() -> Path:
    found = TYPESCRIPT / "node_modules" / ".bin" / "tsc"
    if not found.exists():
        pytest.fail(
            f"No TypeScript compiler at {found}. ./dev.sh test installs it; by hand: npm ci --prefix tests/typescript"
        )
    return found


@pytest.fixture
def declarations(tmp_path: Path) -> Path:
    """``events.d.ts`` written by ``flask eventlib types`` for an app with the events above."""
    app = Flask("ts", instance_path=str(tmp_path))
    EventLib(app, broker_url="memory://")
    for label, cls in [("deals", DealClick), ("deals", Purchase), ("users", SignedUp), ("ops", Internal)]:
        app.extensions["eventlib"].registry.register_event(label, cls)
    result = app.test_cli_runner().invoke(args=["eventlib", "types"])
    assert result.exit_code == 0, result.output
    for name in ("client.d.ts", "valid.ts", "invalid.ts"):
        shutil.copy(TYPESCRIPT / name, tmp_path / name)
    (tmp_path / "events.d.ts").write_text(result.output)
    return tmp_path


def run_tsc(folder: Path, *files: str) -> subprocess.CompletedProcess[str]:
    command = [str(tsc()), "--noEmit", "--strict", "--target", "es2020", "--lib", "es2020", *files]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)


def test_tsc_accepts_valid_calls_and_refuses_each_marked_one(declarations: Path) -> None:
    result = run_tsc(declarations, "client.d.ts", "events.d.ts", "valid.ts")
    assert result.returncode == 0, result.stdout + result.stderr + (declarations / "events.d.ts").read_text()


def test_tsc_refuses_a_call_with_a_wrongly_typed_payload(declarations: Path) -> None:
    result = run_tsc(declarations, "client.d.ts", "events.d.ts", "invalid.ts")
    assert result.returncode != 0
    assert "invalid.ts(2," in result.stdout
    assert "error TS2322: Type 'string' is not assignable to type 'number'" in result.stdout


def test_without_the_declarations_no_event_name_type_checks(declarations: Path) -> None:
    """The check is the generated file's doing: without it the stub accepts no name at all."""
    result = run_tsc(declarations, "client.d.ts", "invalid.ts")
    assert result.returncode != 0
    assert "not assignable to parameter of type 'never'" in result.stdout


# -- served over HTTP -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/event", "/track"])
def test_the_schema_is_served_next_to_the_endpoint(tmp_path: Path, prefix: str) -> None:
    app = Flask("served", instance_path=str(tmp_path))
    EventLib(app, broker_url="memory://", url_prefix=prefix)
    registry = app.extensions["eventlib"].registry
    for label, cls in [("deals", DealClick), ("deals", Purchase), ("users", SignedUp), ("ops", Internal)]:
        registry.register_event(label, cls)
    response = app.test_client().get(f"{prefix}/schema.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == json_schema(registry.events())
    assert list(response.json["$defs"]) == ["deals.DealClick", "deals.Purchase", "users.SignedUp"]
