"""The codec: round trips that keep types, errors that name the key, no imports by payload."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_eventlib import Codec, SerializationError
from flask_eventlib.serialization import default_codec, register_builtins

VALUES: list[Any] = [
    dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 1, 5),
    dt.time(8, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    Decimal("10.50"),
    Decimal("-0.000"),
    Decimal("1E+3"),
    Decimal("NaN"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"\x00\xffbytes",
    (1, "a", (2,)),
    {1, 2, 3},
    frozenset({"x"}),
    2**80,
    -(2**70),
    float("inf"),
    float("-inf"),
    {"$t": "not a tag", "$$v": 1, "$": 2},
    [{"$t": "datetime", "$v": "2020-01-01"}],
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip_keeps_type_and_repr(value: Any) -> None:
    decoded = default_codec.loads(default_codec.dumps({"v": value}))["v"]
    assert type(decoded) is type(value)
    assert repr(decoded) == repr(value)


def test_aware_datetime_keeps_its_own_offset() -> None:
    value = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    decoded = default_codec.loads(default_codec.dumps(value))
    assert decoded.utcoffset() == dt.timedelta(hours=9)
    assert decoded.hour == 9


def test_nan_round_trips() -> None:
    decoded = default_codec.loads(default_codec.dumps(float("nan")))
    assert decoded != decoded


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(json_values)
def test_any_json_value_round_trips(value: Any) -> None:
    assert default_codec.loads(default_codec.dumps(value)) == value


mixed_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.decimals(allow_nan=False),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), mixed_values))
def test_the_top_level_shortcut_encodes_a_dict_as_the_whole_walk_does(data: dict[str, Any]) -> None:
    # encode() handles a dict's top level in one loop (each value that is not a JSON scalar on
    # its own); _encode() is the walk of everything, which it must match.
    assert default_codec.encode(data) == default_codec._encode(data)
    assert default_codec.loads(default_codec.dumps(data)) == data


@given(st.dictionaries(st.text(), mixed_values))
def test_loads_skips_the_walk_only_where_it_would_change_nothing(data: dict[str, Any]) -> None:
    # loads() returns a parsed text that holds no '"$' as it is; the walk must agree.
    text = default_codec.dumps(data)
    assert default_codec.loads(text) == default_codec.decode(orjson.loads(text)) == data
    assert default_codec.loads(text.encode()) == data


def test_a_tag_or_an_escaped_key_written_with_a_unicode_escape_is_still_decoded() -> None:
    text = default_codec.dumps({"at": dt.date(2024, 2, 29), "$price": 1})
    escaped = text.replace('"$', '"\\u0024')
    assert '"$' not in escaped
    assert default_codec.loads(escaped) == {"at": dt.date(2024, 2, 29), "$price": 1}
    assert default_codec.loads(escaped.encode()) == {"at": dt.date(2024, 2, 29), "$price": 1}


@pytest.mark.parametrize(
    ("data", "where", "kind"),
    [
        ({"when": object()}, "data['when']", "builtins.object"),
        ({"a": [1, {"b": 1j}]}, "data['a'][1]['b']", "builtins.complex"),
    ],
)
def test_unsupported_value_names_the_key_and_the_type(data: dict[str, Any], where: str, kind: str) -> None:
    with pytest.raises(TypeError) as info:
        default_codec.encode(data, root="data")
    assert isinstance(info.value, SerializationError)
    assert where in str(info.value)
    assert kind in str(info.value)
    assert "register_type" in str(info.value)


def test_non_string_keys_are_refused_by_name() -> None:
    with pytest.raises(SerializationError, match=r"data\['x'\]\[1\]: the key 1 is a int; keys must be strings"):
        default_codec.encode({"x": {1: "one"}}, root="data")


class Money:
    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (other.amount, other.currency) == (self.amount, self.currency)


def test_register_type_adds_a_type_whose_dump_may_use_other_types() -> None:
    codec = Codec()
    register_builtins(codec)
    codec.register_type(Money, "money", dump=lambda m: [m.amount, m.currency], load=lambda p: Money(*p))
    value = {"price": Money(Decimal("9.99"), "EUR")}
    text = codec.dumps(value)
    assert '"money"' in text and "Money" not in text  # a stable tag, not a module path
    assert codec.loads(text) == value
    assert type(codec.loads(text)["price"].amount) is Decimal


def test_tags_are_unique_and_reserved() -> None:
    codec = Codec()
    register_builtins(codec)
    with pytest.raises(TypeError, match="already stands for datetime.datetime"):
        codec.register_type(Money, "datetime", dump=str, load=str)
    with pytest.raises(TypeError, match="built-in number format"):
        codec.register_type(Money, "int", dump=str, load=str)
    with pytest.raises(TypeError, match="not starting with"):
        codec.register_type(Money, "$money", dump=str, load=str)
    with pytest.raises(TypeError, match="JSON type"):
        codec.register_type(dict, "d", dump=str, load=str)


def test_decoding_an_unknown_tag_imports_nothing() -> None:
    payload = '{"$t": "os.system", "$v": "echo hacked"}'
    assert "some_module_never_imported" not in sys.modules
    with pytest.raises(SerializationError, match="Unknown type tag 'os.system'"):
        default_codec.loads(payload)
    with pytest.raises(SerializationError, match="Unknown type tag 'some_module_never_imported.X'"):
        default_codec.loads('{"$t": "some_module_never_imported.X", "$v": 1}')
    assert "some_module_never_imported" not in sys.modules


def test_bad_payloads_raise_serialization_errors() -> None:
    with pytest.raises(SerializationError, match="not valid JSON"):
        default_codec.loads(b"{nope")
    with pytest.raises(SerializationError, match="Cannot decode a 'decimal' value"):
        default_codec.loads('{"$t": "decimal", "$v": "ten"}')
    with pytest.raises(SerializationError, match="Cannot decode a 'float' value"):
        default_codec.loads('{"$t": "float", "$v": "1.5"}')


def test_values_nested_too_deeply_raise_a_serialization_error() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(5000):
        node.append([])
        node = node[0]
    with pytest.raises(SerializationError, match="nested too deeply"):
        default_codec.encode(deep, root="data")
