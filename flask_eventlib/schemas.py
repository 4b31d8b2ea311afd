"""Marshmallow glue: an event's ``schema`` loads its data (:func:`load`).

Besides this module, only :mod:`flask_eventlib.jsonschema` imports Marshmallow: it reads the
fields of the same schema instances to describe the data as JSON Schema.
"""

from __future__ import annotations

from typing import Any

import marshmallow

from .exceptions import ConfigurationError, ValidationError

#: The attribute, in a schema class's own ``__dict__``, that holds the instance
#: :func:`schema_instance` built for it.
_INSTANCE = "_flask_eventlib_instance"


def schema_instance(schema: Any, *, owner: type | None = None) -> marshmallow.Schema:
    """A Marshmallow schema instance for ``schema`` (a class, built once, or an instance).

    :param owner: the event class whose ``schema`` it is, named in the error.
    :raises ConfigurationError: when ``schema`` is not a Marshmallow schema.
    """
    if isinstance(schema, marshmallow.Schema):
        return schema
    if isinstance(schema, type) and issubclass(schema, marshmallow.Schema):
        # One instance per class, built at first use and shared: building one costs more than a
        # load (Marshmallow copies and binds every field) and clean() needs one per event logged.
        # It lives on the class, not in a dict here: the instance refers to its class, so a dict,
        # even a WeakKeyDictionary, would keep the class alive for good (Marshmallow's registry
        # keeps most classes anyway, but not Schema.from_dict() or register=False ones).
        # vars(), not getattr(): a subclass gets its own. Two threads may each build one at first
        # use; both work, and the last one stored is shared from then on.
        instance = vars(schema).get(_INSTANCE)
        if not isinstance(instance, schema):
            instance = schema()
            setattr(schema, _INSTANCE, instance)
        return instance
    where = f"{owner.__module__}.{owner.__qualname__}.schema" if owner is not None else "schema"
    raise ConfigurationError(
        f"{where} = {schema!r} is not a Marshmallow schema: set it to a marshmallow.Schema "
        "subclass or instance (or override clean() to validate another way)"
    )


def load(schema: Any, data: dict[str, Any], *, owner: type | None = None) -> dict[str, Any]:
    """Load ``data`` through ``schema``; Marshmallow's errors become :class:`ValidationError`.

    :param owner: the event class whose ``schema`` it is, named in configuration errors.
    """
    instance = schema_instance(schema, owner=owner)
    try:
        loaded = instance.load(data)
    except marshmallow.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ValidationError(_summary(messages), messages=messages) from None
    if not isinstance(loaded, dict):
        raise ConfigurationError(
            f"{type(instance).__name__}.load() returned {type(loaded).__name__}; "
            "an event schema must load a dict (remove its @post_load that builds an object)"
        )
    return loaded


def _summary(messages: dict[str, Any]) -> str:
    parts = []
    for field, problems in messages.items():
        text = "; ".join(str(p) for p in problems) if isinstance(problems, list) else str(problems)
        parts.append(f"{field}: {text}")
    return "Invalid event data: " + ", ".join(parts)
