"""Settings never fail silently: unknown keys, wrong types and bad URLs are errors at ``init_app``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_eventlib import ConfigurationError, EventLib, config


def init(tmp_path: Path, **settings: Any) -> Flask:
    app = Flask("shop", instance_path=str(tmp_path))
    app.config.update(settings)
    EventLib(app)
    return app


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("EVENTLIB_BROKER", "EVENTLIB_BROKER_URL"), ("EVENTLIB_ALWAYS_EGAER", "EVENTLIB_ALWAYS_EAGER")],
)
def test_an_unknown_key_is_an_error_that_suggests_the_nearest_setting(
    tmp_path: Path, key: str, suggestion: str
) -> None:
    app = Flask("shop", instance_path=str(tmp_path))
    app.config[key] = "anything"
    with pytest.raises(ConfigurationError, match=f"{key} \\(did you mean {suggestion}\\?\\)"):
        EventLib(app)
    assert "eventlib" not in app.extensions  # nothing half set up


def test_an_unknown_key_far_from_every_setting_is_an_error_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown flask-eventlib setting in app.config: EVENTLIB_ZZZ\."):
        init(tmp_path, EVENTLIB_ZZZ=1)


def test_a_misspelled_constructor_argument_suggests_the_setting() -> None:
    with pytest.raises(TypeError, match="unknown setting 'alway_eager'; did you mean 'always_eager'"):
        EventLib(alway_eager=True)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            config.HANDLER_MODULES,
            "shop.receipts",
            "EVENTLIB_HANDLER_MODULES must be a list of strings, e.g. ['shop.receipts'], not the str 'shop.receipts'",
        ),
        (config.RETRIES, "5", "EVENTLIB_RETRIES must be an integer of at least 0, not the str '5'"),
        (config.ALWAYS_EAGER, "false", "EVENTLIB_ALWAYS_EAGER must be True or False, not the str 'false'"),
        (config.PUBLISH_TIMEOUT, 0, "EVENTLIB_PUBLISH_TIMEOUT must be a number greater than 0"),
        (config.QUEUE, "", "EVENTLIB_QUEUE must be a string"),
        (config.EVENT_MODULES, {"web": 1}, "EVENTLIB_EVENT_MODULES must be a dict of str values"),
        (config.CELERY_CONFIG, [], "EVENTLIB_CELERY_CONFIG must be a dict"),
        (config.SPOOL_PATH, 3, "EVENTLIB_SPOOL_PATH must be a path"),
        (config.STORE_URL, "postgres://db/x", "EVENTLIB_STORE_URL = 'postgres://db/x' is not a valid URL"),
        (config.DURABILITY, "disk", "EVENTLIB_DURABILITY must be one of 'memory', 'process', 'machine'"),
        (config.LOCAL_LOG_MAX_BYTES, "64M", "EVENTLIB_LOCAL_LOG_MAX_BYTES must be an integer of at least 1"),
    ],
)
def test_each_value_is_type_checked_and_the_error_names_the_key(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        init(tmp_path, **{key: value})
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis//127.0.0.1:6379/5", "'redis//127.0.0.1:6379/5' is not a valid URL: it must start with scheme://"),
        ("redis://:s3cret@127.0.0.1:63790000/0", "'redis://:***@127.0.0.1:63790000/0' is not a valid URL: its port"),
        ("amqp://guest:s3cret@:5672//", "'amqp://guest:***@:5672//' is not a valid URL: it names a port but no host"),
        ("redsi://user:s3cret@127.0.0.1:6379/0", "'redsi://user:***@127.0.0.1:6379/0': 'redsi' is not a broker"),
    ],
)
def test_a_bad_broker_url_is_an_error_naming_the_key_and_the_url_without_its_password(
    tmp_path: Path, url: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        init(tmp_path, EVENTLIB_BROKER_URL=url)
    assert str(caught.value).startswith(f"EVENTLIB_BROKER_URL = {problem}")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//", "memory://", "redis://a:1;redis://b:2"]
)
def test_good_broker_urls_pass(tmp_path: Path, url: str) -> None:
    app = init(tmp_path, EVENTLIB_BROKER_URL=url)
    assert app.extensions["eventlib"].celery.conf.broker_url.startswith(url.partition(":")[0])


def test_every_setting_is_declared_once_with_a_default_its_check_accepts() -> None:
    assert list(config.DEFAULTS) == list(config.SETTINGS)
    module_constants = {value for name, value in vars(config).items() if name.isupper() and isinstance(value, str)}
    assert set(config.SETTINGS) <= module_constants
    for key, declared in config.SETTINGS.items():
        declared.check(key, declared.default)
    with pytest.raises(ValueError, match="not a new"):
        config.setting(config.QUEUE, "x", config.text(example="x"))


@pytest.mark.parametrize(
    ("debug", "testing", "warned"), [(False, False, True), (True, False, False), (False, True, False)]
)
def test_the_embedded_broker_warns_outside_debug_and_testing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, debug: bool, testing: bool, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
        init(tmp_path, DEBUG=debug, TESTING=testing)
    messages = [r.getMessage() for r in caplog.records if "embedded filesystem broker" in r.getMessage()]
    assert len(messages) == (1 if warned else 0)
    if warned:
        assert "events stay on this machine" in messages[0] and str(tmp_path) in messages[0]


def test_a_broker_url_set_only_in_the_environment_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTLIB_BROKER_URL", "redis://:s3cret@127.0.0.1:6379/0")
    with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
        init(tmp_path, TESTING=True)
    (message,) = [r.getMessage() for r in caplog.records if "The environment sets" in r.getMessage()]
    assert "EVENTLIB_BROKER_URL='redis://:***@127.0.0.1:6379/0'" in message
    assert "app.config.from_prefixed_env()" in message and "FLASK_EVENTLIB_BROKER_URL" in message


def test_from_prefixed_env_is_the_way_to_take_settings_from_the_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_EVENTLIB_BROKER_URL", "memory://")
    monkeypatch.setenv("FLASK_EVENTLIB_HANDLER_MODULES", "[]")
    monkeypatch.setenv("FLASK_EVENTLIB_RETRIES", "5")
    app = Flask("shop", instance_path=str(tmp_path))
    app.config.from_prefixed_env()
    with caplog.at_level(logging.WARNING, logger="flask_eventlib"):
        EventLib(app)
    assert app.extensions["eventlib"].celery.conf.broker_url == "memory://"
    assert app.config[config.RETRIES] == 5
    assert not [r for r in caplog.records if "environment" in r.getMessage()]
