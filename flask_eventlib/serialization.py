"""The codec: events to tagged JSON and back, with a registry of extra types.

JSON values pass as they are. Other values become ``{"$t": tag, "$v": payload}``, where the tag is
a stable name from the type registry; a user dict key that starts with ``$`` is stored with one
more ``$`` so it can never be taken for a tag. Decoding looks tags up in the registry and never
imports anything a payload names.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import sys
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from .exceptions import SerializationError

_TAG = "$t"
_VALUE = "$v"
_SCALARS = (str, int, float, bool, type(None))
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class _Unsupported(Exception):
    """Internal: carries the path of an unsupported value up the walk."""

    def __init__(self, value: Any, path: list[str], reason: str = "") -> None:
        self.value = value
        self.path = path
        self.reason = reason


class Codec:
    """Encodes values to JSON-native structures and back, using registered types."""

    def __init__(self) -> None:
        self._dumpers: dict[type, tuple[str, Callable[[Any], Any]]] = {}
        self._loaders: dict[str, Callable[[Any], Any]] = {}

    def register_type(self, cls: type, tag: str, *, dump: Callable[[Any], Any], load: Callable[[Any], Any]) -> None:
        """Teach the codec a type.

        :param cls: the type; its subclasses use the same tag unless registered themselves.
        :param tag: a stable name for the type on the wire (not a module path: it must not
            change when code moves).
        :param dump: turns a value into something the codec can encode (JSON or registered types).
        :param load: turns that back into the value.
        """
        if not isinstance(cls, type):
            raise TypeError(f"register_type() needs a type, got {cls!r}")
        if cls in _SCALARS or cls in (dict, list):
            raise TypeError(f"{cls.__name__} is a JSON type and is encoded as JSON already")
        if not isinstance(tag, str) or not tag or tag.startswith("$"):
            raise TypeError(
                f"register_type({cls.__name__}, {tag!r}): a tag is a non-empty string not starting with '$'"
            )
        if not (callable(dump) and callable(load)):
            raise TypeError(f"register_type({cls.__name__}, {tag!r}): dump and load must be callables")
        if tag in self._loaders and self.tags().get(tag) is not cls:
            taken = self.tags().get(tag)
            owner = f"{taken.__module__}.{taken.__qualname__}" if taken else "a built-in number format"
            raise TypeError(
                f"The tag {tag!r} already stands for {owner}; "
                f"choose another tag for {cls.__module__}.{cls.__qualname__}"
            )
        self._dumpers[cls] = (tag, dump)
        self._loaders[tag] = load

    def tags(self) -> dict[str, type]:
        """Every registered tag and its type."""
        return {tag: cls for cls, (tag, _) in self._dumpers.items()}

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, value: Any, *, root: str = "the value") -> Any:
        """``value`` as a JSON-native structure.

        :param root: how error messages name ``value`` (e.g. ``"deals.DealClick data"``).

        :raises SerializationError: (a ``TypeError``) naming where the unsupported value is.
        """
        if isinstance(value, dict):
            flat = self.encode_flat(value)
            if flat is not None:
                return flat
        try:
            return self._encode(value)
        except RecursionError:
            raise SerializationError(f"Cannot serialize {root}: it is nested too deeply") from None
        except _Unsupported as exc:
            where = root + "".join(reversed(exc.path))
            kind = type(exc.value)
            reason = exc.reason or (
                f"type {kind.__module__}.{kind.__qualname__} is not serializable. Convert it, or "
                f"register it: flask_eventlib.register_type({kind.__qualname__}, 'tag', dump=..., load=...)"
            )
            raise SerializationError(f"Cannot serialize {where}: {reason}") from None

    def encode_flat(self, value: dict[Any, Any]) -> dict[str, Any] | None:
        """A dict encoded in one loop over its top level, or ``None`` where it needs
        :meth:`encode` (which names what it cannot encode).

        The common case, plain keys and JSON scalars, is JSON already: the dict itself comes back,
        not a copy (orjson writes a dict subclass as a dict). A value that is not a JSON scalar (a
        datetime, a list) is encoded on its own, in a copy. ``None`` for a key that needs the whole
        walk, a registered dict type, or a value that cannot be encoded.
        """
        if type(value) in self._dumpers:
            return None
        out: dict[str, Any] | None = None
        for key, item in value.items():
            if type(key) is not str or key[:1] == "$":
                return None
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if (kind is int and _INT_MIN <= item <= _INT_MAX) or (kind is float and math.isfinite(item)):
                continue
            if out is None:
                out = dict(value)
            try:
                out[key] = self._encode(item)
            except (_Unsupported, RecursionError):
                return None  # encode() walks it again, to say where and why
        return value if out is None else out

    def _encode(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is bool or value is None:
            return value
        if kind is int:
            if _INT_MIN <= value <= _INT_MAX:
                return value
            try:
                return {_TAG: "int", _VALUE: str(value)}
            except ValueError:  # Python's limit on int-to-decimal conversion (sys.get_int_max_str_digits)
                raise _Unsupported(
                    value,
                    [],
                    f"the int has more than {sys.get_int_max_str_digits()} digits, more than Python "
                    "converts to text; send it as a string or a Decimal",
                ) from None
        if kind is float:
            if math.isfinite(value):
                return value
            return {_TAG: "float", _VALUE: repr(value)}
        entry = self._dumpers.get(kind)  # a registered type itself (a datetime): no walk of its MRO
        if entry is not None:
            return self._dump(value, entry)
        if kind is dict or isinstance(value, dict):  # a registered dict subclass went to its dumper above
            out = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise _Unsupported(
                        key,
                        [f"[{key!r}]"],
                        f"the key {key!r} is a {type(key).__name__}; keys must be strings",
                    )
                try:
                    encoded = self._encode(item)
                except _Unsupported as exc:
                    exc.path.append(f"[{key!r}]")
                    raise
                out["$" + key if key[:1] == "$" else key] = encoded
            return out
        if kind is list or isinstance(value, list):
            out_list = []
            for index, item in enumerate(value):
                try:
                    out_list.append(self._encode(item))
                except _Unsupported as exc:
                    exc.path.append(f"[{index}]")
                    raise
            return out_list
        for klass in kind.__mro__:
            entry = self._dumpers.get(klass)
            if entry is not None:
                return self._dump(value, entry)
        raise _Unsupported(value, [])

    def _dump(self, value: Any, entry: tuple[str, Callable[[Any], Any]]) -> dict[str, Any]:
        tag, dump = entry
        try:
            dumped = dump(value)
        except Exception as exc:
            raise _Unsupported(value, [], f"the dump function for {tag!r} failed: {exc!r}") from exc
        return {_TAG: tag, _VALUE: dumped if type(dumped) is str else self._encode(dumped)}

    def dumps(self, value: Any) -> str:
        """Encode ``value`` and serialize it to a JSON string."""
        return self.serialize(self.encode(value))

    @staticmethod
    def serialize(encoded: Any, *, root: str = "the value") -> str:
        """A JSON string of a structure :meth:`encode` made (it is not encoded again).

        :raises SerializationError: naming the string that is not valid UTF-8 (a lone surrogate).
        """
        try:
            return orjson.dumps(encoded).decode()
        except orjson.JSONEncodeError as exc:
            path = _invalid_text(encoded)
            if path is None:
                raise SerializationError(f"Cannot serialize {root}: {exc}") from None
            raise SerializationError(
                f"Cannot serialize {root}{''.join(path)}: the string holds a lone surrogate, which is "
                "not valid UTF-8 (decode your bytes with errors='replace', or drop the character)"
            ) from None

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, value: Any) -> Any:
        """The value a JSON-native structure made by :meth:`encode` stands for.

        :raises SerializationError: for an unknown tag or a payload its loader refuses.
        """
        kind = type(value)
        if kind is dict:
            if _TAG in value:
                tag = value[_TAG]
                loader = self._loaders.get(tag) if isinstance(tag, str) else None
                if loader is None:
                    raise SerializationError(
                        f"Unknown type tag {tag!r} in an event payload: register the type with "
                        "register_type() in the worker too"
                    )
                try:
                    return loader(self.decode(value.get(_VALUE)))
                except SerializationError:
                    raise
                except Exception as exc:
                    raise SerializationError(f"Cannot decode a {tag!r} value: {exc}") from exc
            return {(key[1:] if key[:1] == "$" else key): self.decode(item) for key, item in value.items()}
        if kind is list:
            return [self.decode(item) for item in value]
        return value

    def loads(self, text: str | bytes) -> Any:
        """Parse a JSON string made by :meth:`dumps` and decode it."""
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"An event payload is not valid JSON: {exc}") from exc
        # Only an object key that starts with "$" (a type tag, or a key escaped by encode) needs
        # decoding, and a text holds none without '"$' (or the key's "$" written as \u0024): most
        # events skip the walk of every value.
        if isinstance(text, bytes):
            tagged = b'"$' in text or b"\\u0024" in text
        else:
            tagged = '"$' in text or "\\u0024" in text
        return self.decode(parsed) if tagged else parsed


def _invalid_text(value: Any) -> list[str] | None:
    """Where in an encoded structure a string (or key) cannot be UTF-8, as ``["['key']", "[0]"]``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return []
        return None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _invalid_text(key) is not None:
            return [f"[{key!r}]"]
        found = _invalid_text(item)
        if found is not None:
            return [f"[{key!r}]", *found]
    return None


# -- built-in types ---------------------------------------------------------------------------


def _dump_datetime(value: dt.datetime) -> Any:
    zone = getattr(value.tzinfo, "key", None)  # a zoneinfo.ZoneInfo keeps its zone, not only its offset
    text = value.isoformat()
    return [text, zone, value.fold] if zone or value.fold else text


def _load_datetime(payload: Any) -> dt.datetime:
    if isinstance(payload, str):
        return dt.datetime.fromisoformat(payload)
    text, zone, fold = payload
    value = dt.datetime.fromisoformat(text)
    if zone:
        from zoneinfo import ZoneInfo

        value = value.replace(tzinfo=ZoneInfo(zone))
    return value.replace(fold=fold)


def _load_int(payload: str) -> int:
    return int(payload)


def _load_float(payload: str) -> float:
    if payload not in ("nan", "inf", "-inf"):
        raise ValueError(f"{payload!r} is not a non-finite float")
    return float(payload)


def register_builtins(codec: Codec) -> None:
    """Register the types every codec knows."""
    codec.register_type(dt.datetime, "datetime", dump=_dump_datetime, load=_load_datetime)
    codec.register_type(dt.date, "date", dump=dt.date.isoformat, load=dt.date.fromisoformat)
    codec.register_type(dt.time, "time", dump=dt.time.isoformat, load=dt.time.fromisoformat)
    codec.register_type(
        dt.timedelta,
        "timedelta",
        dump=lambda v: [v.days, v.seconds, v.microseconds],
        load=lambda p: dt.timedelta(*p),
    )
    codec.register_type(decimal.Decimal, "decimal", dump=str, load=decimal.Decimal)
    codec.register_type(uuid.UUID, "uuid", dump=str, load=uuid.UUID)
    codec.register_type(bytes, "bytes", dump=lambda v: base64.b64encode(v).decode(), load=base64.b64decode)
    codec.register_type(tuple, "tuple", dump=list, load=tuple)
    codec.register_type(set, "set", dump=list, load=set)
    codec.register_type(frozenset, "frozenset", dump=list, load=frozenset)
    # Numbers JSON cannot hold: big ints and non-finite floats (only via the encoder's fast path).
    codec._loaders["int"] = _load_int
    codec._loaders["float"] = _load_float


#: The codec ``EventLib`` uses unless given another; ``register_type`` adds to it.
default_codec = Codec()
register_builtins(default_codec)


def register_type(cls: type, tag: str, *, dump: Callable[[Any], Any], load: Callable[[Any], Any]) -> None:
    """Teach the default codec a type; see :meth:`Codec.register_type`.

    Example::

        register_type(Money, "money", dump=lambda m: [str(m.amount), m.currency],
                      load=lambda p: Money(Decimal(p[0]), p[1]))
    """
    default_codec.register_type(cls, tag, dump=dump, load=load)
