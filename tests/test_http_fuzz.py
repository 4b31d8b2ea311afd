"""Thousands of generated requests against POST /event/log: never a 5xx, never a stray handler.

Methods, content types, bodies (JSON documents, event-shaped JSON, batches, deep nesting, invalid
UTF-8, random bytes, forms), query strings (huge, percent-garbage, names like ``deals.__class__``)
and Origin / Referer headers are combined at random. Eager mode runs handlers inside the request,
so the records added by one request are exactly its handlers' work: none for a refusal, one per
accepted event (every public sample event has one handler), only for accepted ids.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Records
from tests.sample import create_app

EXAMPLES = 5000
PUBLIC = {"web.PageView", "web.Search", "web.Rating"}

NAMES = [
    "web.PageView",
    "web.Search",
    "web.Rating",
    "web.Internal",
    "deals.DealClick",
    "deals.__class__",
    "deals.__init__",
    "web.__dict__",
    "web.BaseEvent",
    "web.clean",
    "__builtins__.eval",
    "os.system",
    "flask_eventlib.BaseEvent",
    "eventlib.log",
    "web..PageView",
    "web.PageView.store",
    "WEB.PageView",
    "web.PageView\x00",
    " web.PageView",
    ".",
    "",
]
name_values = st.one_of(st.sampled_from(NAMES), st.text(max_size=30))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
ids = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(max_size=40), json_values)
events = st.fixed_dictionaries(
    {},
    optional={
        "event": name_values | json_values,
        "data": st.dictionaries(st.text(max_size=10), json_values, max_size=5) | json_values,
        "id": ids,
        "context": json_values,
    },
)
documents = st.one_of(
    events,
    st.fixed_dictionaries({"events": st.lists(events | json_values, max_size=55)}),
    st.fixed_dictionaries({"events": json_values}),
    json_values,
)


def nested(depth: int) -> bytes:
    inner = "[" * depth + "]" * depth
    return json.dumps({"event": "web.PageView", "data": {"x": "@"}}).replace('"@"', inner).encode()


def corrupt(raw: bytes) -> bytes:
    """Invalid UTF-8 (a lone continuation byte, an overlong form, a surrogate) inside the text."""
    return raw.replace(b'"', b'"\xff\xc0\xaf\xed\xa0\x80', 1) if b'"' in raw else raw + b"\x80"


form_pairs = st.lists(
    st.tuples(st.sampled_from(["__event__", "__id__", "data", "context", "a"]) | st.text(max_size=10), name_values),
    max_size=6,
)
bodies = st.one_of(
    documents.map(lambda d: json.dumps(d).encode()),  # NaN, Infinity and huge integers included
    documents.map(lambda d: corrupt(json.dumps(d).encode())),
    (st.integers(1, 3000) | st.sampled_from([31, 32, 33, 200, 500, 990, 1000, 1023, 1024, 1025])).map(nested),
    st.binary(max_size=300),
    form_pairs.map(lambda pairs: urlencode(pairs).encode()),
    st.sampled_from([b"", b"null", b"[]", b"{}", b'"web.PageView"', b"x" * 70_000, b"{" * 50_000]),
)
query_strings = st.one_of(
    st.just(""),
    form_pairs.map(urlencode),
    st.text(max_size=60).map(lambda text: quote(text, safe="=&%")),
    st.sampled_from(
        [
            "__event__=web.PageView&" + "a" * 70_000,
            "__event__=web.PageView&%ff%fe=%c0%af",
            "__event__=%ff",
            "__event__=web.PageView&__event__=web.PageView",
            "__event__=web.PageView&__id__=" + str(uuid.UUID(int=0)),
            "__event__=deals.__class__",
            "__event__=web.PageView&a=1&a=2",
            "&&&==",
        ]
    ),
)
methods = st.sampled_from(["POST"] * 8 + ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"])
content_types = st.sampled_from(
    [
        None,
        "",
        "application/json",
        "APPLICATION/JSON",
        "application/json; charset=latin-1",
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "application/xml",
        "text/html",
        "garbage",
        "application/json\x00",
    ]
)
origin_headers = st.sampled_from(
    [
        {},
        {"Origin": "http://localhost"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://[::1"},
        {"Origin": "http://localhost:99999"},
        {"Referer": "http://localhost/page"},
        {"Referer": "https://evil.example/page"},
        {"Referer": "::::"},
        {"Origin": "https://evil.example", "Referer": "http://localhost/"},
    ]
)
wild_requests = st.fixed_dictionaries(
    {
        "method": methods,
        "query": query_strings,
        "body": bodies,
        "content_type": content_types,
        "headers": origin_headers,
    }
)

# Requests close to what a browser sends, so that many reach the dispatcher (and many are accepted).
browser_names = st.sampled_from(["web.PageView", "web.Search", "web.Rating"]) | st.sampled_from(NAMES)
browser_data = st.fixed_dictionaries(
    {},
    optional={
        "query": st.text(max_size=10) | json_values,
        "stars": st.integers(0, 6) | st.text(max_size=3),
        "page": json_values,
    },
) | st.dictionaries(st.text(max_size=10), json_values, max_size=4)
browser_events = st.fixed_dictionaries(
    {"event": browser_names}, optional={"data": browser_data, "id": st.uuids().map(str) | ids}
)
browser_documents = browser_events | st.fixed_dictionaries(
    {"events": st.lists(browser_events | events, min_size=1, max_size=12)}
)
friendly_origins = (
    st.sampled_from([{}, {}, {"Origin": "http://localhost"}, {"Referer": "http://localhost/p"}]) | origin_headers
)
json_requests = st.fixed_dictionaries(
    {
        "method": st.just("POST"),
        "query": st.just(""),
        "body": browser_documents.map(lambda d: json.dumps(d).encode()),
        "content_type": st.sampled_from(["application/json", "text/plain;charset=UTF-8", "text/plain"]),
        "headers": friendly_origins,
    }
)
browser_params = st.tuples(
    browser_names, st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=4)
).map(lambda pair: urlencode([("__event__", pair[0]), *pair[1]]))
query_requests = st.fixed_dictionaries(
    {
        "method": st.just("POST"),
        "query": browser_params,
        "body": st.just(b""),
        "content_type": st.sampled_from([None, "text/plain"]),
        "headers": friendly_origins,
    }
)
form_requests = st.fixed_dictionaries(
    {
        "method": st.just("POST"),
        "query": st.just(""),
        "body": browser_params.map(str.encode),
        "content_type": st.just("application/x-www-form-urlencoded"),
        "headers": friendly_origins,
    }
)
requests = st.one_of(wild_requests, json_requests, query_requests, form_requests)

ALLOWED = {202, 400, 403, 404, 405, 413, 415}


def test_generated_requests_never_fail_the_server_or_run_a_refused_event(
    records: Records, capsys: pytest.CaptureFixture[str], record_property: Any
) -> None:
    app = create_app(
        EVENTLIB_ALWAYS_EAGER=True,
        EVENTLIB_BROKER_URL="memory://",
        EVENTLIB_RATE_LIMIT=None,  # a 429 after the first 120 requests would hide every other answer
        SAMPLE_RECORD_KEY=records.key,
    )
    client = app.test_client()
    redis = records.client
    seen: dict[int, int] = {}
    logged: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(requests)
    def check(generated: dict[str, Any]) -> None:
        before = redis.llen(records.key)
        headers = dict(generated["headers"])
        if generated["content_type"] is not None:
            headers["Content-Type"] = generated["content_type"]
        response = client.open(
            "/event/log",
            method=generated["method"],
            data=generated["body"],
            headers=headers,
            # The raw query string, bytes as Latin-1, as a WSGI server passes it.
            environ_overrides={"QUERY_STRING": generated["query"].encode("utf-8", "surrogatepass").decode("latin-1")},
        )
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        assert status in ALLOWED, (status, response.get_data()[:500])
        new = [json.loads(item) for item in redis.lrange(records.key, before, -1)]
        if generated["method"] == "HEAD":
            assert status == 405 and not new
            return
        document = response.get_json()
        assert set(document) == {"accepted", "errors"}
        if status != 202:
            assert document["accepted"] == [] and document["errors"], document
            assert new == [], (status, new)
            return
        assert document["accepted"]
        ran = {entry["id"] for entry in new}
        assert {entry["name"] for entry in new} <= PUBLIC, new
        assert len(new) == len(ran) and ran <= set(document["accepted"]), (document, new)
        # An accepted id whose handler did not run again is a retry of an event already logged (dedup).
        assert set(document["accepted"]) - ran <= logged, (document, new)
        logged.update(document["accepted"])

    check()
    count = sum(seen.values())
    record_property("fuzz_requests", count)
    with capsys.disabled():
        print(f"\n[fuzz] {count} generated requests to /event/log; statuses: {dict(sorted(seen.items()))}", flush=True)
    assert count >= EXAMPLES
    assert seen.get(202, 0) > 50 and len(seen) >= 6  # the generator reaches the endpoint's main paths
