"""The JSON Schema of the events' data, made from their Marshmallow schemas.

:func:`json_schema` turns the schemas of registered events into one document, which
``flask eventlib schema`` prints, the blueprint serves, and :mod:`flask_eventlib.typescript` turns
into declarations for the JS client. It describes the canonical form of the data (an ``Integer``
is a JSON integer, a ``DateTime`` an ISO 8601 string), is sorted so that outputs can be diffed, and
maps what it cannot express to "anything" rather than guess.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import marshmallow
from marshmallow import fields as mf
from marshmallow import validate as mv

from .schemas import schema_instance

if TYPE_CHECKING:
    from .events import BaseEvent

#: The JSON Schema dialect of :func:`json_schema`'s document.
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: A field's ``metadata`` key whose dict replaces the JSON Schema generated for it (for custom fields).
JSON_SCHEMA_METADATA = "json_schema"

#: Strings that ``fields.Decimal`` loads (it also takes JSON numbers).
_DECIMAL_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def json_schema(events: Mapping[str, type[BaseEvent]], *, include_private: bool = False) -> dict[str, Any]:
    """One JSON Schema document for the data of ``events``: ``#/$defs/<event name>``.

    :param events: event classes by name, e.g. ``registry.events()``.
    :param include_private: describe every event, not only the ``public`` ones browsers may log.
    """
    defs = {
        name: event_json_schema(cls, name=name) for name, cls in sorted(events.items()) if include_private or cls.public
    }
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "flask-eventlib events",
        "description": "The data each event takes, by event name: #/$defs/<event name>.",
        "$defs": defs,
    }


def event_json_schema(cls: type[BaseEvent], *, name: str | None = None) -> dict[str, Any]:
    """The JSON Schema of an event's data: from its Marshmallow ``schema``, else any object.

    :param name: the event's name (default: the name it was registered under).
    :raises ConfigurationError: when the event's ``schema`` is not a Marshmallow schema.
    """
    if cls.schema is None:
        result: dict[str, Any] = {"type": "object"}
    else:
        instance = schema_instance(cls.schema, owner=cls)
        result = _object_schema(instance, (type(instance),))
    result["title"] = name or cls.name or cls.__name__
    doc = cls.__dict__.get("__doc__")
    if doc:
        result["description"] = inspect.cleandoc(doc)
    return result


def field_json_schema(field: mf.Field[Any]) -> dict[str, Any]:
    """The JSON Schema of the values one Marshmallow field loads.

    Fields and validators it cannot express (``Raw``, ``Method``, ``Pluck``, custom ``Field``
    subclasses, ``Predicate``, schema-level ``@validates_schema``...) are left unconstrained; they
    still run in ``clean()``. A ``json_schema`` dict in the field's ``metadata`` replaces the
    result, e.g. ``fields.Field(metadata={"json_schema": {"type": "string"}})``.
    """
    return _field_schema(field, ())


def _field_schema(field: mf.Field[Any], seen: tuple[type, ...]) -> dict[str, Any]:
    override = field.metadata.get(JSON_SCHEMA_METADATA)
    if isinstance(override, dict):
        result = dict(override)
    else:
        result = _base_schema(field, seen)
        _apply_validators(result, field.validators)
    for key in ("title", "description"):
        if isinstance(field.metadata.get(key), str):
            result[key] = field.metadata[key]
    default = field.load_default
    if default is not marshmallow.missing and _is_literal(default):
        result["default"] = default
    if field.allow_none:
        result = _nullable(result)
    return result


def _base_schema(field: mf.Field[Any], seen: tuple[type, ...]) -> dict[str, Any]:
    # Subclasses before their bases: Pluck is a Nested, UUID a String, Integer a Number...
    if isinstance(field, mf.Pluck):
        return {}
    if isinstance(field, mf.Nested):
        nested = field.schema
        if type(nested) in seen:
            item: dict[str, Any] = {"type": "object"}  # a recursive schema: not unfolded
        else:
            item = _object_schema(nested, (*seen, type(nested)), unknown=field.unknown)
        return {"type": "array", "items": item} if field.many else item
    if isinstance(field, mf.Constant):
        return {"const": field.constant} if _is_literal(field.constant) else {}
    if isinstance(field, mf.Enum):
        if not field.by_value:
            return {"type": "string", "enum": [member.name for member in field.enum]}
        values = [member.value for member in field.enum]
        if all(_is_literal(value) for value in values):
            return {**_literal_type(values), "enum": values}
        return _field_schema(field.field, seen)
    if isinstance(field, mf.List):
        return {"type": "array", "items": _field_schema(field.inner, seen)}
    if isinstance(field, mf.Tuple):
        items = [_field_schema(inner, seen) for inner in field.tuple_fields]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if isinstance(field, mf.Mapping):
        result: dict[str, Any] = {"type": "object"}
        if field.value_field is not None:
            result["additionalProperties"] = _field_schema(field.value_field, seen)
        if field.key_field is not None:
            keys = _field_schema(field.key_field, seen)
            if keys.get("type") == "string" and len(keys) > 1:
                keys.pop("type")
                result["propertyNames"] = keys
        return result
    if isinstance(field, mf.UUID):
        return {"type": "string", "format": "uuid"}
    if isinstance(field, mf.String):
        # Email and Url too: each carries its validate.Email / validate.URL, which adds the format.
        return {"type": "string"}
    if isinstance(field, mf.Integer):
        return {"type": "integer"}
    if isinstance(field, mf.Decimal):
        return {"type": ["number", "string"], "pattern": _DECIMAL_PATTERN}
    if isinstance(field, mf.Number):
        return {"type": "number"}
    if isinstance(field, mf.Boolean):
        return {"type": "boolean"}
    if isinstance(field, (mf.DateTime, mf.Date, mf.Time)):
        return _temporal_schema(field)
    if isinstance(field, mf.TimeDelta):
        return {"type": "number"}
    if isinstance(field, mf.IPv4):
        return {"type": "string", "format": "ipv4"}
    if isinstance(field, mf.IPv6):
        return {"type": "string", "format": "ipv6"}
    if isinstance(field, (mf.IP, mf.IPInterface)):
        return {"type": "string"}
    return {}  # Raw, Method, Function, custom fields: anything


def _temporal_schema(field: mf.DateTime | mf.Date | mf.Time) -> dict[str, Any]:
    form = field.format
    if form in ("timestamp", "timestamp_ms"):
        return {"type": "number"}
    if form not in (None, "iso", "iso8601"):
        return {"type": "string"}  # an strftime format or "rfc": no JSON Schema format says it
    if isinstance(field, mf.DateTime):
        return {"type": "string", "format": "date-time"}
    if isinstance(field, mf.Date):
        return {"type": "string", "format": "date"}
    return {"type": "string", "format": "time"}


def _object_schema(
    instance: marshmallow.Schema, seen: tuple[type, ...], *, unknown: str | None = None
) -> dict[str, Any]:
    partial = instance.partial
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in instance.load_fields.items():
        key = field.data_key or name
        properties[key] = _field_schema(field, seen)
        is_partial = partial is True or (bool(partial) and name in partial)  # type: ignore[operator]
        if field.required and not is_partial:
            required.append(key)
    result: dict[str, Any] = {"type": "object", "properties": dict(sorted(properties.items()))}
    if required:
        result["required"] = sorted(required)
    if (unknown or instance.unknown) == marshmallow.RAISE:
        result["additionalProperties"] = False
    return result


def _apply_validators(schema: dict[str, Any], validators: Iterable[Any]) -> None:
    kind = _main_type(schema)
    for validator in validators:
        if isinstance(validator, mv.And):
            _apply_validators(schema, validator.validators)
        elif isinstance(validator, mv.ContainsOnly):  # before OneOf, its base class
            choices = list(validator.choices)
            if kind == "array" and all(_is_literal(choice) for choice in choices):
                schema["items"] = {**schema.get("items", {}), "enum": choices}
        elif isinstance(validator, mv.OneOf):
            choices = list(validator.choices)
            if all(_is_literal(choice) for choice in choices):
                schema["enum"] = choices
        elif isinstance(validator, mv.Equal):
            if _is_literal(validator.comparable):
                schema["const"] = validator.comparable
        elif isinstance(validator, mv.Range):
            for bound, inclusive, keys in (
                (validator.min, validator.min_inclusive, ("minimum", "exclusiveMinimum")),
                (validator.max, validator.max_inclusive, ("maximum", "exclusiveMaximum")),
            ):
                number = _number(bound)
                if number is not None:
                    schema[keys[0] if inclusive else keys[1]] = number
        elif isinstance(validator, mv.Length):
            names = _LENGTH_KEYWORDS.get(kind or "")
            if names is not None:
                low = validator.equal if validator.equal is not None else validator.min
                high = validator.equal if validator.equal is not None else validator.max
                if low is not None:
                    schema[names[0]] = low
                if high is not None:
                    schema[names[1]] = high
        elif isinstance(validator, mv.Regexp):
            pattern = validator.regex.pattern
            if kind == "string" and isinstance(pattern, str) and not validator.regex.flags & ~re.UNICODE:
                # Marshmallow uses re.match (anchored at the start); a JSON Schema pattern searches.
                schema["pattern"] = f"^(?:{pattern})"
        elif isinstance(validator, mv.Email):
            schema["format"] = "email"
        elif isinstance(validator, mv.URL):
            schema["format"] = "uri"
        # Other validators (NoneOf, Predicate, plain callables) cannot be said in JSON Schema.


_LENGTH_KEYWORDS = {
    "string": ("minLength", "maxLength"),
    "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"),
}


def _main_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind if isinstance(kind, str) else None


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "const" in schema:
        schema = {**{k: v for k, v in schema.items() if k != "const"}, "enum": [schema["const"]]}
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    elif isinstance(kind, list):
        if "null" not in kind:
            schema["type"] = [*kind, "null"]
    elif "anyOf" in schema:
        schema["anyOf"] = [*schema["anyOf"], {"type": "null"}]
    # Otherwise (no type, or an enum without one) null is already allowed.
    return schema


def _is_literal(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, bool, int))


def _literal_type(values: list[Any]) -> dict[str, Any]:
    names = {_JSON_TYPES[type(value)] for value in values if type(value) in _JSON_TYPES}
    return {"type": names.pop()} if len(names) == 1 and len(values) > 0 else {}


_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else float(value)
    return None  # dates and other comparable values have no JSON Schema bound
