"""Events for other services: the worker publishes to Redis Streams, consumer processes read them.

Real Redis and real ``python -m flask_eventlib.consume`` processes; the handlers of
``tests/stream_handlers.py`` count every run in Redis.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_eventlib import ConfigurationError, EventLib, envelope, external_handler, log
from flask_eventlib.consume import Consumer, registry_for, start_id
from flask_eventlib.runner import Runner
from flask_eventlib.serialization import default_codec
from flask_eventlib.store import MemoryStore
from flask_eventlib.streams import NODE_ENTRIES, STEP, StreamPublisher, seq_key
from tests.conftest import REDIS_URL, ROOT, Records, start_worker, stop_process, wait_for, wait_worker_ready
from tests.markdown import blocks
from tests.sample import create_app

HANDLERS = "tests.stream_handlers"
DEAD_REDIS = "redis://127.0.0.1:1/0"


@dataclasses.dataclass
class Streams:
    """One test's stream, its keys, and the consumer processes it started."""

    client: redis.Redis
    stream: str
    key: str
    folder: Path
    processes: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    event_ids: list[str] = dataclasses.field(default_factory=list)

    def publisher(self, **options: Any) -> StreamPublisher:
        return StreamPublisher(REDIS_URL, {self.stream: ["deals.*"]}, **options)

    def publish(
        self, count: int, *, name: str = "deals.DealClick", maxlen: int = 1_000_000, check: Any = None
    ) -> list[str]:
        """Publish ``count`` events as the worker does, 100 a round trip; return their ids."""
        publisher = self.publisher(maxlen=maxlen)
        ids: list[str] = []
        for start in range(0, count, 100):
            items = []
            for n in range(start, min(count, start + 100)):
                event_id = str(uuid.uuid4())
                message = envelope.encode(
                    envelope.Envelope(event_id, name, {"deal_id": n}, {}, dt.datetime.now(dt.UTC)), default_codec
                )
                items.append((message, event_id, name))
                ids.append(event_id)
            publisher.publish(items)
            if check is not None:
                check()
        publisher.close()
        self.event_ids += ids
        return ids

    def consumer(self, group: str, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``python -m flask_eventlib.consume`` as consumer ``name`` of ``group``."""
        command = [sys.executable, "-m", "flask_eventlib.consume", self.stream, "--group", group]
        command += ["--consumer", name, "-m", HANDLERS, "--url", REDIS_URL, "--block", "0.2", *args]
        environment = {**os.environ, "STREAM_TEST_KEY": f"{self.key}:{group}", "EVENTLIB_TEST_REDIS_URL": REDIS_URL}
        with (self.folder / f"{group}-{name}.log").open("wb") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**environment, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def wait_ready(self, group: str, *names: str) -> None:
        """Wait until each consumer made its first read (Redis then lists it in the group)."""

        def ready() -> bool:
            for process in self.processes:
                if process.poll() not in (None, 0):
                    pytest.fail(f"A consumer exited with {process.returncode}:\n{self.logs()}")
            try:
                found = {c["name"].decode() for c in self.client.xinfo_consumers(self.stream, group)}
            except redis.ResponseError:
                return False
            return set(names) <= found

        wait_for(ready, timeout=30, what=f"consumers {names} of {group}")

    def runs(self, group: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(f"{self.key}:{group}:runs").items()}

    def by_process(self, group: str) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.client.hgetall(f"{self.key}:{group}:by").items()}

    def pending(self, group: str) -> int:
        return int(self.client.xpending(self.stream, group)["pending"])

    def group_state(self, group: str) -> dict[str, int]:
        found = self.client.hgetall(f"eventlib:consumer:{self.stream}:{group}:group")
        return {k.decode(): int(v) for k, v in found.items()}

    def log(self, group: str, name: str) -> str:
        return (self.folder / f"{group}-{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.folder.glob("*.log"))

    def terminate(self, process: subprocess.Popen[bytes], timeout: float = 15) -> int:
        os.killpg(process.pid, signal.SIGTERM)
        return process.wait(timeout=timeout)


@pytest.fixture
def streams(redis_client: redis.Redis, tmp_path: Path) -> Iterator[Streams]:
    run = uuid.uuid4().hex[:10]
    found = Streams(redis_client, f"eventlib-test-stream-{run}", f"eventlib-test:stream:{run}", tmp_path)
    yield found
    for process in found.processes:
        stop_process(process)
    for pattern in (f"*{found.stream}*", f"{found.key}*"):
        keys = list(redis_client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            redis_client.delete(*keys[start : start + 500])
    for start in range(0, len(found.event_ids), 500):
        redis_client.delete(*(f"eventlib:streamed:{i}" for i in found.event_ids[start : start + 500]))


def entries(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(stream)]


# -- publishing -------------------------------------------------------------------------------------


def streaming_app(streams: Streams, records: Records, **config: Any) -> Flask:
    return create_app(
        EVENTLIB_ALWAYS_EAGER=True,
        EVENTLIB_BROKER_URL="memory://",
        EVENTLIB_RETRIES=0,
        EVENTLIB_STREAMS={streams.stream: ["deals.*", "web.PageView"]},
        EVENTLIB_STREAMS_URL=REDIS_URL,
        SAMPLE_RECORD_KEY=records.key,
        **config,
    )


def test_matching_events_go_to_the_stream_with_their_name_and_the_envelope_as_it_travelled(
    streams: Streams, records: Records
) -> None:
    app = streaming_app(streams, records)
    with app.app_context():
        purchase = log("deals.Purchase", {"deal_id": 7, "amount": "19.90"})
        view = log("web.PageView", {"page": "/deals/7"})
        log("web.Search", {"query": "pizza"})  # not routed
    streams.event_ids += [purchase, view]
    found = entries(streams.client, streams.stream)
    assert [(e["name"], e["id"], e["seq"]) for e in found] == [
        ("deals.Purchase", purchase, "1"),
        ("web.PageView", view, "2"),
    ]
    assert list(found[0]) == ["name", "id", "seq", "envelope"]
    # The envelope is the tagged JSON the workers get: a Decimal stays a Decimal.
    document = json.loads(found[0]["envelope"])
    assert document["v"] == 1 and document["id"] == purchase and document["name"] == "deals.Purchase"
    decoded = envelope.decode(found[0]["envelope"], default_codec)
    assert decoded.data == {"deal_id": 7, "amount": Decimal("19.90"), "coupon": None}
    # The handlers ran as before.
    assert records.handlers_for(purchase) == ["Purchase.store", "handlers.audit"]


def test_each_event_goes_once_however_often_it_is_delivered_and_a_message_costs_one_round_trip(
    streams: Streams, records: Records
) -> None:
    app = streaming_app(streams, records)
    state = app.extensions["eventlib"]
    runner: Runner = state.runner
    assert runner.streams is not None
    with app.app_context():
        messages = [
            envelope.encode(envelope.Envelope(str(uuid.uuid4()), "deals.DealClick", {"deal_id": n}, {}), state.codec)
            for n in range(10)
        ]
        streams.event_ids += [json.loads(m)["id"] for m in messages]
        publisher = runner.streams
        sent: list[bytes] = []
        take = publisher._take

        def counted() -> tuple[Any, bool]:
            conn, kept = take()
            send = conn.send_packed_command
            conn.send_packed_command = lambda commands, **kw: sent.extend(commands) or send(commands, **kw)
            return conn, kept

        publisher._take = counted  # type: ignore[method-assign]
        try:
            runner.process(messages)
        finally:
            publisher._take = take  # type: ignore[method-assign]
        taken = [command for command in sent if b"EVALSHA" in command]
        assert len(taken) == 1  # one script for the message's ten events
        runner.process(messages)  # a redelivery
        runner.process(messages[:3] + [messages[3]] * 2)  # a partial duplicate, an event twice in a message
        assert runner.process_retry(messages[0], STEP, 2, time.time()) is not None  # a retry of the step
    assert [e["id"] for e in entries(streams.client, streams.stream)] == [json.loads(m)["id"] for m in messages]
    assert streams.client.get(seq_key(streams.stream)) == b"10"


def test_retention_bounds_the_stream_by_length_and_by_age(streams: Streams) -> None:
    streams.publish(1000, maxlen=300)
    assert 300 <= streams.client.xlen(streams.stream) <= 300 + NODE_ENTRIES
    aged = streams.publisher(max_age=0.05)
    time.sleep(0.1)  # the age the next publish trims by
    event_id = str(uuid.uuid4())
    streams.event_ids.append(event_id)
    aged.publish([(json.dumps({"v": 1}), event_id, "deals.DealClick")])
    assert streams.client.xlen(streams.stream) <= NODE_ENTRIES


def test_a_publish_that_fails_is_retried_like_a_handler_and_dead_lettered_last(
    streams: Streams, records: Records
) -> None:
    app = create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", SAMPLE_RECORD_KEY=records.key)
    state = app.extensions["eventlib"]
    store = MemoryStore()
    retries: list[tuple[str, str, int]] = []
    down = Runner(
        state.registry,
        state.codec,
        store=store,
        schedule_retry=lambda message, handler, attempt, first, delay: retries.append((message, handler, attempt)),
        retries=1,
        streams=StreamPublisher(DEAD_REDIS, {streams.stream: ["deals.*"]}, timeout=0.5),
    )
    event_id = str(uuid.uuid4())
    streams.event_ids.append(event_id)
    message = envelope.encode(envelope.Envelope(event_id, "deals.DealClick", {"deal_id": 1}, {}), state.codec)
    with app.app_context():
        results = down.process([message])
        # The handlers ran; the step failed once and is retried alone.
        assert records.handlers_for(event_id) == [
            "DealClick.first",
            "DealClick.second",
            "handlers.on_click",
            "handlers.audit",
        ]
        assert [(r.handler, r.retry_in is not None) for r in results if not r.ok] == [(STEP, True)]
        assert retries == [(message, STEP, 2)]
        # The retry fails too: its last attempt, a dead letter.
        down.process_retry(message, STEP, 2, time.time())
        (letter,) = store.dead_letters()
        assert (letter.handler, letter.event_id, letter.attempts) == (STEP, event_id, 2)
        # Replayed once Redis is back: published, and only the step ran.
        up = dataclasses.replace(down, streams=streams.publisher(), schedule_retry=None)
        up.replay(letter)
    assert [e["id"] for e in entries(streams.client, streams.stream)] == [event_id]
    assert len(records.for_id(event_id)) == 4


def test_settings_are_checked_and_the_streams_need_a_redis(records: Records, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(
        ConfigurationError, match=r"EVENTLIB_STREAMS\['s'\] names 'deals', which is not an event target"
    ):
        create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", EVENTLIB_STREAMS={"s": ["deals"]})
    with pytest.raises(ConfigurationError, match=r"EVENTLIB_STREAMS\['s'\] must be a list of strings"):
        create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", EVENTLIB_STREAMS={"s": "deals.*"})
    with pytest.raises(ConfigurationError, match="EVENTLIB_STREAMS needs a Redis .* set EVENTLIB_STREAMS_URL"):
        create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", EVENTLIB_STREAMS={"s": ["deals.*"]})
    with pytest.raises(ConfigurationError, match="EVENTLIB_STREAMS_MAX_AGE must be a number greater than 0"):
        EventLib(Flask("aged"), always_eager=True, broker_url="memory://", streams_max_age=0)
    with caplog.at_level(logging.WARNING, "flask_eventlib"):
        app = create_app(
            EVENTLIB_BROKER_URL=REDIS_URL,
            EVENTLIB_STREAMS={"s": ["deals.*", "deals.Nope"]},
            SAMPLE_RECORD_KEY=records.key,
        )
    assert "EVENTLIB_STREAMS['s'] names 'deals.Nope', which matches none of the events" in caplog.text
    publisher = app.extensions["eventlib"].runner.streams
    assert publisher is not None and publisher.url == REDIS_URL  # the broker's Redis by default


# -- consuming: in this process ---------------------------------------------------------------------


def test_from_an_id_or_a_time_starts_a_new_group_there(streams: Streams) -> None:
    streams.publish(10)
    stamps = [entry_id.decode() for entry_id, _ in streams.client.xrange(streams.stream)]
    ms = int(stamps[4].split("-")[0])
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
    expected_by_time = {i for i, s in zip(streams.event_ids, stamps, strict=True) if int(s.split("-")[0]) >= ms}
    for group, start, expected in [
        ("by-id", start_id(stamps[4]), set(streams.event_ids[4:])),
        ("by-time", start_id(when), expected_by_time),
        ("beginning", start_id("beginning"), set(streams.event_ids)),
        ("new", start_id("new"), set()),
    ]:
        os.environ["STREAM_TEST_KEY"] = f"{streams.key}:{group}"
        consumer = Consumer(streams.stream, group, registry_for([HANDLERS]), url=REDIS_URL, start=start, block=0.05)
        consumer.run(until_idle=True)
        consumer.close()
        assert set(streams.runs(group)) == expected, group
        assert streams.group_state(group).get("missed", 0) == 0
    del os.environ["STREAM_TEST_KEY"]
    with pytest.raises(ValueError, match="--from 'yesterday': use 'new', 'beginning', a stream id"):
        start_id("yesterday")


def test_a_consumer_skips_events_without_handlers_and_retries_dead_letters_and_dedups_its_own(
    streams: Streams, redis_client: redis.Redis
) -> None:
    os.environ["STREAM_TEST_KEY"] = f"{streams.key}:g"
    try:
        publisher = StreamPublisher(REDIS_URL, {streams.stream: ["*"]}, dedup_ttl=0)
        clicked, flaky, other = (str(uuid.uuid4()) for _ in range(3))
        streams.event_ids += [clicked, flaky, other]

        def message(event_id: str, name: str) -> str:
            return envelope.encode(envelope.Envelope(event_id, name, {"n": 1}, {}), default_codec)

        publisher.publish(
            [
                (message(clicked, "deals.DealClick"), clicked, "deals.DealClick"),
                (message(flaky, "deals.Flaky"), flaky, "deals.Flaky"),
                ("not an envelope", other, "users.Signup"),  # no handler: never decoded
            ]
        )
        # Without dedup on the publishing side, a redelivery adds the entry again: the group's dedup runs it once.
        publisher.publish([(message(clicked, "deals.DealClick"), clicked, "deals.DealClick")])
        consumer = Consumer(
            streams.stream, "g", registry_for([HANDLERS]), url=REDIS_URL, start="0", block=0.05, retries=1, backoff=0.05
        )
        consumer.run(until_idle=True)
        assert (consumer.handled, consumer.skipped) == (3, 1)
        assert consumer.pending_retries() == 1  # deals.Flaky's always_fails, in the group's sorted set
        wait_for(lambda: consumer._run_retries() and not consumer.pending_retries(), timeout=10, what="the retry")
        (letter,) = consumer.store.dead_letters()
        assert (letter.handler, letter.event_id, letter.attempts) == ("tests.stream_handlers.always_fails", flaky, 2)
        assert streams.runs("g") == {clicked: 1, flaky: 1}  # record ran once each; always_fails is the dead one
        assert streams.pending("g") == 0
        consumer.close()
    finally:
        del os.environ["STREAM_TEST_KEY"]
    assert redis_client.exists(f"eventlib:consumer:{streams.stream}:g:dead")


# -- consuming: real consumer processes -------------------------------------------------------------


def test_two_groups_each_get_all_10000_events_and_two_consumers_of_one_group_share_them(streams: Streams) -> None:
    consumers = {
        ("indexer", "one"): streams.consumer("indexer", "one", "--from", "beginning"),
        ("indexer", "two"): streams.consumer("indexer", "two", "--from", "beginning"),
        ("audit", "one"): streams.consumer("audit", "one", "--from", "beginning"),
    }
    streams.wait_ready("indexer", "one", "two")
    streams.wait_ready("audit", "one")
    ids = streams.publish(10_000)
    for group in ("indexer", "audit"):
        wait_for(lambda g=group: len(streams.runs(g)) == 10_000, timeout=60, what=f"{group} to run 10000 events")
        wait_for(lambda g=group: streams.pending(g) == 0, timeout=10, what=f"{group} to acknowledge every entry")
        runs = streams.runs(group)
        assert set(runs) == set(ids)
        assert set(runs.values()) == {1}, f"{group}: handled twice: {[i for i, n in runs.items() if n > 1][:5]}"
    shares = streams.by_process("indexer")
    assert len(shares) == 2 and sum(shares.values()) == 10_000 and min(shares.values()) > 0, shares
    assert sum(streams.by_process("audit").values()) == 10_000
    for (group, name), process in consumers.items():
        assert streams.terminate(process) == 0, streams.log(group, name)
        assert re.search(r"stopped on SIGTERM: \d+ entries handled", streams.log(group, name))


def test_a_consumer_killed_mid_stream_loses_nothing_and_the_one_that_takes_over_runs_only_what_was_in_flight(
    streams: Streams,
) -> None:
    ids = streams.publish(2000)
    options = ["--from", "beginning", "--batch", "50", "--claim-idle", "1", "--claim-ttl", "2"]
    # The first consumer SIGKILLs itself right after its 275th handler run: the 25th event of its
    # sixth batch was handled, its dedup mark not yet written; 24 were handled and marked, 25 not run.
    doomed = streams.consumer("g", "doomed", *options, STREAM_TEST_SLEEP="0.001", STREAM_TEST_KILL_AT="275")
    streams.wait_ready("g", "doomed")
    heir = streams.consumer("g", "heir", *options, STREAM_TEST_SLEEP="0.001")
    assert doomed.wait(timeout=60) == -signal.SIGKILL
    wait_for(lambda: len(streams.runs("g")) == 2000, timeout=60, what="every event to be handled")
    wait_for(lambda: streams.pending("g") == 0, timeout=10, what="every entry to be acknowledged")
    runs = streams.runs("g")
    assert set(runs) == set(ids)  # 0 lost
    assert sum(runs.values()) - len(runs) == 1, {i: n for i, n in runs.items() if n > 1}  # only the one in flight
    assert streams.by_process("g")[doomed.pid] == 275
    log = streams.log("g", "heir")
    assert "took over 50 entries other consumers left pending for over 1s" in log, log[-3000:]
    assert streams.terminate(heir) == 0


def test_retention_holds_while_a_slow_consumer_lags_and_what_it_missed_is_counted_and_logged(
    streams: Streams,
) -> None:
    slow = streams.consumer("slow", "one", "--from", "beginning", "--batch", "20", STREAM_TEST_SLEEP="0.002")
    streams.wait_ready("slow", "one")
    lengths: list[int] = []
    ids = streams.publish(5000, maxlen=1000, check=lambda: lengths.append(streams.client.xlen(streams.stream)))
    assert max(lengths) <= 1000 + NODE_ENTRIES, lengths
    wait_for(
        lambda: len(streams.runs("slow")) + streams.group_state("slow").get("missed", 0) == 5000,
        timeout=60,
        what="the slow consumer to reach the end",
    )
    runs, missed = streams.runs("slow"), streams.group_state("slow")["missed"]
    assert missed > 0 and set(runs.values()) == {1} and set(runs) <= set(ids)
    assert streams.terminate(slow) == 0
    log = streams.log("slow", "one")
    counted = [int(n) for n in re.findall(r"(\d+) entries were trimmed by the stream's retention", log)]
    assert sum(counted) == missed, log[-3000:]
    assert f"({missed} missed by the group in all)" in log


def test_a_group_started_later_from_the_beginning_sees_every_event_still_retained(streams: Streams) -> None:
    streams.publish(1500, maxlen=1000)
    retained = [e["id"] for e in entries(streams.client, streams.stream)]
    assert 1000 <= len(retained) < 1500
    late = streams.consumer("late", "one", "--from", "beginning", "--until-idle")
    assert late.wait(timeout=30) == 0, streams.log("late", "one")
    assert sorted(streams.runs("late")) == sorted(retained)
    assert streams.group_state("late").get("missed", 0) == 0  # trimmed before the group existed: not its loss


def test_sigterm_stops_a_consumer_after_the_entries_in_hand_acknowledged(streams: Streams) -> None:
    ids = streams.publish(100)
    first = streams.consumer("g", "first", "--from", "beginning", "--batch", "20", STREAM_TEST_SLEEP="0.05")
    wait_for(lambda: len(streams.runs("g")) >= 3, timeout=30, what="the first handler runs")
    assert streams.terminate(first) == 0
    handled = len(streams.runs("g"))
    assert handled % 20 == 0 and handled < 100 and streams.pending("g") == 0
    second = streams.consumer("g", "second", "--until-idle")
    assert second.wait(timeout=30) == 0
    runs = streams.runs("g")
    assert set(runs) == set(ids) and set(runs.values()) == {1}


@pytest.mark.worker
def test_a_celery_worker_publishes_and_flask_eventlib_consume_reads(
    streams: Streams, redis_client: redis.Redis, tmp_path: Path
) -> None:
    queue = f"eventlib-test-streams-{uuid.uuid4().hex[:8]}"
    record_key = f"eventlib-test:records:{queue}"
    settings = {"EVENTLIB_STREAMS": {streams.stream: ["deals.*"]}, "EVENTLIB_STREAMS_URL": REDIS_URL}
    env = {"SAMPLE_CONFIG": json.dumps(settings), "SAMPLE_STORE_URL": f"{REDIS_URL}?prefix={record_key}:store:"}
    worker = start_worker(REDIS_URL, queue, record_key, tmp_path / "worker.log", env=env)
    try:
        wait_worker_ready(worker, tmp_path / "worker.log")
        app = create_app(EVENTLIB_BROKER_URL=REDIS_URL, EVENTLIB_QUEUE=queue, SAMPLE_RECORD_KEY=record_key)
        with app.app_context():
            ids = [log("deals.DealClick", {"deal_id": n}) for n in range(20)]
            log("users.SignedUp", {"email": "a@example.com", "plan": "free"})  # not routed
            app.extensions["eventlib"].flush()
        streams.event_ids += ids
        wait_for(lambda: redis_client.xlen(streams.stream) == 20, timeout=30, what="the worker to publish 20 events")
        command = [sys.executable, "-m", "flask", "--app", "tests.sample.worker", "eventlib", "consume", streams.stream]
        command += ["--group", "g", "-m", HANDLERS, "--from", "beginning", "--until-idle"]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env={
                **os.environ,
                **env,
                "SAMPLE_BROKER_URL": REDIS_URL,
                "SAMPLE_QUEUE": queue,
                "SAMPLE_RECORD_KEY": record_key,
                "STREAM_TEST_KEY": f"{streams.key}:g",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(streams.runs("g")) == sorted(ids)
        assert "Consumer " in done.stderr and "stopped: 20 entries handled" in done.stderr
    finally:
        stop_process(worker)
        for key in redis_client.scan_iter(f"{record_key}*"):
            redis_client.delete(key)
        redis_client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def test_the_docs_shell_consumer_reads_the_wire_format_with_redis_cli_alone(streams: Streams) -> None:
    (script,) = [
        code for lang, code in blocks((ROOT / "docs" / "streams.md").read_text()) if lang == "bash" and "XACK" in code
    ]
    ids = streams.publish(25)
    assert shutil.which("redis-cli"), "redis-cli is needed (Debian: apt-get install redis-tools)"
    # The page's redis-cli talks to the default server; the test's may be another.
    prelude = 'redis-cli() { command redis-cli -u "$TEST_REDIS_URL" "$@"; }\n'
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", prelude + script],
        env={**os.environ, "TEST_REDIS_URL": REDIS_URL, "STREAM": streams.stream, "GROUP": "shell"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines == [[str(seq), "deals.DealClick", event_id] for seq, event_id in enumerate(ids, 1)]
    assert streams.pending("shell") == 0


def test_an_xadd_that_fails_takes_the_events_mark_back_so_its_retry_publishes_it(
    streams: Streams, records: Records
) -> None:
    app = streaming_app(streams, records)
    runner: Runner = app.extensions["eventlib"].runner
    retries: list[str] = []
    runner = dataclasses.replace(runner, retries=1, schedule_retry=lambda message, handler, *_: retries.append(handler))
    streams.client.set(streams.stream, "not a stream")
    event_id = str(uuid.uuid4())
    streams.event_ids.append(event_id)
    message = envelope.encode(envelope.Envelope(event_id, "deals.DealClick", {"deal_id": 1}, {}), default_codec)
    with app.app_context():
        (failed,) = [result for result in runner.process([message]) if not result.ok]
        assert "WRONGTYPE" in str(failed.error) and retries == [STEP]
        assert not streams.client.exists(f"eventlib:streamed:{event_id}")
        streams.client.delete(streams.stream)
        assert runner.process_retry(message, STEP, 2, time.time()).ok  # type: ignore[union-attr]
    assert [e["id"] for e in entries(streams.client, streams.stream)] == [event_id]


def test_external_handlers_are_the_consumers_and_handlers_the_apps_even_in_one_module(
    tmp_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_package / "both.py").write_text(
        "from flask_eventlib import external_handler, handler\n\n"
        "@handler('deals.DealClick')\ndef in_the_worker(event): ...\n\n"
        "@external_handler('deals.*', retries=7)\ndef in_the_consumer(event): ...\n"
    )
    app = create_app(EVENTLIB_ALWAYS_EAGER=True, EVENTLIB_BROKER_URL="memory://", EVENTLIB_HANDLER_MODULES=["both"])
    labels = app.extensions["eventlib"].registry.handler_labels("deals.DealClick")
    assert "both.in_the_worker" in labels and "both.in_the_consumer" not in labels
    registry = registry_for(["both"])
    assert registry.targets() == {"deals.*": [sys.modules["both"].in_the_consumer]}
    assert registry.handles("deals.Purchase") and not registry.handles("users.SignedUp")
    with pytest.raises(ConfigurationError, match="No @external_handler functions in tests.sample.handlers"):
        registry_for(["tests.sample.handlers"])
    with pytest.raises(ConfigurationError, match=r"@external_handler\('deals'\): a target is 'app.EventName'"):
        external_handler("deals")


def test_a_consumer_restarted_under_its_name_first_runs_what_it_left_pending(streams: Streams) -> None:
    ids = streams.publish(30)
    streams.client.xgroup_create(streams.stream, "g", id="0")
    # A run of "pod-1" that read 20 entries and died before acknowledging them, then 5 trimmed.
    streams.client.xreadgroup("g", "pod-1", {streams.stream: ">"}, count=20)
    first = [entry_id for entry_id, _ in streams.client.xrange(streams.stream, count=5)]
    streams.client.xdel(streams.stream, *first)
    os.environ["STREAM_TEST_KEY"] = f"{streams.key}:g"
    try:
        consumer = Consumer(streams.stream, "g", registry_for([HANDLERS]), url=REDIS_URL, name="pod-1", block=0.05)
        consumer.run(until_idle=True)
        consumer.close()
    finally:
        del os.environ["STREAM_TEST_KEY"]
    assert (consumer.taken_over, consumer.missed, consumer.handled) == (20, 5, 25)
    assert set(streams.runs("g")) == set(ids[5:]) and streams.pending("g") == 0
    assert streams.group_state("g")["missed"] == 5
