"""The way out: one message per request, the background sender, the spool (real SQLite, real Redis)."""

from __future__ import annotations

import base64
import datetime as dt
import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_eventlib import BaseEvent, EventLib, EventNotFound, SerializationError, ValidationError, flush, log, signals
from flask_eventlib.publishing import Sender
from flask_eventlib.spool import Spool
from tests.conftest import AMQP_URL, REDIS_URL, ROOT, Records, forget_queue, wait_for
from tests.faults import BROKEN_SQLITE, corrupt_sqlite_file, silent_server
from tests.sample import create_app


def make_queued_app(records: Records, tmp_path: Path, **config: Any) -> tuple[Flask, str]:
    """The sample app on the real Redis broker, with no worker: messages stay in the queue."""
    queue = f"eventlib-test-publish-{uuid.uuid4().hex[:8]}"
    app = create_app(
        EVENTLIB_BROKER_URL=REDIS_URL,
        EVENTLIB_QUEUE=queue,
        SAMPLE_RECORD_KEY=records.key,
        EVENTLIB_SPOOL_PATH=str(tmp_path / "spool.sqlite3"),
        **config,
    )

    @app.post("/click/<int:count>")
    def click(count: int) -> tuple[str, int]:
        for n in range(count):
            log("deals.DealClick", {"deal_id": n})
        return "", 204

    @app.post("/fail/<int:status>")
    def fail(status: int) -> tuple[str, int]:
        log("deals.DealClick", {"deal_id": status})
        if status == 0:
            raise RuntimeError("the view failed")
        return "", status

    return app, queue


@pytest.fixture
def queued_app(redis_client: redis.Redis, records: Records, tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    app, queue = make_queued_app(records, tmp_path)
    yield app, queue
    redis_client.delete(queue)


def queued_events(client: redis.Redis, queue: str) -> list[list[str]]:
    """The event batches waiting in a Celery queue on Redis, one list per message."""
    batches = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # kombu LPUSHes: oldest last
        args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        batches.append(args[0])
    return batches


def test_a_request_sends_its_events_as_one_message(queued_app: tuple[Flask, str], redis_client: redis.Redis) -> None:
    app, queue = queued_app
    assert app.test_client().post("/click/10").status_code == 204
    with app.app_context():
        assert flush()
    (batch,) = queued_events(redis_client, queue)
    assert len(batch) == 10
    assert [json.loads(m)["data"]["deal_id"] for m in batch] == list(range(10))


def test_a_batch_sends_the_events_it_kept_as_one_message_sharing_its_context(
    queued_app: tuple[Flask, str], redis_client: redis.Redis
) -> None:
    app, queue = queued_app
    state = app.extensions["eventlib"]
    with app.app_context():
        with pytest.raises(SerializationError, match=r"the events' context\['source'\]"):
            state.batch({"source": object()})  # refused before any event is added
        context = {"source": "import", "at": dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC)}
        batch = state.batch(context)
        context["source"] = "changed later"  # the batch keeps the context it was given
        kept = [batch.add("deals.DealClick", {"deal_id": 1})]
        with pytest.raises(ValidationError):
            batch.add("deals.DealClick", {})
        with pytest.raises(EventNotFound):
            batch.add("deals.Missing")
        kept.append(batch.add("deals.DealClick", {"deal_id": 2}))
        assert flush() and queued_events(redis_client, queue) == []  # nothing before publish()
        told: list[dict[str, Any]] = []

        def receiver(sender: Any, event: BaseEvent, **_: Any) -> None:
            told.append(event.context)

        signals.event_logged.connect(receiver)
        try:
            batch.publish()
            batch.publish()  # the batch is empty now: nothing is sent twice
        finally:
            signals.event_logged.disconnect(receiver)
        assert flush()
    assert [c["source"] for c in told] == ["import", "import"]  # what receivers see is what is sent
    (message,) = queued_events(redis_client, queue)
    logged = [state.runner.decode(m) for m in message]
    assert [event.id for event in logged] == kept
    assert [event.data["deal_id"] for event in logged] == [1, 2]
    assert all(
        event.context == {"source": "import", "at": dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC)} for event in logged
    )


def test_outside_a_request_log_publishes_at_once(queued_app: tuple[Flask, str], redis_client: redis.Redis) -> None:
    app, queue = queued_app
    with app.app_context():
        event_id = log("deals.DealClick", {"deal_id": 1})
        assert flush()
    (batch,) = queued_events(redis_client, queue)
    assert [json.loads(m)["id"] for m in batch] == [event_id]


def test_on_redis_a_message_is_one_lpush_in_the_form_celery_and_kombu_write(redis_client: redis.Redis) -> None:
    """The direct Redis publish writes what ``send_task`` through kombu writes (ids aside), and
    leaves no ``_kombu.binding.*`` key behind (kombu's publish declares the queue each time)."""
    from flask_eventlib.tasks import TASK_NAME, create_celery, make_send

    queue = f"eventlib-test-direct-{uuid.uuid4().hex[:8]}"
    celery = create_celery("direct", broker_url=REDIS_URL, queue=queue, settings={})
    try:
        make_send(celery, queue)(["a", "b"])
        (direct,) = [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]
        assert not redis_client.keys(f"_kombu.binding*{queue}")
        redis_client.delete(queue)
        # kombu's own path, for comparison (what make_send does on other brokers).
        celery.send_task(TASK_NAME, args=(["a", "b"],), queue=queue, argsrepr="<2 events>", kwargsrepr="{}")
        (through_kombu,) = [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]
    finally:
        redis_client.delete(queue, *redis_client.keys(f"_kombu.binding*{queue}"))
        celery.close()

    def shape(message: dict[str, Any]) -> dict[str, Any]:
        headers = {k: v for k, v in message["headers"].items() if k not in ("id", "root_id", "origin")}
        properties = {
            k: v for k, v in message["properties"].items() if k not in ("correlation_id", "reply_to", "delivery_tag")
        }
        properties.pop("argsrepr", None)
        properties.pop("kwargsrepr", None)
        body = json.loads(base64.b64decode(message["body"]))
        rest = {k: v for k, v in message.items() if k not in ("headers", "properties", "body")}
        return {"headers": headers, "properties": properties, "body": body, **rest}

    assert shape(direct) == shape(through_kombu)
    assert direct["headers"]["id"] == direct["properties"]["correlation_id"] == direct["headers"]["root_id"]
    assert direct["headers"]["origin"].startswith(f"gen{os.getpid()}@")


def _lpush_connections(client: redis.Redis) -> set[str]:
    """The ids of the connections whose last command was an LPUSH (the direct send's, and any
    other sender's in this process)."""
    return {entry["id"] for entry in client.client_list() if entry.get("cmd") == "lpush"}


@pytest.mark.parametrize("checked", [True, False], ids=["idle-and-checked", "failing-then-replaced"])
def test_the_direct_send_keeps_its_connection_and_replaces_one_the_server_closed(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    """One connection serves message after message; one the server closed (a restart, its idle
    timeout) is found closed before the next message when it sat idle (``checked``), or fails
    that message, which the sender then spools, and the next message gets a new connection."""
    from flask_eventlib import resp
    from flask_eventlib.tasks import create_celery, make_send

    queue = f"eventlib-test-direct-{uuid.uuid4().hex[:8]}"
    celery = create_celery("direct", broker_url=REDIS_URL, queue=queue, settings={})
    # 0: every message checks its connection first; a day: none does within this test.
    monkeypatch.setattr(resp, "IDLE_CHECK", 0.0 if checked else 86400.0)
    send = make_send(celery, queue)
    before = _lpush_connections(redis_client)
    try:
        send(["a"])
        send(["b"])
        (kept,) = _lpush_connections(redis_client) - before  # both messages on one kept connection
        redis_client.client_kill_filter(_id=kept)
        if checked:
            send(["c"])
        else:
            with pytest.raises(redis.ConnectionError):
                send(["lost to the closed connection"])
            send(["c"])
        batches = [
            json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
            for raw in reversed(redis_client.lrange(queue, 0, -1))
        ]
        assert batches == [["a"], ["b"], ["c"]]
    finally:
        redis_client.delete(queue)
        celery.close()


@pytest.mark.parametrize(("send_on_failure", "expected"), [(True, [400, 0]), (False, [])])
def test_failed_requests_send_their_events_unless_configured_otherwise(
    records: Records, tmp_path: Path, redis_client: redis.Redis, send_on_failure: bool, expected: list[int]
) -> None:
    app, queue = make_queued_app(records, tmp_path, EVENTLIB_SEND_ON_FAILED_REQUEST=send_on_failure)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert client.post("/fail/400").status_code == 400
    assert client.post("/fail/0").status_code == 500
    assert client.post("/fail/201").status_code == 201
    with app.app_context():
        assert flush()
    sent = [json.loads(m)["data"]["deal_id"] for batch in queued_events(redis_client, queue) for m in batch]
    redis_client.delete(queue)
    assert sent == [*expected, 201]


def test_events_logged_after_the_request_handed_its_events_over_are_sent(
    records: Records, tmp_path: Path, redis_client: redis.Redis
) -> None:
    # Flask runs teardown functions in reverse order: one registered before init_app runs after
    # the extension's, which has already handed the request's events to the sender.
    queue = f"eventlib-test-publish-{uuid.uuid4().hex[:8]}"
    app = Flask("late", instance_path=str(tmp_path))

    @app.teardown_request
    def audit(error: BaseException | None) -> None:
        log("late.Audited", {"path": "/"})

    @app.get("/")
    def index() -> str:
        log("late.Audited", {"path": "in the view"})
        return "ok"

    EventLib(app, broker_url=REDIS_URL, queue=queue, spool_path=str(tmp_path / "spool.sqlite3"))
    app.extensions["eventlib"].registry.register_event("late", Audited)
    try:
        for _ in range(20):
            assert app.test_client().get("/").status_code == 200
        with app.app_context():
            assert flush()
        sent = [json.loads(m)["data"]["path"] for batch in queued_events(redis_client, queue) for m in batch]
    finally:
        redis_client.delete(queue)
    assert sent.count("in the view") == 20 and sent.count("/") == 20


class Audited(BaseEvent):
    pass


def test_the_spool_keeps_order_and_survives_the_process(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, max_events=5)
    spool.put(["a", "b"])
    spool.put(["c"])
    with pytest.raises(Exception, match="holds 3 events"):
        spool.put(["d", "e", "f"])
    again = Spool(path)  # another process's view of the same file
    assert again.pending() == 3
    sent: list[list[str]] = []

    def fails_on_c(batch: list[str]) -> None:
        if "c" in batch:
            raise ConnectionError("broker down")
        sent.append(batch)

    with pytest.raises(ConnectionError):
        again.drain(fails_on_c, max_batch=2)  # messages of 2 events at most: ["a", "b"], then ["c"]
    assert sent == [["a", "b"]] and again.pending() == 1
    assert again.drain(sent.append) == 1
    assert sent == [["a", "b"], ["c"]] and spool.pending() == 0


def test_the_spool_drains_consecutive_batches_as_one_message_of_up_to_max_batch_events(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.sqlite3"))
    for batch in (["a", "b"], ["c"], ["d", "e", "f"], ["g"], ["h", "i", "j", "k", "l"], ["m"]):
        spool.put(batch)
    sent: list[list[str]] = []
    assert spool.drain(sent.append, max_batch=3) == 13
    # In order; a batch joins the message while it fits; one larger than max_batch goes alone.
    assert sent == [["a", "b", "c"], ["d", "e", "f"], ["g"], ["h", "i", "j", "k", "l"], ["m"]]
    assert spool.pending() == 0 and spool.drain(sent.append) == 0 and len(sent) == 5


def test_a_message_of_several_batches_that_fails_leaves_every_one_of_them_in_the_spool(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path)
    for n in range(4):
        spool.put([f"{n}-{i}" for i in range(10)])
    tried: list[list[str]] = []

    def broker_down(batch: list[str]) -> None:
        tried.append(batch)
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        spool.drain(broker_down, max_batch=25)
    assert [len(batch) for batch in tried] == [20]  # the first two batches together: 30 would not fit
    assert Spool(path).pending() == 40  # nothing removed: all four are sent later, in order
    sent: list[list[str]] = []
    assert Spool(path).drain(sent.append, max_batch=25) == 40
    assert sent == [[f"{n}-{i}" for n in (0, 1) for i in range(10)], [f"{n}-{i}" for n in (2, 3) for i in range(10)]]


def test_an_outage_of_single_requests_reaches_the_broker_in_full_messages(
    records: Records, tmp_path: Path, redis_client: redis.Redis
) -> None:
    # Requests logging 10 events each, spooled while the broker was down (by a process that
    # then died), reach the queue in messages of up to EVENTLIB_MAX_EVENTS_PER_MESSAGE events,
    # not one message per request: the workers catching up pay a message's cost per 100 events.
    # The spool is filled before the app that drains it starts (another app, with a spool of its
    # own, encodes the events): a sender already running could look mid-way and send a part.
    encoder, unused = make_queued_app(records, tmp_path / "encoder")
    dispatcher = encoder.extensions["eventlib"].dispatcher
    left = Spool(str(tmp_path / "spool.sqlite3"))
    with encoder.app_context():
        for request in range(25):
            batch = [{"deal_id": request * 10 + n} for n in range(10)]
            left.put([dispatcher.encode(dispatcher.build("deals.DealClick", data)) for data in batch])
    draining, queue = make_queued_app(records, tmp_path, EVENTLIB_MAX_EVENTS_PER_MESSAGE=100)
    try:
        assert draining.extensions["eventlib"].sender.spool.path == left.path  # the file filled above
        wait_for(lambda: left.pending() == 0, timeout=20, what="the app's sender to drain the spool")
        messages = queued_events(redis_client, queue)
        assert [len(message) for message in messages] == [100, 100, 50]
        assert [json.loads(event)["data"]["deal_id"] for message in messages for event in message] == list(range(250))
    finally:
        redis_client.delete(queue, unused)


def test_while_the_workers_are_behind_the_sender_fills_its_messages_and_stops_once_they_caught_up(
    records: Records, tmp_path: Path, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # No worker: the queue only grows. 5 messages waiting mean "behind" here (50 by default).
    # Until then each request goes as its own message; then the sender lingers (30 s here, so
    # a look can only see it still waiting) until it has a full message, and sends it without a
    # flush; once the workers have caught up, requests go one by one again.
    app, queue = make_queued_app(
        records,
        tmp_path,
        EVENTLIB_PUBLISH_LINGER=0,
        EVENTLIB_PUBLISH_BACKLOG_DEPTH=5,
        EVENTLIB_PUBLISH_BACKLOG_LINGER=30,
        EVENTLIB_MAX_EVENTS_PER_MESSAGE=30,
    )
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="flask_eventlib")
    try:
        for n in range(1, 6):  # each request's message is in the queue before the next request
            assert client.post("/click/10").status_code == 204
            wait_for(lambda n=n: redis_client.llen(queue) == n, timeout=10, what=f"message {n}")
        sender = app.extensions["eventlib"].sender
        # Said once the thread has read the answer to its LPUSH, which may be after the look above.
        said = "5 messages wait in the broker's queue: the workers are behind"
        wait_for(lambda: said in caplog.text, timeout=10, what="the sender to see the workers behind")
        assert sender.behind
        for _ in range(2):
            assert client.post("/click/10").status_code == 204
        assert redis_client.llen(queue) == 5  # 20 events wait for a full message, up to 30 s
        assert client.post("/click/10").status_code == 204  # 30: a full message, sent without flush()
        wait_for(lambda: redis_client.llen(queue) == 6, timeout=10, what="the full message")
        assert [len(message) for message in queued_events(redis_client, queue)] == [10, 10, 10, 10, 10, 30]
        redis_client.delete(queue)  # the workers caught up
        assert client.post("/click/10").status_code == 204
        with app.app_context():
            assert flush()  # its message waited out the backlog's linger: the depth it saw says 1
        assert not sender.behind
        assert "the workers have caught up (1 messages wait)" in caplog.text
        assert client.post("/click/10").status_code == 204  # sent on its own, without flush()
        wait_for(lambda: redis_client.llen(queue) == 2, timeout=10, what="a request's message, at once")
        assert [len(message) for message in queued_events(redis_client, queue)] == [10, 10]
    finally:
        redis_client.delete(queue)


def test_without_a_backlog_depth_the_sender_never_lingers_for_a_deep_queue(
    records: Records, tmp_path: Path, redis_client: redis.Redis
) -> None:
    app, queue = make_queued_app(records, tmp_path, EVENTLIB_PUBLISH_LINGER=0, EVENTLIB_PUBLISH_BACKLOG_DEPTH=0)
    redis_client.lpush(queue, *[b"waiting"] * 100)  # a queue far behind; no message needs reading here
    try:
        for n in range(101, 104):
            assert app.test_client().post("/click/10").status_code == 204
            wait_for(lambda n=n: redis_client.llen(queue) == n, timeout=10, what=f"message {n}, without flush()")
        assert not app.extensions["eventlib"].sender.behind
    finally:
        redis_client.delete(queue)


@pytest.mark.parametrize(
    ("broker_url", "settings"),
    [
        (AMQP_URL, {}),
        # A transport option the direct Redis path does not know: kombu's own Redis path publishes.
        (REDIS_URL, {"broker_transport_options": {"fanout_prefix": True}}),
        # Keys under a prefix, where kombu's own passive declare finds no queue.
        (REDIS_URL, {"broker_transport_options": {"global_keyprefix": "eventlib-test-prefix:"}}),
    ],
    ids=["rabbitmq", "redis-through-kombu", "redis-with-a-key-prefix"],
)
def test_where_the_publish_does_not_tell_the_depth_a_look_at_most_once_a_second_does(
    broker_url: str, settings: dict[str, Any], redis_client: redis.Redis
) -> None:
    from flask_eventlib.tasks import DEPTH_INTERVAL, create_celery, make_send

    queue = f"eventlib-test-depth-{uuid.uuid4().hex[:8]}"
    celery = create_celery("depth", broker_url=broker_url, queue=queue, settings=settings)
    # The send keeps its connection as long as it lives (a sender's: the process's life).
    sends = [make_send(celery, queue)]
    sent = 0

    def publish() -> int | None:
        nonlocal sent
        depth = sends[0]([f"event {sent}"])
        sent += 1
        return depth

    try:
        started = time.monotonic()
        seen = [publish(), publish(), publish()]
        if time.monotonic() - started < DEPTH_INTERVAL:
            assert seen == [1, None, None]  # a look after the first publish only, which it counts
        looked = wait_for(publish, timeout=10, what="a later look")
        assert looked == sent  # no worker: every message sent waits
    finally:
        if broker_url.startswith("amqp"):
            with celery.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
        else:
            forget_queue(redis_client, queue)
            prefixed = list(redis_client.scan_iter(f"eventlib-test-prefix:*{queue}"))
            if prefixed:
                redis_client.delete(*prefixed)
        with warnings.catch_warnings():
            # Dropped here, py-amqp's socket is closed by the collector, which warns.
            warnings.simplefilter("ignore", ResourceWarning)
            sends.clear()
            gc.collect()


def test_the_sender_spools_while_the_broker_fails_and_drains_in_order(tmp_path: Path) -> None:
    down = threading.Event()
    down.set()
    published: list[str] = []

    def send(batch: list[str]) -> None:
        if down.is_set():
            raise ConnectionError("broker down")
        published.extend(batch)

    spooled: list[int] = []

    def on_spooled(sender: object, count: int, reason: str) -> None:
        spooled.append(count)

    signals.events_spooled.connect(on_spooled)
    try:
        sender = Sender(send, spool=Spool(str(tmp_path / "s.sqlite3")), max_batch=3, retry_interval=0.05)
        for n in range(10):
            sender.submit([f"m{n}"])
        assert sender.flush(5)
        assert published == [] and sender.pending() == 10 and sum(spooled) == 10
        down.clear()
        wait_for(lambda: sender.pending() == 0, timeout=10, what="the spool to drain")
        sender.submit(["after"])
        assert sender.flush(5)
        assert published == [f"m{n}" for n in range(10)] + ["after"]
    finally:
        signals.events_spooled.disconnect(on_spooled)


def test_a_full_spool_drops_counts_and_signals(tmp_path: Path) -> None:
    dropped: list[int] = []

    def on_dropped(sender: object, count: int, reason: str) -> None:
        dropped.append(count)

    def send(batch: list[str]) -> None:
        raise ConnectionError("broker down")

    signals.events_dropped.connect(on_dropped)
    try:
        sender = Sender(send, spool=Spool(str(tmp_path / "s.sqlite3"), max_events=4), max_batch=2, retry_interval=60)
        for n in range(3):
            sender.submit([f"a{n}", f"b{n}"])
            assert sender.flush(5)
        assert sender.dropped == 2 and dropped == [2]
        assert sender.pending() == 4
    finally:
        signals.events_dropped.disconnect(on_dropped)


def test_log_returns_at_once_while_the_broker_is_unreachable(tmp_path: Path, records: Records) -> None:
    # Nothing listens on port 1: every publish fails; log() must not wait or raise.
    app = create_app(
        EVENTLIB_BROKER_URL="redis://127.0.0.1:1/0",
        EVENTLIB_STORE_URL="memory://",
        EVENTLIB_SPOOL_PATH=str(tmp_path / "spool.sqlite3"),
        SAMPLE_RECORD_KEY=records.key,
    )
    with app.app_context():
        started = time.perf_counter()
        for n in range(50):
            log("deals.DealClick", {"deal_id": n})
        elapsed = time.perf_counter() - started
        assert flush()
    assert elapsed < app.config["EVENTLIB_PUBLISH_TIMEOUT"]
    assert Spool(str(tmp_path / "spool.sqlite3")).pending() == 50


def test_the_sender_sends_at_once_after_a_quiet_spell_and_joins_events_under_load() -> None:
    batches: list[list[str]] = []
    sender = Sender(batches.append, max_batch=10, linger=5.0)
    sender.submit(["a"])
    # Nothing was sent for a while: "a" goes at once, without waiting for the linger.
    wait_for(lambda: batches == [["a"]], timeout=2, what="the first message")
    sender.submit(["b"])
    sender.submit(["c", "d"])
    assert batches == [["a"]]  # within the linger of the last message: they wait for the next one
    assert sender.flush(2)  # flush() cuts the wait short
    assert batches == [["a"], ["b", "c", "d"]]


def test_after_a_full_message_the_sender_sends_the_next_at_once_not_after_the_linger() -> None:
    """A backlog (more events waiting than a message holds) goes out message after message: the
    linger only spaces out messages while the sender keeps up."""
    batches: list[list[str]] = []
    sending = threading.Event()
    release = threading.Event()

    def send(batch: list[str]) -> None:
        sending.set()
        assert release.wait(5)
        batches.append(batch)

    sender = Sender(send, max_batch=2, linger=5.0)
    sender.submit(["a", "b"])  # a full message, held in send() while more events queue up
    assert sending.wait(2)
    sender.submit(["c", "d"])
    sender.submit(["e", "f"])
    sender.submit(["g"])
    release.set()
    # Without a flush and well within the 5 s linger: each full message let the next go at once.
    wait_for(lambda: len(batches) == 3, timeout=2, what="the backlog, message after message")
    assert batches == [["a", "b"], ["c", "d"], ["e", "f"]]  # "g", a part of one, waits out the linger
    assert sender.flush(2)
    assert batches == [["a", "b"], ["c", "d"], ["e", "f"], ["g"]]


def test_a_redis_that_stops_answering_sends_events_to_the_spool_not_into_a_hang(
    tmp_path: Path, records: Records
) -> None:
    # A "broker" that accepts connections and reads, but never answers (a network blackhole).
    with silent_server() as port:
        app = create_app(
            EVENTLIB_BROKER_URL=f"redis://127.0.0.1:{port}/0",
            EVENTLIB_PUBLISH_TIMEOUT=0.5,
            EVENTLIB_STORE_URL="memory://",
            EVENTLIB_SPOOL_PATH=str(tmp_path / "spool.sqlite3"),
            SAMPLE_RECORD_KEY=records.key,
        )
        with app.app_context():
            for n in range(5):
                log("deals.DealClick", {"deal_id": n})
            assert flush(timeout=10), "the sender hung on a broker that does not answer"
        assert Spool(str(tmp_path / "spool.sqlite3")).pending() == 5


# -- a spool that cannot be used must not stop delivery (issue 16, item 1) ----------------------


def test_a_spool_that_cannot_be_opened_does_not_stop_delivery_to_a_healthy_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    published: list[str] = []
    failures: list[str] = []

    def on_failed(sender: object, path: str, error: Exception) -> None:
        failures.append(path)

    path = corrupt_sqlite_file(tmp_path)  # found at start-up: the sender reads what an earlier process left
    signals.spool_failed.connect(on_failed)
    try:
        with caplog.at_level(logging.DEBUG, logger="flask_eventlib"):
            sender = Sender(published.extend, spool=Spool(path), max_batch=10)
            for n in range(25):
                sender.submit([f"m{n}"])
            assert sender.flush(5)
    finally:
        signals.spool_failed.disconnect(on_failed)
    assert published == [f"m{n}" for n in range(25)]
    assert sender.pending() == 0 and sender.dropped == 0
    assert sender.spool_failures == 1 and failures == [path]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and path in errors[0].getMessage()


@pytest.mark.parametrize("broken", BROKEN_SQLITE.values(), ids=BROKEN_SQLITE.keys())
def test_with_a_broken_spool_and_the_broker_down_events_wait_in_memory_and_are_sent_later(
    broken: Callable[[Path], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = threading.Event()
    down.set()
    published: list[str] = []

    def send(batch: list[str]) -> None:
        if down.is_set():
            raise ConnectionError("broker down")
        published.extend(batch)

    sender = Sender(send, spool=Spool(broken(tmp_path)), max_batch=4, retry_interval=0.05, max_memory=8)
    with caplog.at_level(logging.ERROR, logger="flask_eventlib"):
        for n in range(10):
            sender.submit([f"m{n}"])
        assert sender.flush(5)
    assert sender.pending() == 8 and sender.dropped == 2  # bounded: the last two had no room
    assert any("Dropped 2 events" in r.getMessage() for r in caplog.records)
    assert sender.spool_failures >= 1 and any("The spool" in r.getMessage() for r in caplog.records)
    down.clear()
    wait_for(lambda: sender.pending() == 0, timeout=10, what="the events held in memory to be sent")
    assert published == [f"m{n}" for n in range(8)]


def test_what_a_process_that_died_left_in_the_spool_is_sent_by_one_already_running(tmp_path: Path) -> None:
    # A process whose broker timed out put its events in the shared spool, then was SIGKILLed
    # before it could send them; the processes already running must not wait for a new one.
    path = str(tmp_path / "s.sqlite3")
    published: list[str] = []
    live = Sender(published.extend, spool=Spool(path), recover_interval=0.05)
    live.submit(["first"])
    assert live.flush(5) and published == ["first"]  # its thread runs, and found the spool empty
    dying = (
        "import os, signal, sys\n"
        "from flask_eventlib.publishing import Sender\n"
        "from flask_eventlib.spool import Spool\n"
        "def send(batch):\n"
        "    raise TimeoutError('the broker did not answer in time')\n"
        "sender = Sender(send, spool=Spool(sys.argv[1]))\n"
        "sender.submit(['left-1', 'left-2'])\n"
        "sender.submit(['left-3'])\n"
        "assert sender.flush(5)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run([sys.executable, "-c", dying, path], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert died.returncode == -9, died.stderr
    wait_for(lambda: len(published) >= 4, timeout=10, what="the live sender to send the dead process's events")
    assert sorted(published[1:]) == ["left-1", "left-2", "left-3"] and Spool(path).pending() == 0
    live.submit(["after"])
    assert live.flush(5) and published[-1] == "after" and len(published) == 5


def test_a_sender_thread_stuck_in_a_publish_is_reported_with_where_it_is(caplog: pytest.LogCaptureFixture) -> None:
    released = threading.Event()
    published: list[str] = []

    def wedged_publish(batch: list[str]) -> None:
        released.wait(30)  # a lock no one will release, as a forked child can inherit one
        published.extend(batch)

    sender = Sender(wedged_publish, stall_after=0.2)
    try:
        sender.submit(["first"])
        caplog.set_level(logging.ERROR, logger="flask_eventlib")
        # Each later event's hand-over looks at how long the waiting ones have waited.
        wait_for(
            lambda: sender.submit(["later"]) or "for the sender's thread, which took none of them" in caplog.text,
            timeout=10,
            what="the stall report",
        )
        assert "in wedged_publish" in caplog.text and "released.wait(30)" in caplog.text
        reports = caplog.text.count("which took none of them")
        assert reports == 1  # once per stall_after, not once per event
    finally:
        released.set()
    assert sender.flush(10) and published[0] == "first" and set(published[1:]) == {"later"}


def test_a_busy_sender_that_makes_progress_reports_no_stall(caplog: pytest.LogCaptureFixture) -> None:
    published: list[str] = []

    def slow_broker(batch: list[str]) -> None:
        time.sleep(0.01)  # the broker's own latency: events always wait, and are always taken
        published.extend(batch)

    sender = Sender(slow_broker, stall_after=0.5, max_batch=1)
    caplog.set_level(logging.ERROR, logger="flask_eventlib")
    deadline = time.monotonic() + 1.5
    sender.submit(["e"])
    while time.monotonic() < deadline:  # for three times stall_after, never without an event waiting
        sender.submit(["e"])
        wait_for(lambda: sender.pending() <= 1, timeout=5, interval=0.001, what="the sender to take the one before")
    assert sender.flush(10)
    assert len(published) > 30 and "which took none of them" not in caplog.text


def test_a_sender_thread_that_stops_is_replaced_and_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    class Fatal(BaseException):
        """Not an Exception: what would end a thread that only catches Exception."""

    published: list[str] = []
    calls = 0

    def send(batch: list[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Fatal("the thread dies here")
        published.extend(batch)

    sender = Sender(send, max_batch=10, retry_interval=0.05)
    with caplog.at_level(logging.ERROR, logger="flask_eventlib"):
        sender.submit(["a", "b"])
        assert sender.flush(5)
        wait_for(lambda: sender._thread is None, timeout=5, what="the first thread to end")
        sender.submit(["c"])
        wait_for(lambda: sender.pending() == 0, timeout=5, what="the new thread to send everything")
    assert sorted(published) == ["a", "b", "c"]
    assert any("sender thread stopped" in r.getMessage() for r in caplog.records)


def test_an_app_whose_spool_is_corrupt_still_delivers_every_event(
    redis_client: redis.Redis, records: Records, tmp_path: Path
) -> None:
    queue = f"eventlib-test-publish-{uuid.uuid4().hex[:8]}"
    app = create_app(
        EVENTLIB_BROKER_URL=REDIS_URL,
        EVENTLIB_QUEUE=queue,
        SAMPLE_RECORD_KEY=records.key,
        EVENTLIB_SPOOL_PATH=corrupt_sqlite_file(tmp_path),
    )
    try:
        with app.app_context():
            for n in range(40):
                log("deals.DealClick", {"deal_id": n})
            assert flush(timeout=10)
        delivered = [json.loads(m)["data"]["deal_id"] for batch in queued_events(redis_client, queue) for m in batch]
        assert delivered == list(range(40))
    finally:
        redis_client.delete(queue)


# -- a full disk, an orderly exit (issue 16, items 4 and 8) -------------------------------------

FULL_DISK_SCRIPT = """
import json, logging, os, resource, signal, sys, time
from flask_eventlib.publishing import Sender, Spool

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
path = sys.argv[1]
spool = Spool(path)
for n in range(10):
    spool.put([f"old{n}-{i}" for i in range(10)])  # 100 events the broker did not take earlier
# The disk is full from now on: no file of this process may grow (EFBIG, as SQLite's SQLITE_FULL).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = max(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
published = []
sender = Sender(published.extend, spool=spool, max_batch=10, retry_interval=0.05, spool_retry_interval=0.1)
for n in range(300):
    sender.submit([f"new{n}"])
assert sender.flush(10)
deadline = time.monotonic() + 20
while sender.spool_failures < 4 and time.monotonic() < deadline:
    time.sleep(0.05)  # polling the sender's own counter with a deadline
print(json.dumps({"published": published, "dropped": sender.dropped, "failures": sender.spool_failures}))
sys.stdout.flush()
os._exit(0)
"""


def _run_script(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_full_disk_neither_resends_a_sent_batch_nor_holds_healthy_delivery_hostage(tmp_path: Path) -> None:
    run = _run_script(FULL_DISK_SCRIPT, str(tmp_path / "spool.sqlite3"))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    published: list[str] = result["published"]
    assert sorted(n for n in published if n.startswith("new")) == sorted(f"new{n}" for n in range(300))
    assert result["dropped"] == 0  # the broker was healthy: nothing waited on the full disk
    assert published.count("old0-0") == 1  # sent once; its removal failed; never sent again
    assert result["failures"] >= 4  # the spool was tried again meanwhile, and still failed
    # Logged once at ERROR, with the cause (SQLite calls a write past the file-size limit an I/O error).
    assert run.stderr.count("ERROR The spool") == 1 and "disk I/O error" in run.stderr


EXIT_SCRIPT = """
import os, sys
import redis
from flask_eventlib.publishing import Sender, Spool

path, url, key, at_exit = sys.argv[1:]
client = redis.Redis.from_url(url)
down = [True]

def send(batch):
    if down[0]:
        raise ConnectionError("broker down")
    client.rpush(key, *batch)

# A retry interval far longer than the run: only the exit itself tries the broker again.
sender = Sender(send, spool=Spool(path), max_batch=10, retry_interval=600)
for n in range(100):
    sender.submit([f"e{n}"])
assert sender.flush(10) and sender.spool.pending() == 100
down[0] = at_exit == "down"
sys.exit(0)  # an orderly exit: the interpreter's exit hooks run
"""


@pytest.mark.parametrize("at_exit", ["up", "down"])
def test_an_orderly_exit_tries_the_broker_once_more_and_says_what_is_left(
    tmp_path: Path, redis_client: redis.Redis, at_exit: str
) -> None:
    path, key = str(tmp_path / "spool.sqlite3"), f"eventlib-test:exit:{uuid.uuid4().hex}"
    try:
        run = _run_script(EXIT_SCRIPT, path, REDIS_URL, key, at_exit)
        assert run.returncode == 0, run.stderr
        sent = [item.decode() for item in redis_client.lrange(key, 0, -1)]
    finally:
        redis_client.delete(key)
    if at_exit == "up":
        assert sorted(sent) == sorted(f"e{n}" for n in range(100)) and Spool(path).pending() == 0
        assert "left in the spool" not in run.stderr
    else:
        assert sent == [] and Spool(path).pending() == 100
        assert f"100 events are left in the spool {path} at exit; the next process using it sends them" in run.stderr


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (TimeoutError("Timeout reading from socket"), "The broker did not answer in time, for 1 event (TimeoutError"),
        (
            ConnectionRefusedError("[Errno 111] Connection refused"),
            "The broker refused 1 event (ConnectionRefusedError",
        ),
    ],
)
def test_the_sender_says_whether_the_broker_timed_out_or_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception, said: str
) -> None:
    def send(batch: list[str]) -> None:
        raise error

    sender = Sender(send, spool=Spool(str(tmp_path / "s.sqlite3")), max_batch=3, retry_interval=60)
    with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
        sender.submit(["m"])
        assert sender.flush(5)
    assert any(r.getMessage().startswith(said) for r in caplog.records), [r.getMessage() for r in caplog.records]
