"""A partition between the web process and RabbitMQ (a proxy drops bytes, then resets): none lost.

Without publisher confirms a publish "succeeds" once it is in the socket, so the batches written
into the partition vanish without an error (issue 16, item 2).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from flask_eventlib import signals
from flask_eventlib.publishing import Sender
from flask_eventlib.spool import Spool
from flask_eventlib.tasks import create_celery, make_send
from tests.chaos.proxy import TCPProxy
from tests.conftest import AMQP_URL, wait_for

EVENTS = 200
BATCH = 5
PARTITION = 1.5  # seconds of blackhole before the reset
TIMEOUT = 0.5  # EVENTLIB_PUBLISH_TIMEOUT


@pytest.fixture
def rabbitmq() -> Iterator[Connection]:
    """A connection straight to RabbitMQ (not through the proxy), to look at the queue."""
    conn = Connection(AMQP_URL)
    try:
        conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"No RabbitMQ at {AMQP_URL} ({exc}); ./dev.sh test starts it, or set EVENTLIB_TEST_AMQP_URL.")
    yield conn
    conn.release()


def take_event_ids(conn: Connection, queue: str) -> list[str]:
    """Remove every message from ``queue``; return the ids of the events they carry, in order."""
    channel = conn.default_channel
    _name, count, _consumers = channel.queue_declare(queue, passive=True)
    ids: list[str] = []
    for _ in range(count):
        message = channel.basic_get(queue, no_ack=True)
        if message is None:
            break
        args, _kwargs, _embed = json.loads(message.body)
        ids.extend(json.loads(event)["id"] for event in args[0])
    return ids


def test_a_partition_from_rabbitmq_loses_no_event(
    rabbitmq: Connection, tmp_path: Path, chaos_report: list[str]
) -> None:
    queue = f"eventlib-chaos-partition-{uuid.uuid4().hex[:8]}"
    ids = [f"{queue}-{n}" for n in range(EVENTS)]
    batches = [[json.dumps({"id": i}) for i in ids[n : n + BATCH]] for n in range(0, EVENTS, BATCH)]
    spooled: list[int] = []

    def on_spooled(sender: Any, count: int, reason: str) -> None:
        spooled.append(count)

    signals.events_spooled.connect(on_spooled)
    with TCPProxy((rabbitmq.hostname or "127.0.0.1", rabbitmq.port or 5672)) as proxy:
        try:
            broker_url = rabbitmq.clone(hostname="127.0.0.1", port=proxy.port).as_uri(include_password=True)
            celery = create_celery("partition", broker_url=broker_url, queue=queue, settings={})
            spool = Spool(str(tmp_path / "spool.sqlite3"))
            # The sender's thread outlives the test (it has no stop); it idles on an empty queue.
            sender = Sender(make_send(celery, queue, timeout=TIMEOUT), spool=spool, max_batch=BATCH, retry_interval=0.2)

            # A quarter before the partition, half during it, a quarter after it.
            before, during, after = batches[:10], batches[10:30], batches[30:]
            for batch in before:
                sender.submit(batch)
                assert sender.flush(10)
            proxy.blackhole()
            started = time.monotonic()
            for n, batch in enumerate(during):
                # Paces the load over the partition, as requests keep coming; no wait for work.
                time.sleep(max(0.0, started + n * PARTITION / len(during) - time.monotonic()))
                sender.submit(batch)
            time.sleep(max(0.0, started + PARTITION - time.monotonic()))
            proxy.reset()
            for batch in after:
                sender.submit(batch)
            wait_for(lambda: sender.pending() == 0, timeout=15, what="the sender to publish and drain the spool")
            assert proxy.dropped_bytes > 0, "the partition dropped nothing: was the proxy in the way?"

            # What the broker holds: poll, since unconfirmed publishes can still be on their way.
            seen: list[str] = []
            deadline = time.monotonic() + 3.0
            while set(ids) - set(seen) and time.monotonic() < deadline:
                seen += take_event_ids(rabbitmq, queue)
        finally:
            signals.events_spooled.disconnect(on_spooled)
            rabbitmq.default_channel.queue_delete(queue)
    lost = set(ids) - set(seen)
    chaos_report.append(
        f"RabbitMQ partition ({EVENTS} events in batches of {BATCH}, {PARTITION} s blackhole then RST, "
        f"publish timeout {TIMEOUT} s): lost {len(lost)}, duplicated {len(seen) - len(set(seen))}, "
        f"spooled {sum(spooled)}, connections through the proxy {proxy.accepted}"
    )
    assert not lost, f"{len(lost)} of {EVENTS} events lost in the partition, e.g. {sorted(lost)[:3]}"
    assert sum(spooled) > 0, "nothing was spooled: the partition went unnoticed"
