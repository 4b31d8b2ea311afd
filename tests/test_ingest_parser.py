"""The Flask-free parser of ``POST /event/log``, tested and fuzzed directly: no app, no test client.

The parser gets what the view reads of a request (content type, body bytes, query and form
parameters) and answers with the events and the problems of single events, or raises
:class:`Refused` for the whole request. The generated inputs are checked against the spec of an
event written out here (``expected_*``), so a test asserts what was read, not only that nothing
else was raised. Hostile requests through the whole app are in ``test_http_fuzz.py``.
"""

from __future__ import annotations

import ast
import json
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_eventlib.ingest import MAX_DEPTH, Item, Problem, Refused, read_events
from flask_eventlib.ingest.parser import FORM_TYPES, JSON_TYPES

MAX_BATCH = 50
UPPER_ID = "2F1C0F6E-8B1A-4C5E-9F0A-3D2B1C4E5F6A"
REFUSAL_CODES = {"invalid_json", "invalid_request", "too_many_events", "unsupported_media_type"}
fuzz = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class PlainParams(dict[str, list[str]]):
    """Parameters as a plain dict of lists: the shape the parser reads (Werkzeug's MultiDict has it)."""

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> PlainParams:
        params = cls()
        for key, value in pairs:
            params.setdefault(key, []).append(value)
        return params

    def lists(self) -> Iterable[tuple[str, list[str]]]:
        return self.items()


def qs(text: str) -> PlainParams:
    return PlainParams.of(parse_qsl(text, keep_blank_values=True))


def parse(
    body: Any = b"",
    mimetype: str = "application/json",
    query: PlainParams | None = None,
    form: PlainParams | None = None,
    **options: Any,
) -> tuple[list[Item], list[Problem]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return read_events(mimetype, raw, query, form, **{"max_batch": MAX_BATCH, **options})


def refusal(*args: Any, **kwargs: Any) -> Problem:
    """The problem of the whole request's refusal, checked for its shape."""
    with pytest.raises(Refused) as info:
        parse(*args, **kwargs)
    problem = info.value.problem
    assert info.value.status == problem.status and str(info.value) == problem.message
    assert problem.index is problem.event is problem.id is problem.details is None
    return problem


def nested(levels: int) -> bytes:
    """An event whose body nests ``levels`` objects and arrays: the event, its data, then arrays."""
    arrays = levels - 2
    return b'{"event": "web.PageView", "data": {"x": ' + b"[" * arrays + b"]" * arrays + b"}}"


# -- JSON bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mimetype", sorted(JSON_TYPES))
def test_a_json_event(mimetype: str) -> None:
    assert parse({"event": "web.PageView", "data": {"page": "/"}}, mimetype) == (
        [Item(0, "web.PageView", {"page": "/"}, None)],
        [],
    )
    assert parse({"event": "web.PageView"}, mimetype) == ([Item(0, "web.PageView", {}, None)], [])


def test_a_batch_gives_each_event_its_result() -> None:
    items, problems = parse(
        {
            "events": [
                {"event": "web.PageView", "data": {"page": "/"}},
                "web.Search",
                {"event": "web.Search", "context": {"user": 1}},
                {"data": {}},
                {"event": "web.Rating", "data": [5]},
                {"event": "web.Rating", "data": {"stars": 5}, "id": UPPER_ID},
            ]
        }
    )
    assert items == [
        Item(0, "web.PageView", {"page": "/"}, None),
        Item(5, "web.Rating", {"stars": 5}, UPPER_ID.lower()),
    ]
    assert [(p.index, p.status, p.code, p.event) for p in problems] == [
        (1, 400, "invalid_event", None),
        (2, 400, "invalid_event", "web.Search"),
        (3, 400, "invalid_event", None),
        (4, 400, "invalid_event", "web.Rating"),
    ]
    assert problems[1].message == "Unexpected keys 'context'; an event has only event, data and id."
    assert problems[2].message == "The event name is missing or not a string: send 'event'."


def test_ids_are_uuids_in_lower_case() -> None:
    assert parse({"event": "web.PageView", "id": UPPER_ID})[0] == [Item(0, "web.PageView", {}, UPPER_ID.lower())]
    assert parse({"event": "web.PageView", "id": None})[0] == [Item(0, "web.PageView", {}, None)]
    for sent, shown in [("7", "7"), (UPPER_ID + "0", UPPER_ID + "0"), ("x" * 300, "x" * 200 + "..."), (7, None)]:
        items, (problem,) = parse({"event": "web.PageView", "id": sent})
        assert items == []
        assert (problem.status, problem.code, problem.index, problem.event, problem.id) == (
            400,
            "invalid_id",
            0,
            "web.PageView",
            shown,
        )
        assert problem.message == "An event id must be a UUID like 2f1c0f6e-8b1a-4c5e-9f0a-3d2b1c4e5f6a."
    # The parser reads shapes; two events of a batch with one id are the view's to refuse (after
    # logging the first), so both come out of the parser.
    twice = {"events": [{"event": "web.PageView", "id": UPPER_ID}, {"event": "web.Search", "id": UPPER_ID.lower()}]}
    assert [item.id for item in parse(twice)[0]] == [UPPER_ID.lower()] * 2


@pytest.mark.parametrize("max_depth", [MAX_DEPTH, 3, 8])
def test_the_depth_limit(max_depth: int) -> None:
    assert parse(nested(max_depth), max_depth=max_depth)[0][0].name == "web.PageView"
    problem = refusal(nested(max_depth + 1), max_depth=max_depth)
    assert (problem.status, problem.code) == (400, "invalid_json")
    assert problem.message == f"The body nests objects and arrays deeper than {max_depth} levels."
    assert refusal(nested(1000), max_depth=max_depth).code == "invalid_json"


def test_brackets_in_strings_are_not_nesting() -> None:
    data = {"x": "[" * 100, "y": "{" * 100}
    assert parse({"event": "web.PageView", "data": data}) == ([Item(0, "web.PageView", data, None)], [])


@pytest.mark.parametrize("max_batch", [1, 3, MAX_BATCH])
def test_the_batch_limit(max_batch: int) -> None:
    events = [{"event": "web.PageView", "data": {"n": n}} for n in range(max_batch + 1)]
    items, problems = parse({"events": events[:max_batch]}, max_batch=max_batch)
    assert [item.data["n"] for item in items] == list(range(max_batch)) and problems == []
    problem = refusal({"events": events}, max_batch=max_batch)
    assert (problem.status, problem.code) == (413, "too_many_events")
    assert problem.message == (
        f"The batch holds {max_batch + 1} events; send at most {max_batch} (EVENTLIB_MAX_BATCH)."
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'The body must be a JSON object. Send {"event": "app.EventName", "data": {...}} or {"events": [...]}.'),
        ("web.PageView", "The body must be a JSON object."),
        ({"events": [], "event": "web.PageView"}, "A batch has only the key 'events'."),
        ({"events": []}, "'events' must be a non-empty array of events."),
        ({"events": {"event": "web.PageView"}}, "'events' must be a non-empty array of events."),
    ],
)
def test_bodies_of_the_wrong_shape_are_refused(document: Any, message: str) -> None:
    problem = refusal(document)
    assert (problem.status, problem.code) == (400, "invalid_request")
    assert problem.message.startswith(message)


@pytest.mark.parametrize("body", [b"{", b'{"event": NaN}', b'"\xff"', b'"\\ud800"', b"1e400", b"\x00"])
def test_bodies_that_are_not_json_are_refused(body: bytes) -> None:
    problem = refusal(body)
    assert (problem.status, problem.code) == (400, "invalid_json")
    assert problem.message.startswith("The body is not valid JSON (UTF-8): ")


# -- the query-string and form bodies -------------------------------------------------------------


def test_the_specs_query_string() -> None:
    spec = qs("__event__=web.PageView&param1=val1&param2=val2")
    expected = ([Item(0, "web.PageView", {"param1": "val1", "param2": "val2"}, None)], [])
    assert parse(query=spec, mimetype="") == expected
    assert parse(query=spec) == expected  # sendBeacon's text/plain with no body
    assert parse(form=spec, mimetype="application/x-www-form-urlencoded") == expected
    with_id = qs(f"__id__={UPPER_ID}&__event__=web.Search&query=shoes")
    assert parse(query=with_id, mimetype="") == ([Item(0, "web.Search", {"query": "shoes"}, UPPER_ID.lower())], [])
    items, (problem,) = parse(query=qs("__event__=web.Search&__id__=7"), mimetype="")
    assert items == [] and (problem.code, problem.event, problem.id) == ("invalid_id", "web.Search", "7")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("", "No event: name it with __event__ in the query string, or send JSON."),
        ("page=/", "The event name is missing: send it as __event__."),
        ("__event__=&page=/", "The event name is missing: send it as __event__."),
        ("__event__=web.PageView&a=1&a=2", "The parameter 'a' is repeated; send it once."),
        ("__event__=web.PageView&__event__=web.Search", "The parameter '__event__' is repeated; send it once."),
    ],
)
@pytest.mark.parametrize("where", ["query", "form"])
def test_parameters_that_name_no_single_event_are_refused(params: str, message: str, where: str) -> None:
    if where == "query":
        problem = refusal(query=qs(params) or None, mimetype="")
    else:
        problem = refusal(form=qs(params), mimetype="multipart/form-data")
    assert (problem.status, problem.code, problem.message) == (400, "invalid_request", message)


def test_one_event_per_request_in_the_body_or_the_query_string() -> None:
    spec = qs("__event__=web.PageView")
    both = "Send the event in the query string or in the body, not both."
    assert refusal({"event": "web.PageView"}, query=spec).message == both
    assert refusal(form=spec, query=spec, mimetype="application/x-www-form-urlencoded").message == both
    files = refusal(form=spec, mimetype="multipart/form-data", has_files=True)
    assert files.message == "Files are not accepted; send the event's data as fields."


@pytest.mark.parametrize("mimetype", ["application/xml", "text/html", "application/json\x00", "garbage"])
def test_other_content_types_are_refused_with_or_without_a_body(mimetype: str) -> None:
    for body in (b"", b'{"event": "web.PageView"}'):
        problem = refusal(body, mimetype, query=qs("__event__=web.PageView"))
        assert (problem.status, problem.code) == (415, "unsupported_media_type")
    untyped = refusal(b'{"event": "web.PageView"}', "")
    assert (untyped.status, untyped.message) == (415, "A body needs a Content-Type, e.g. application/json.")


# -- generated input, checked against the spec --------------------------------------------------


def is_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def levels(value: Any) -> int:
    """How many objects and arrays nest in ``value``."""
    if isinstance(value, dict):
        return 1 + max(map(levels, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(levels, value), default=0)
    return 0


def expected_entry(index: int, entry: Any) -> Item | str:
    """What the spec reads from an event: an object of ``event`` (a name), ``data`` (an object) and
    ``id`` (a UUID, or none), or else the code of its problem."""
    if (
        not isinstance(entry, dict)
        or not set(entry) <= {"event", "data", "id"}
        or not isinstance(entry.get("event"), str)
        or not entry["event"]
        or not isinstance(entry.get("data", {}), dict)
    ):
        return "invalid_event"
    event_id = entry.get("id")
    if event_id is not None and not is_uuid(event_id):
        return "invalid_id"
    return Item(index, entry["event"], entry.get("data", {}), None if event_id is None else event_id.lower())


def expected_document(document: Any, max_batch: int, max_depth: int) -> list[Item | str] | tuple[int, str]:
    """What the spec says of a JSON body: each event's outcome, or the whole refusal's status and code."""
    if levels(document) > max_depth:
        return 400, "invalid_json"
    if not isinstance(document, dict):
        return 400, "invalid_request"
    if "events" not in document:
        return [expected_entry(0, document)]
    events = document["events"]
    if set(document) != {"events"} or not isinstance(events, list) or not events:
        return 400, "invalid_request"
    if len(events) > max_batch:
        return 413, "too_many_events"
    return [expected_entry(index, entry) for index, entry in enumerate(events)]


def expected_params(params: PlainParams | None) -> list[Item | str] | tuple[int, str]:
    """What the spec says of the query-string form: one event named by ``__event__``, the other
    parameters its data, each sent once."""
    if not params or any(len(values) > 1 for values in params.values()) or not params.get("__event__", [""])[0]:
        return 400, "invalid_request"
    data = {key: values[0] for key, values in params.items() if key not in ("__event__", "__id__")}
    return [expected_entry(0, {"event": params["__event__"][0], "data": data, "id": params.get("__id__", [None])[0]})]


def expected_request(
    mimetype: str, body: bytes, query: PlainParams | None, form: PlainParams | None, has_files: bool
) -> list[Item | str] | tuple[int, str]:
    """What the spec says of a request: JSON in the body, or parameters in a form or the query
    string, never both; no files; no other content type."""
    if mimetype in JSON_TYPES:
        if body and query:
            return 400, "invalid_request"
        if not body:
            return expected_params(query)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, "invalid_json"
        return expected_document(document, MAX_BATCH, MAX_DEPTH)
    if mimetype in FORM_TYPES:
        if has_files or (form and query):
            return 400, "invalid_request"
        return expected_params(form or query)
    if mimetype or body:
        return 415, "unsupported_media_type"
    return expected_params(query)


def outcome(
    mimetype: str, body: bytes = b"", query: PlainParams | None = None, form: PlainParams | None = None, **options: Any
) -> list[Item | str] | tuple[int, str]:
    """The parser's answer in the spec's terms: each event's item or problem code, in order, or the
    status and code of the whole request's refusal."""
    try:
        items, problems = read_events(mimetype, body, query, form, **{"max_batch": MAX_BATCH, **options})
    except Refused as exc:
        assert exc.status == exc.problem.status and exc.problem.index is None
        return exc.problem.status, exc.problem.code
    indexes = [item.index for item in items] + [problem.index for problem in problems]
    assert sorted(index for index in indexes if index is not None) == list(range(len(indexes)))  # one result each
    assert all(problem.status == 400 for problem in problems)
    results: dict[int, Item | str] = {item.index: item for item in items}
    results.update({problem.index: problem.code for problem in problems if problem.index is not None})
    return [results[index] for index in sorted(results)]


# What JSON holds: no lone surrogates, no NaN or infinity (refused, or written as null), and
# integers that orjson reads back as integers.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["web.PageView", "web.Search", "", "deals.__class__", "x" * 300]) | text
ids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | st.uuids().map(lambda u: u.hex) | json_values
event_entries = st.fixed_dictionaries(
    {},
    optional={
        "event": names | json_values,
        "data": st.dictionaries(text, json_values, max_size=4) | json_values,
        "id": ids,
        "context": json_values,
    },
)
# Events as a browser sends them, so that many are read: a name, maybe data and an id.
good_entries = st.fixed_dictionaries(
    {"event": names},
    optional={"data": st.dictionaries(text, json_values, max_size=4), "id": ids},
)
documents = st.one_of(
    good_entries,
    event_entries,
    st.fixed_dictionaries({"events": st.lists(good_entries, min_size=1, max_size=12)}),
    st.fixed_dictionaries({"events": st.lists(good_entries | event_entries | json_values, max_size=12)}),
    st.fixed_dictionaries({"events": st.lists(event_entries, max_size=3)}, optional={"event": names}),
    st.fixed_dictionaries({"events": json_values}),
    json_values,
)
batch_limits = st.just(MAX_BATCH) | st.integers(1, 10)
depth_limits = st.just(MAX_DEPTH) | st.integers(1, 12)


def kinds(found: list[Item | str] | tuple[int, str]) -> list[str]:
    """The kinds of outcome, to check that the generators reach every path."""
    return [found[1]] if isinstance(found, tuple) else [f if isinstance(f, str) else "item" for f in found]


def test_json_documents_are_read_as_the_spec_says() -> None:
    seen: Counter[str] = Counter()

    @settings(fuzz, max_examples=700)
    @given(documents, batch_limits, depth_limits, st.sampled_from(sorted(JSON_TYPES)))
    @example({"event": "a.B"}, MAX_BATCH, MAX_DEPTH, "application/json")  # an item
    @example({"event": "a.B", "id": 1}, MAX_BATCH, MAX_DEPTH, "application/json")  # invalid_id
    @example({"event": 1}, MAX_BATCH, MAX_DEPTH, "application/json")  # invalid_event
    @example([{}], MAX_BATCH, MAX_DEPTH, "application/json")  # invalid_request
    @example({"events": [{"event": "a.B"}] * 3}, 2, MAX_DEPTH, "application/json")  # too_many_events
    @example([[[1]]], MAX_BATCH, 2, "application/json")  # invalid_json (too deep)
    def check(document: Any, max_batch: int, max_depth: int, mimetype: str) -> None:
        found = outcome(mimetype, orjson.dumps(document), max_batch=max_batch, max_depth=max_depth)
        assert found == expected_document(document, max_batch, max_depth)
        seen.update(kinds(found))

    check()
    assert seen["item"] > 0, seen
    assert {"invalid_event", "invalid_id", "invalid_json", "invalid_request", "too_many_events"} <= set(seen), seen


content_types = st.sampled_from(["", *sorted(JSON_TYPES), *sorted(FORM_TYPES), "application/xml", "text/html"])
pairs = st.lists(
    st.tuples(st.sampled_from(["__event__", "__id__", "a", "b"]) | text, names | st.uuids().map(str)), max_size=5
)
# Parameters as a browser sends them: the event's name first, then its data.
good_pairs = st.tuples(names, st.lists(st.tuples(text, text), max_size=4)).map(
    lambda found: [("__event__", found[0]), *found[1]]
)
params = st.one_of(st.none(), st.none(), good_pairs.map(PlainParams.of), pairs.map(PlainParams.of))
bodies = st.one_of(
    st.binary(max_size=200),
    documents.map(orjson.dumps),
    documents.map(lambda d: orjson.dumps(d).replace(b'"', b'"\xff\xc0\xaf\xed\xa0\x80', 1)),  # invalid UTF-8
    st.integers(3, 2000).map(nested),
    st.sampled_from([b"", b"null", b"[]", b"{}", b"NaN", b"{" * 5000, b"[" * 5000 + b"]" * 5000]),
)


def test_any_request_is_read_or_refused_as_a_whole() -> None:
    seen: Counter[str] = Counter()

    @settings(fuzz, max_examples=700)
    @given(content_types, bodies, params, params, st.booleans())
    @example("application/json", b'{"event": "a.B", "data": {}}', None, None, False)  # an item
    @example("application/json", b'{"event": "a.B", "id": "x"}', None, None, False)  # invalid_id
    @example("application/json", b'{"event": 7}', None, None, False)  # invalid_event
    @example("application/json", b"{", None, None, False)  # invalid_json
    @example("text/html", b"x", None, None, False)  # unsupported_media_type
    @example("", b"", None, None, False)  # invalid_request
    def check(mimetype: str, body: bytes, query: PlainParams | None, form: PlainParams | None, has_files: bool) -> None:
        # Only Refused may escape the parser (anything else fails the test), and what it answers
        # is what the spec says.
        found = outcome(mimetype, body, query, form, has_files=has_files)
        assert found == expected_request(mimetype, body, query, form, has_files)
        seen.update(kinds(found))

    check()
    # Which outcomes the generated requests reach varies with what ran before in the process
    # (Hypothesis shares caches across tests), so the explicit examples make sure each is reached.
    assert seen["item"] > 0, seen
    assert set(seen) >= REFUSAL_CODES - {"too_many_events"} | {"invalid_event", "invalid_id"}, seen


def test_parameters_are_read_as_the_spec_says() -> None:
    seen: Counter[str] = Counter()

    @fuzz
    @given(pairs, st.sampled_from(["", "text/plain", *sorted(FORM_TYPES)]))
    @example([("__event__", "a.B"), ("k", "v")], "")  # an item
    @example([], "")  # no event
    @example([("k", "1"), ("k", "2")], "")  # repeated
    @example([("k", "v")], "")  # no name
    @example([("__event__", "a.B"), ("__id__", "x")], "")  # invalid_id
    def check(sent: list[tuple[str, str]], mimetype: str) -> None:
        params = PlainParams.of(sent)
        where = {"form": params} if mimetype in FORM_TYPES else {"query": params or None}
        expected = expected_params(params)
        found = outcome(mimetype, **where)
        assert found == expected
        if isinstance(expected, tuple):  # and the refusal says what to send instead
            repeated = [key for key, values in params.items() if len(values) > 1]
            message = refusal(mimetype=mimetype, **where).message
            if not sent:
                assert message == "No event: name it with __event__ in the query string, or send JSON."
            elif repeated:
                assert message == f"The parameter {repeated[0]!r} is repeated; send it once."
            else:
                assert message == "The event name is missing: send it as __event__."
            seen["no event" if not sent else "repeated" if repeated else "no name"] += 1
        else:
            seen.update(kinds(found))

    check()
    assert {"item", "no event", "repeated", "no name", "invalid_id"} <= set(seen), seen


# -- Flask stays at the edge ----------------------------------------------------------------------


@pytest.mark.parametrize("module", ["errors", "guards", "parser", "settings"])
def test_the_ingest_but_its_view_imports_no_flask(module: str) -> None:
    path = Path(__file__).resolve().parent.parent / "flask_eventlib" / "ingest" / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is None:  # from .. import config
            imported.update("." * node.level + alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + node.module)
    assert not {name for name in imported if name.split(".")[0] in ("flask", "werkzeug")}, imported
    # Within the library, only modules that import no Flask either.
    assert {name for name in imported if name.startswith(".")} <= {
        "..config",
        "..exceptions",
        ".errors",
        ".guards",
    }, imported
