"""Marshmallow glue: an event's ``schema`` loads and validates its data."""

from __future__ import annotations

from typing import Any

import marshmallow

from .exceptions import ConfigurationError, ValidationError

_instances: dict[type, marshmallow.Schema] = {}


def schema_instance(schema: Any) -> marshmallow.Schema:
    """A Marshmallow schema instance for ``schema`` (a class, built once, or an instance)."""
    if isinstance(schema, marshmallow.Schema):
        return schema
    if isinstance(schema, type) and issubclass(schema, marshmallow.Schema):
        try:
            return _instances[schema]
        except KeyError:
            instance = _instances[schema] = schema()
            return instance
    raise ConfigurationError(
        f"schema = {schema!r} is not a Marshmallow schema: set it to a marshmallow.Schema "
        "subclass or instance (or override clean() to validate another way)"
    )


def load(schema: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Load ``data`` through ``schema``; Marshmallow's errors become :class:`ValidationError`."""
    try:
        loaded = schema_instance(schema).load(data)
    except marshmallow.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ValidationError(_summary(messages), messages=messages) from None
    if not isinstance(loaded, dict):
        raise ConfigurationError(
            f"{type(schema_instance(schema)).__name__}.load() returned {type(loaded).__name__}; "
            "an event schema must load a dict (remove its @post_load that builds an object)"
        )
    return loaded


def _summary(messages: dict[str, Any]) -> str:
    parts = []
    for field, problems in messages.items():
        text = "; ".join(str(p) for p in problems) if isinstance(problems, list) else str(problems)
        parts.append(f"{field}: {text}")
    return "Invalid event data: " + ", ".join(parts)
