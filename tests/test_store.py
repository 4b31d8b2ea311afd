"""The three store backends behave alike: dedup marks and start counts expire, dead letters round-trip."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_eventlib import ConfigurationError
from flask_eventlib.store import (
    DELIVERY,
    Begun,
    DeadLetter,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    Store,
    store_from_url,
)
from tests.conftest import REDIS_URL, wait_for


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis) -> Iterator[Store]:
    prefix = f"eventlib-test:store:{uuid.uuid4().hex}:"
    url = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "redis": f"{REDIS_URL}?prefix={prefix}",
    }[request.param]
    found = store_from_url(url)
    assert type(found) is {"memory": MemoryStore, "sqlite": SQLiteStore, "redis": RedisStore}[request.param]
    yield found
    found.close()
    for key in redis_client.scan_iter(f"{prefix}*"):
        redis_client.delete(key)


def letter(n: int) -> DeadLetter:
    now = time.time()
    return DeadLetter(
        event_id=f"e{n}",
        event_name="deals.DealClick",
        handler="h",
        message="{}",
        error="RuntimeError()",
        traceback="Traceback ...",
        attempts=3,
        first_failed_at=now - 10,
        last_failed_at=now + n,
    )


def test_completed_marks_are_remembered_per_event_and_expire(store: Store) -> None:
    assert store.completed(["a", "b"]) == {"a": set(), "b": set()}
    store.mark_completed({"a": ["h1", "h2"], "b": []}, ttl=1)
    store.mark_completed({"a": ["h3"]}, ttl=1)
    assert store.completed(["a", "b"]) == {"a": {"h1", "h2", "h3"}, "b": set()}
    wait_for(lambda: store.completed(["a"]) == {"a": set()}, timeout=5, interval=0.2, what="the marks to expire")


def test_starts_are_counted_until_finished_read_with_the_dedup_marks_and_expire(store: Store) -> None:
    keys = [("m1", DELIVERY), ("a", "h"), ("m2", DELIVERY)]
    begun = store.begin(keys, ttl=60, done=["a", "b"])
    assert begun.unfinished == dict.fromkeys(keys, 0) and begun.done == {"a": set(), "b": set()}
    # A key twice in one call counts once; marks are read only for the event ids given.
    assert store.begin([("m1", DELIVERY), ("m1", DELIVERY)], ttl=60).unfinished == {("m1", DELIVERY): 1}
    assert store.begin([("m1", DELIVERY)], ttl=60).done == {}
    store.finish([("m1", DELIVERY), ("m2", DELIVERY)], {"a": ["h1", "h4"], "b": []}, ttl=60)
    begun = store.begin(keys, ttl=1, done=["a", "b"])
    assert begun.unfinished == {("m1", DELIVERY): 0, ("a", "h"): 1, ("m2", DELIVERY): 0}
    assert begun.done == {"a": {"h1", "h4"}, "b": set()}
    store.finish([("m2", DELIVERY)], {"b": ["h2"]}, ttl=0)  # dedup off: the count goes, nothing is marked
    assert store.completed(["b"]) == {"b": set()}
    if isinstance(store, RedisStore):  # a finished message leaves no key behind
        assert not store.client.exists(f"{store.prefix}starts:m2")
    # A finish can ride on the next begin: what it forgets goes first, in the same round trip.
    store.begin([("m2", DELIVERY)], ttl=60)
    assert store.begin([("m2", DELIVERY)], ttl=60, forget=[("m2", DELIVERY)]).unfinished == {("m2", DELIVERY): 0}
    assert store.begin([], ttl=60, forget=[("m2", DELIVERY)], done=["a"]) == Begun({"a": {"h1", "h4"}}, {})
    assert store.begin([("m2", DELIVERY)], ttl=60).unfinished == {("m2", DELIVERY): 0}
    # Polled less often than the ttl, so each look (itself a start) has expired by the next.
    wait_for(
        lambda: store.begin([("a", "h")], ttl=1).unfinished == {("a", "h"): 0},
        timeout=6,
        interval=1.2,
        what="the start count to expire",
    )


def test_dead_letters_round_trip_oldest_first(store: Store) -> None:
    letters = [letter(2), letter(0), letter(1)]
    for item in letters:
        store.add_dead_letter(item)
    assert [d.event_id for d in store.dead_letters()] == ["e0", "e1", "e2"]
    assert store.dead_letters()[0] == letters[1]
    assert store.remove_dead_letters([letters[0].id, "missing"]) == 1
    assert [d.event_id for d in store.dead_letters()] == ["e0", "e1"]


def test_bad_store_url_says_which_forms_work() -> None:
    with pytest.raises(ConfigurationError, match="sqlite:////absolute/path.sqlite3 or memory://"):
        store_from_url("postgres://x")


def test_a_claim_is_taken_once_released_only_by_its_owner_and_not_taken_for_a_done_handler(store: Store) -> None:
    a, b, c = ("e1", "h1"), ("e1", "h2"), ("e2", "h1")
    begun = store.begin([], ttl=60, claims=[a, b], owner="first", lease=60)
    assert begun.held == {} and begun.done == {"e1": set()}
    # Another owner finds both held, with the seconds left on the lease; the free one is its own.
    begun = store.begin([], ttl=60, claims=[a, b, c], owner="second", lease=60)
    assert set(begun.held) == {a, b} and all(50 < left <= 60 for left in begun.held.values())
    # The same owner asking again renews its claim (a recheck by the same delivery).
    assert store.begin([], ttl=60, claims=[a], owner="first", lease=60).held == {}
    # A release by another owner leaves the claim alone.
    store.finish([], {}, 60, release=[a, b], owner="second")
    assert set(store.begin([], ttl=60, claims=[a, b], owner="third", lease=60).held) == {a, b}
    # Marked done and released in one step: nobody claims it again, and the mark is read.
    store.finish([], {"e1": ["h1"]}, 60, release=[a], owner="first")
    begun = store.begin([], ttl=60, claims=[a, b], owner="third", lease=60)
    assert begun.done == {"e1": {"h1"}} and begun.held == {b: begun.held[b]}
    # Released without a mark (the handler failed): the next delivery takes it.
    store.finish([], {}, 60, release=[b], owner="first")
    assert store.begin([], ttl=60, claims=[b], owner="third", lease=60).held == {}


def test_a_claim_whose_owner_is_gone_expires_and_renewals_keep_a_live_ones(store: Store) -> None:
    crashed, running = ("e1", "h"), ("e2", "h")
    store.begin([], ttl=60, claims=[crashed, running], owner="first", lease=2)
    assert set(store.begin([], ttl=60, claims=[crashed, running], owner="second", lease=1).held) == {
        crashed,
        running,
    }

    def renewed_and_taken() -> bool:
        # The live owner renews its claim; the crashed one's lease runs out.
        store.renew({"first": [running], "other": [crashed]}, lease=5)
        return store.begin([], ttl=60, claims=[crashed], owner="second", lease=60).held == {}

    wait_for(renewed_and_taken, timeout=6, interval=0.2, what="the crashed owner's claim to expire")
    assert set(store.begin([], ttl=60, claims=[crashed, running], owner="third", lease=60).held) == {
        crashed,
        running,
    }
    # A renewal by someone who is not the owner does not bring an expired claim back.
    store.renew({"first": [crashed]}, lease=60)
    store.finish([], {}, 60, release=[crashed], owner="second")
    assert store.begin([], ttl=60, claims=[crashed], owner="third", lease=60).held == {}


def test_a_start_is_counted_only_when_its_claim_is_taken(store: Store) -> None:
    run = ("e1", "h")
    assert store.begin([run], ttl=60, claims=[run], owner="first", lease=60).unfinished == {run: 0}
    # Held by "first": "second" neither runs it nor counts a start, and sees the one start made.
    begun = store.begin([run], ttl=60, claims=[run], owner="second", lease=60)
    assert run in begun.held and begun.unfinished == {run: 1}
    assert store.begin([run], ttl=60, claims=[run], owner="second", lease=60).unfinished == {run: 1}
    # Its owner dies (the claim is released here, as its lease would end): the next start counts.
    store.finish([], {}, 60, release=[run], owner="first")
    assert store.begin([run], ttl=60, claims=[run], owner="second", lease=60).unfinished == {run: 1}
    assert store.begin([run], ttl=60, claims=[run], owner="second", lease=60).unfinished == {run: 2}
    # Done: not claimed, not counted.
    store.finish([], {"e1": ["h"]}, 60, release=[run], owner="second")
    begun = store.begin([run], ttl=60, claims=[run], owner="third", lease=60)
    assert begun.done == {"e1": {"h"}} and begun.held == {} and begun.unfinished == {run: 3}
    assert store.begin([run], ttl=60, claims=[run], owner="third", lease=60).unfinished == {run: 3}


def test_writes_sent_without_waiting_are_in_the_store_by_the_next_call_and_in_order(store: Store) -> None:
    runs = [(f"e{n}", "h") for n in range(5)]
    store.begin([("m", DELIVERY)], ttl=60, claims=runs, owner="me", lease=60)
    for eid, handler in runs[:-1]:
        store.finish([], {eid: [handler]}, 60, release=[(eid, handler)], owner="me", wait=False)
    # Another client sees the writes before any of their answers is read.
    other = store_from_url(f"{REDIS_URL}?prefix={store.prefix}") if isinstance(store, RedisStore) else store
    wanted = {"e0": {"h"}, "e3": {"h"}}
    wait_for(lambda: other.completed(["e0", "e3"]) == wanted, timeout=5, what="the writes sent without waiting")
    store.finish([("m", DELIVERY)], {"e4": ["h"]}, 60, release=runs[-1:], owner="me")
    begun = store.begin([("m", DELIVERY)], ttl=60, claims=runs, owner="else", lease=60)
    assert begun.held == {} and begun.done == {f"e{n}": {"h"} for n in range(5)}
    assert begun.unfinished == {("m", DELIVERY): 0}
    if other is not store:
        other.close()


def test_resp_packs_what_redis_reads(redis_client: redis.Redis) -> None:
    """The hand packing of the hot paths' writes (flask_eventlib.resp), against a real server."""
    from flask_eventlib import resp

    assert resp.pack("SET", "k", 1) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"
    key = f"eventlib-test:resp:{uuid.uuid4().hex}"
    conn = redis_client.connection_pool.get_connection()
    try:
        conn.send_packed_command([resp.pack("SET", key, "é\r\n", "EX", 60)])
        assert conn.read_response() in (b"OK", "OK")
    finally:
        redis_client.connection_pool.release(conn)
    assert redis_client.get(key) == "é\r\n".encode()
    redis_client.delete(key)


def _script_connections(client: redis.Redis, name: str) -> set[str]:
    """The ids of the connections named ``name`` (the store's own: ``CLIENT SETNAME``)."""
    return {entry["id"] for entry in client.client_list() if entry.get("name") == name}


@pytest.mark.parametrize("idle", [True, False], ids=["idle-and-checked", "failing-then-replaced"])
def test_the_redis_store_keeps_one_connection_and_replaces_one_the_server_closed(
    redis_client: redis.Redis, idle: bool
) -> None:
    """Its scripts, those it waits for and those it sends without waiting, go on one kept
    connection; one the server closed (a restart, its idle timeout) is found closed before the
    next call when it sat idle, or fails that call, which runs again on a new connection."""
    prefix = f"eventlib-test:store:{uuid.uuid4().hex}:"
    name = f"kept-{uuid.uuid4().hex[:8]}"
    store = store_from_url(f"{REDIS_URL}?prefix={prefix}&client_name={name}")
    assert isinstance(store, RedisStore)
    store._kept.idle_check = 0.0 if idle else 86400.0  # 0: every call checks first; a day: none does here
    try:
        store.begin([("e1", "h")], 60)
        store.finish([("e1", "h")], {"e1": ["h"]}, 60, wait=False)  # its answer is read by the next call
        assert store.begin([("e2", "h")], 60, done=["e1"]).done == {"e1": {"h"}}
        (kept,) = _script_connections(redis_client, name)  # every call so far on one connection
        redis_client.client_kill_filter(_id=kept)
        # A write sent without waiting: after an idle spell it goes on a new connection; right
        # after the last call it goes on the closed one, and the next call says so.
        store.finish([("e2", "h")], {"e2": ["h"]}, 60, wait=False)
        if idle:
            # The next write's connection is not checked while the answer to the last is unread
            # on it (that answer would make it look closed, and go with it).
            wait_for(lambda: store._kept.get(check=False).can_read(), what="the answer to the last write")
            store.finish([("e5", "h")], {"e5": ["h"]}, 60, wait=False)
            assert store.begin([("e3", "h")], 60, done=["e2", "e5"]).done == {"e2": {"h"}, "e5": {"h"}}
        else:
            with pytest.raises(redis.ConnectionError):
                store.begin([("e3", "h")], 60, done=["e2"])
            # A call it waits for, on a closed connection, runs again on a new one.
            store.begin([("e3", "h")], 60)
            (kept,) = _script_connections(redis_client, name)
            redis_client.client_kill_filter(_id=kept)
            begun = store.begin([("e4", "h")], 60, done=["e1"])
            assert begun.done == {"e1": {"h"}} and begun.unfinished == {("e4", "h"): 0}
        (replacement,) = _script_connections(redis_client, name)
        assert replacement != kept
    finally:
        store.close()
        for key in redis_client.scan_iter(f"{prefix}*"):
            redis_client.delete(key)
