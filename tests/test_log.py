"""log() in the caller: validation, serialization errors, eager mode, and the extension's set-up."""

from __future__ import annotations

import copy
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from flask import Flask

from flask_eventlib import (
    BaseEvent,
    Codec,
    ConfigurationError,
    EventLib,
    EventNotFound,
    SerializationError,
    ValidationError,
    flush,
    log,
    signals,
)
from flask_eventlib.serialization import register_builtins
from flask_eventlib.tasks import TASK_NAME
from tests.conftest import REDIS_URL, Records
from tests.sample import create_app


def test_log_returns_the_event_id_and_runs_handlers_in_eager_mode(eager_app: Flask, records: Records) -> None:
    with eager_app.app_context():
        event_id = log("deals.DealClick", {"deal_id": 3})
    assert isinstance(event_id, str) and uuid.UUID(event_id)
    assert records.handlers_for(event_id) == [
        "DealClick.first",
        "DealClick.second",
        "handlers.on_click",
        "handlers.audit",
    ]
    assert all(entry["pid"] == os.getpid() for entry in records.for_id(event_id))


def test_log_never_changes_the_callers_data(eager_app: Flask, records: Records) -> None:
    data: dict[str, Any] = {"word": "hi", "nested": {"k": [1]}}
    with eager_app.app_context():
        event_id = log("deals.Renamed", data)
    assert data == {"word": "hi", "nested": {"k": [1]}}
    assert records.for_id(event_id)[0]["data"] == {"upper": "'HI'"}


def test_clean_changes_in_place_do_not_reach_the_caller() -> None:
    class Mutating(BaseEvent):
        def clean(self) -> None:
            self.data["added"] = True
            self.data["nested"]["inner"] = "changed"

    app = Flask("m")
    EventLib(app, always_eager=True, broker_url="memory://")
    app.extensions["eventlib"].registry.register_event("m", Mutating)
    data: dict[str, Any] = {"nested": {"inner": "original"}}
    with app.app_context():
        log("m.Mutating", data)
    assert data == {"nested": {"inner": "original"}}


class Box:
    """A mutable value of a type registered with the codec."""

    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and other.items == self.items

    def __hash__(self) -> int:
        return 0  # equal boxes must hash alike; the value's contents may change


def _grow(value: Any) -> None:
    """Change whatever mutable part ``value`` has, in place, as a careless clean() would."""
    if isinstance(value, dict):
        value["added"] = True
        for item in value.values():
            _grow(item)
    elif isinstance(value, list):
        value.append("added")
        for item in value[:-1]:
            _grow(item)
    elif isinstance(value, set):
        value.add("added")
    elif isinstance(value, tuple | frozenset):
        for item in value:
            _grow(item)
    elif isinstance(value, Box):
        value.items.append(99)


CONTAINERS = {
    "dict": {"inner": {"k": 1}},
    "list": [[1], {"k": 2}],
    "set": {1, 2},
    "tuple": ([1], {"k": 3}),
    "frozenset": frozenset({Box([1])}),
    "registered type": Box([1, 2]),
    "tuple in a list in a dict": {"deep": [([1],)]},
}


@pytest.mark.parametrize("value", CONTAINERS.values(), ids=CONTAINERS.keys())
def test_clean_works_on_a_deep_copy_of_every_container_type(value: Any) -> None:
    class Careless(BaseEvent):
        def clean(self) -> None:
            _grow(self.data["value"])

    seen: list[Any] = []

    class Probe(BaseEvent):
        def clean(self) -> None:
            seen.append(self.data["value"])

    codec = Codec()
    register_builtins(codec)
    codec.register_type(Box, "box", dump=lambda box: box.items, load=Box)
    app = Flask("copies")
    EventLib(app, always_eager=True, broker_url="memory://", codec=codec)
    app.extensions["eventlib"].registry.register_event("c", Careless)
    app.extensions["eventlib"].registry.register_event("c", Probe)
    data = {"value": value}
    before = copy.deepcopy(data)
    with app.app_context():
        log("c.Careless", data)
        log("c.Probe", data)
    assert data == before  # the caller's value, every level of it, is as it was
    assert seen == [before["value"]] and seen[0] is not value


def test_require_data_keys_names_missing_keys_in_order(eager_app: Flask, records: Records) -> None:
    event = BaseEvent({"deal_id": 1})
    with pytest.raises(ValidationError) as info:
        event.require_data_keys(["deal_id", "user_id", "code"])
    assert str(info.value) == "The following keys are missing: user_id, code"
    with (
        eager_app.app_context(),
        pytest.raises(ValidationError, match="^The following keys are missing: plan$"),
    ):
        log("users.SignedUp", {"email": "a@example.com"})
    assert records.all() == []


def test_schema_loads_the_data_handlers_receive(eager_app: Flask, records: Records) -> None:
    with eager_app.app_context():
        event_id = log("deals.Purchase", {"deal_id": "42", "amount": "1.50"})
    entry = records.for_id(event_id)[0]
    assert entry["data"] == {"deal_id": "42", "amount": "Decimal('1.50')", "coupon": "None"}
    assert entry["types"]["deal_id"] == "int"


def test_schema_errors_become_validation_errors_with_messages(eager_app: Flask, records: Records) -> None:
    with eager_app.app_context(), pytest.raises(ValidationError) as info:
        log("deals.Purchase", {"deal_id": "forty-two"})
    assert info.value.messages == {
        "deal_id": ["Not a valid integer."],
        "amount": ["Missing data for required field."],
    }
    assert "deal_id: Not a valid integer." in str(info.value)
    assert records.all() == []


def test_data_must_be_a_dict(eager_app: Flask) -> None:
    with eager_app.app_context(), pytest.raises(ValidationError, match="must be a dict, not list"):
        log("deals.Typed", [1, 2])  # type: ignore[arg-type]


def test_event_data_is_callable_as_the_spec_writes_it() -> None:
    event = BaseEvent({"key": "value"})
    assert event.data("key") == "value"
    assert event.data("missing") is None
    assert event.data["key"] == "value"


def test_unserializable_data_raises_type_error_naming_key_and_type(eager_app: Flask, records: Records) -> None:
    with eager_app.app_context(), pytest.raises(TypeError) as info:
        log("deals.Typed", {"ok": 1, "when": {"at": object()}})
    assert isinstance(info.value, SerializationError)
    assert "deals.Typed data['when']['at']" in str(info.value)
    assert "builtins.object" in str(info.value)
    assert records.all() == []


def test_unknown_event(eager_app: Flask) -> None:
    with eager_app.app_context(), pytest.raises(EventNotFound) as info:
        log("deals.Nope", {})
    assert str(info.value) == "There is no event named Nope in the deals app"


@pytest.fixture
def redis_app(redis_client: redis.Redis, records: Records) -> Iterator[tuple[Flask, str]]:
    queue = f"eventlib-test-noworker-{uuid.uuid4().hex[:8]}"
    app = create_app(EVENTLIB_BROKER_URL=REDIS_URL, EVENTLIB_QUEUE=queue, SAMPLE_RECORD_KEY=records.key)
    yield app, queue
    redis_client.delete(queue)


def test_nothing_is_enqueued_when_validation_or_encoding_fails(
    redis_app: tuple[Flask, str], redis_client: redis.Redis
) -> None:
    app, queue = redis_app
    with app.app_context():
        with pytest.raises(ValidationError):
            log("deals.DealClick", {})
        with pytest.raises(TypeError):
            log("deals.Typed", {"x": object()})
        with pytest.raises(EventNotFound):
            log("deals.Missing")
        assert flush()
        assert redis_client.llen(queue) == 0
        log("deals.DealClick", {"deal_id": 1})
        assert flush()
    assert redis_client.llen(queue) == 1


def test_eager_handler_errors_are_logged_not_raised(
    eager_app: Flask, records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    with eager_app.app_context(), caplog.at_level(logging.ERROR, logger="flask_eventlib"):
        event_id = log("deals.Flaky", {"n": 1})
    assert records.handlers_for(event_id) == ["Flaky.after", "handlers.flaky_function", "handlers.audit"]
    failures = [r for r in caplog.records if r.name == "flask_eventlib" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        f"Handler tests.sample.deals.events.Flaky.explode failed for event deals.Flaky (id {event_id}),"
        " attempt 1 of 1: dead-lettered",
        f"Handler tests.sample.handlers.flaky_function_fails failed for event deals.Flaky (id {event_id}),"
        " attempt 1 of 1: dead-lettered",
    ]
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], RuntimeError)
    assert failures[0].event_id == event_id  # type: ignore[attr-defined]


def test_eager_propagate_raises_after_every_handler_ran(records: Records) -> None:
    app = create_app(
        EVENTLIB_ALWAYS_EAGER=True,
        EVENTLIB_RETRIES=0,
        EVENTLIB_PROPAGATE_ERRORS=True,
        EVENTLIB_BROKER_URL="memory://",
        SAMPLE_RECORD_KEY=records.key,
    )
    with app.app_context(), pytest.raises(RuntimeError, match="boom for 5"):
        log("deals.Flaky", {"n": 5})
    assert [e["handler"] for e in records.all()] == [
        "Flaky.after",
        "handlers.flaky_function",
        "handlers.audit",
    ]


def test_eager_mode_still_round_trips_through_the_codec(eager_app: Flask) -> None:
    with eager_app.app_context(), pytest.raises(TypeError, match="data\\['bad'\\]"):
        log("deals.Typed", {"bad": {1, object()}})


def test_log_needs_an_app_context_and_the_extension() -> None:
    with pytest.raises(ConfigurationError, match="needs a Flask application context"):
        log("deals.DealClick", {"deal_id": 1})
    app = Flask("bare")
    with (
        app.app_context(),
        pytest.raises(ConfigurationError, match="not initialised on the Flask app 'bare'"),
    ):
        log("deals.DealClick", {"deal_id": 1})


def test_second_init_app_is_an_error() -> None:
    app = create_app(EVENTLIB_BROKER_URL="memory://")
    with pytest.raises(ConfigurationError, match="already initialised on the Flask app 'tests.sample'"):
        EventLib(app)


def test_constructor_overrides_beat_config_and_defaults_are_set() -> None:
    app = Flask("o")
    app.config["EVENTLIB_QUEUE"] = "from-config"
    EventLib(app, queue="from-constructor", broker_url="memory://")
    assert app.config["EVENTLIB_QUEUE"] == "from-constructor"
    assert app.config["EVENTLIB_ALWAYS_EAGER"] is False
    with pytest.raises(TypeError, match="unknown setting 'queues'"):
        EventLib(queues="x")


def test_created_celery_is_json_only_and_consumes_the_events_queue() -> None:
    app = Flask("c")
    ext = EventLib(app, broker_url="memory://")
    celery = ext.celery
    with app.app_context():
        assert ext.celery is celery
    assert celery.conf.accept_content == ["json"]
    assert celery.conf.task_serializer == "json"
    assert [q.name for q in celery.conf.task_queues] == ["eventlib"]
    assert TASK_NAME in celery.tasks


def test_a_celery_app_passed_in_is_used_and_keeps_its_default_queue() -> None:
    celery = Celery("mine", broker="memory://", set_as_current=False)
    app = Flask("p")
    ext = EventLib(app, celery=celery, queue="events")
    assert ext.celery is celery
    assert TASK_NAME in celery.tasks
    assert [q.name for q in celery.conf.task_queues] == ["celery", "events"]
    assert celery.conf.task_routes[TASK_NAME] == {"queue": "events"}


def test_a_celery_app_that_refuses_json_is_refused() -> None:
    celery = Celery("picky", broker="memory://", set_as_current=False)
    celery.conf.accept_content = ["pickle"]
    with pytest.raises(ValueError, match="does not accept JSON"):
        EventLib(Flask("q"), celery=celery)


def test_no_broker_means_the_embedded_filesystem_broker(tmp_path: Any) -> None:
    instance = tmp_path / "instance"
    app = Flask("fs", instance_path=str(instance))
    ext = EventLib(app)
    assert ext.celery.conf.broker_url == "filesystem://"
    assert not instance.exists()  # init_app writes nothing: files are made on first use
    app.extensions["eventlib"].registry.register_event("fs", Plain)
    with app.app_context():
        log("fs.Plain")
        assert flush()
    assert len(list((instance / "eventlib-broker" / "queue").iterdir())) == 1  # the message
    assert not (instance / "eventlib-spool.sqlite3").exists()  # the spool: only while the broker is down


def test_init_app_writes_no_file_even_with_the_sqlite_store(tmp_path: Any) -> None:
    instance = tmp_path / "instance"
    app = Flask("quiet", instance_path=str(instance))
    EventLib(app, broker_url="memory://")
    assert not instance.exists()


class Plain(BaseEvent):
    pass


def test_one_extension_gives_each_app_its_own_celery_app() -> None:
    ext = EventLib()
    first, second = Flask("first"), Flask("second")
    first.config["EVENTLIB_BROKER_URL"] = "memory://"
    second.config["EVENTLIB_BROKER_URL"] = REDIS_URL
    ext.init_app(first)
    ext.init_app(second)
    with first.app_context():
        assert ext.celery.conf.broker_url == "memory://"
    with second.app_context():
        assert ext.celery.conf.broker_url == REDIS_URL
    assert ext.celery is second.extensions["eventlib"].celery  # outside a context: the last one set up


def test_data_nested_too_deeply_is_refused_clearly(eager_app: Flask, records: Records) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    with eager_app.app_context(), pytest.raises(ValidationError, match="nested too deeply"):
        log("deals.Typed", {"deep": deep})
    assert records.all() == []


def test_event_ids_are_unique_version_4_uuids_across_threads_and_forks(tmp_path: Any) -> None:
    import threading

    from flask_eventlib.dispatch import new_event_id

    found: list[str] = []

    def draw() -> None:
        found.extend(new_event_id() for _ in range(5000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 20000
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 for i in found[:1000])
    new_event_id()  # the parent has a pool in use: a forked child must not continue it
    out = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        out.write_text(",".join(new_event_id() for _ in range(300)))
        os._exit(0)
    os.waitpid(pid, 0)
    parent = {new_event_id() for _ in range(300)}
    assert not parent & set(out.read_text().split(","))


EDGES = {
    "an int of 5,000 digits": ({"n": 10**5000}, r"deals.Typed data\['n'\]: the int has more than 4300 digits"),
    "a lone surrogate in a value": (
        {"s": ["ok", "bad\ud800"]},
        r"the deals.Typed envelope\['data'\]\['s'\]\[1\]: the string holds a lone surrogate",
    ),
    "a lone surrogate in a key": (
        {"k\udc00": 1},
        r"envelope\['data'\]\['k\\udc00'\]: the string holds a lone surrogate",
    ),
}


@pytest.mark.parametrize(("data", "message"), EDGES.values(), ids=EDGES.keys())
def test_the_codecs_edges_keep_the_error_contract(
    eager_app: Flask, records: Records, data: dict[str, Any], message: str
) -> None:
    rejected: list[BaseException] = []

    def on_rejected(sender: Flask, name: str, error: BaseException) -> None:
        rejected.append(error)

    with signals.event_rejected.connected_to(on_rejected, sender=eager_app), eager_app.app_context():
        with pytest.raises(SerializationError, match=message) as info:
            log("deals.Typed", data)
    assert isinstance(info.value, TypeError) and rejected == [info.value]
    assert records.all() == []  # nothing was sent


def test_two_flask_apps_cannot_share_one_celery_app() -> None:
    celery = Celery("shared", broker="memory://", set_as_current=False)
    first = Flask("first")
    EventLib(first, celery=celery)
    second = Flask("second")
    with pytest.raises(ConfigurationError, match="already runs the events of the Flask app 'first'; 'second' needs"):
        EventLib(second, celery=celery)
    assert "eventlib" not in second.extensions  # nothing half set up
    # The first app's tasks still run the first app's handlers.
    state = first.extensions["eventlib"]
    state.registry.register_event("first", Plain)
    ran: list[str] = []
    state.registry.add_function_handler("first.Plain", lambda event: ran.append(event.id))
    with first.app_context():
        event = state.dispatcher.build("first.Plain")
        celery.tasks[TASK_NAME].apply(args=([state.dispatcher.encode(event)],))
    assert ran == [event.id]
