"""``flask eventlib ...``: see the registry, export its schemas and types, check it, run workers.

The commands are added to every app ``EventLib`` is initialised on::

    flask --app shop.app eventlib events              # every event: public? schema? handlers
    flask --app shop.app eventlib describe deals.DealClick
    flask --app shop.app eventlib schema > events.schema.json
    flask --app shop.app eventlib types > events.d.ts
    flask --app shop.app eventlib check               # exits 1 when something is wrong
    flask --app shop.worker eventlib worker           # a Celery worker for this app's events
    flask --app shop.worker eventlib worker --restart # ... started again whenever it dies
    flask --app shop.app eventlib recover             # send what killed processes left in the local log
    flask --app shop.app eventlib consume analytics --group indexer -m search.handlers  # a stream's consumer
"""

from __future__ import annotations

import inspect
import json
import logging
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from . import checks, config
from . import deadletters as dead
from .events import BaseEvent
from .exceptions import ConfigurationError, EventNotFound
from .registry import Registry
from .state import EventLibState, state_of

T = TypeVar("T")

eventlib_cli = AppGroup("eventlib", help="flask-eventlib: events, handlers, schemas and workers.")


def _state() -> EventLibState:
    return state_of(current_app._get_current_object())  # type: ignore[attr-defined]


def _registry() -> Registry:
    return _state().registry


def _problems() -> list[str]:
    state = _state()
    return checks.problems(state.registry, package=state.package)


@eventlib_cli.command("worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--restart",
    is_flag=True,
    help="Run the worker as a child process and start a new one whenever it dies (not after SIGTERM or "
    "SIGINT, which it passes on for a graceful stop), waiting 1 s, then twice as long each time, up to 30 s.",
)
@click.pass_context
def worker(ctx: click.Context, restart: bool) -> None:
    """Start a Celery worker that processes this app's events (extra options go to Celery)."""
    state = _state()
    if restart:
        raise click.exceptions.Exit(_supervise_worker(ctx))
    state.celery.worker_main(["worker", "-Q", state.queue, *ctx.args])


def _supervise_worker(ctx: click.Context) -> int:
    """Run ``flask eventlib worker`` (without ``--restart``) under a :class:`~.supervise.Supervisor`."""
    from .supervise import Supervisor

    info = ctx.find_object(ScriptInfo)
    app_path = info.app_import_path if info is not None else None
    if app_path is None and info is not None and info.create_app is not None:
        # A custom FlaskGroup builds the app in a way `python -m flask` cannot repeat in the child.
        raise click.UsageError("--restart needs to know how to load the app: name it with --app or FLASK_APP.")
    # The child loads the app as this process did: by --app, or FLASK_APP and the .env files
    # (already in the environment it inherits), or from app.py / wsgi.py in the same folder.
    command = [sys.executable, "-m", "flask", *(["--app", app_path] if app_path else []), "eventlib", "worker"]
    _log_to_stderr(logging.getLogger("flask_eventlib.supervise"))
    return Supervisor([*command, *ctx.args], name="the worker").run()


def _log_to_stderr(logger: logging.Logger, who: str = "Supervisor") -> None:
    """Show the supervisor's INFO lines (each worker's pid), unless the app configured logging itself."""
    if logger.hasHandlers():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[%(asctime)s: %(levelname)s/{who}] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@eventlib_cli.command("events")
def events() -> None:
    """List every event: whether browsers may log it, its schema, its handlers in run order."""

    registry = _registry()
    rows: list[tuple[str, str, str, list[str]]] = [
        (name, "yes" if cls.public else "no", _schema_name(cls), registry.handler_labels(name))
        for name, cls in registry.events().items()
    ]
    if not rows:
        click.echo("No events are registered: put BaseEvent subclasses in the events module of a blueprint.")
        return
    header = ("EVENT", "PUBLIC", "SCHEMA", "HANDLERS (in run order)")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(3)]

    def line(cells: tuple[str, str, str], handler: str) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + "  " + handler

    click.echo(line(header[:3], header[3]).rstrip())
    for name, public, schema, handlers in rows:
        click.echo(line((name, public, schema), handlers[0] if handlers else "(none)").rstrip())
        for handler in handlers[1:]:
            click.echo(line(("", "", ""), handler))
    problems = _problems()
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        click.echo(f"\n{len(problems)} {noun}: `flask eventlib check` explains.")


@eventlib_cli.command("describe")
@click.argument("name")
def describe(name: str) -> None:
    """Show one event: its class, whether it is public, its data fields and its handlers."""
    from .typescript import data_fields

    registry = _registry()
    cls = _find(registry, name)

    click.echo(f"{name}  ({cls.__module__}.{cls.__qualname__})")
    doc = cls.__dict__.get("__doc__")
    if doc:
        for text in inspect.cleandoc(doc).splitlines():
            click.echo(f"  {text}".rstrip())
    click.echo("public:   " + ("yes: browsers may log it" if cls.public else "no: only server code logs it"))
    if cls.schema is None:
        click.echo("schema:   none (clean() checks the data)")
        click.echo("data:     any object")
    else:
        click.echo(f"schema:   {_schema_name(cls, full=True)}")
        found = _or_error(lambda: data_fields(cls, name=name))
        click.echo("data:" if found else "data:     an object without fields")
        width = max((len(key) for key, _, _ in found), default=0)
        kind_width = max((len(kind) for _, kind, _ in found), default=0)
        for key, kind, required in found:
            flag = "(required)" if required else ""
            click.echo(f"  {key.ljust(width)}  {kind.ljust(kind_width)}  {flag}".rstrip())
    handlers = registry.handler_labels(name)
    click.echo("handlers, in run order:" if handlers else "handlers: none (`flask eventlib check` reports it)")
    for number, label in enumerate(handlers, 1):
        click.echo(f"  {number}. {label}")


@eventlib_cli.command("schema")
@click.option("--all", "include_private", is_flag=True, help="Include the events browsers may not log.")
def schema(include_private: bool) -> None:
    """Print the JSON Schema of the public events' data (``#/$defs/<event name>``)."""
    from .jsonschema import json_schema

    document = _or_error(lambda: json_schema(_registry().events(), include_private=include_private))
    click.echo(json.dumps(document, indent=2, sort_keys=True))


@eventlib_cli.command("types")
@click.option("--all", "include_private", is_flag=True, help="Include the events browsers may not log.")
def types(include_private: bool) -> None:
    """Print TypeScript declarations of the public events' data: ``flask eventlib types > events.d.ts``."""
    from .typescript import typescript

    text = _or_error(lambda: typescript(_registry().events(), include_private=include_private))
    click.echo(text, nl=False)


@eventlib_cli.command("check")
def check() -> None:
    """Check the events: each has a handler, public ones have a schema, handler targets exist."""

    registry = _registry()
    problems = _problems()
    if not problems:
        count = len(registry.events())
        events = "1 event" if count == 1 else f"{count} events"
        click.echo(f"OK: {events}, each with a handler; every public event has a schema.")
        return
    for number, problem in enumerate(problems, 1):
        click.echo(f"{number}. {problem}", err=True)
    raise click.exceptions.Exit(1)


@eventlib_cli.command("recover")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the broker (or the spool).")
def recover(timeout: float) -> None:
    """Send the events that processes which died left in the local log, and wait until sent.

    Every process of the app does this by itself about once a second; the command is for when
    none runs (after a crash of the whole machine's app, before a deploy removes the folder).
    """
    sender = _state().sender
    log = sender.local_log
    if log is None:
        click.echo("EVENTLIB_DURABILITY is 'memory': there is no local log to recover.")
        return
    log.recover(sender.submit, sender.max_batch)
    if not sender.flush(timeout):
        click.echo(f"The broker did not take the events within {timeout:g}s; {log.pending()} events wait.", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"Recovered {log.recovered} events from {log.folder}; the broker (or the spool) has them.")


@eventlib_cli.command("consume")
@click.argument("stream")
@click.option("--group", "-g", required=True, help="The consumer group: each group gets every event.")
@click.option(
    "--module", "-m", "modules", multiple=True, required=True, help="A module of @external_handler functions."
)
@click.option(
    "--from",
    "start",
    default="new",
    show_default=True,
    help="Where a new group starts: new, beginning, a stream id or an ISO 8601 time.",
)
@click.option("--consumer", help="This consumer's name in the group (default: host-pid).")
@click.option("--batch", default=100, show_default=True, help="The most entries read and acknowledged together.")
@click.option(
    "--claim-idle",
    default=60.0,
    show_default=True,
    help="Seconds after which another consumer's entries are taken over.",
)
@click.option("--until-idle", is_flag=True, help="Exit once the group has read every entry.")
def consume(
    stream: str,
    group: str,
    modules: tuple[str, ...],
    start: str,
    consumer: str | None,
    batch: int,
    claim_idle: float,
    until_idle: bool,
) -> None:
    """Run @external_handler functions on the events of a Redis Stream, as one consumer of a group.

    The stream's Redis, the codec, the retries, the backoff and the dedup come from the app's
    settings (`python -m flask_eventlib.consume` does the same without an app). Stops on SIGTERM.
    """
    from .consume import Consumer, registry_for, start_id
    from .streams import default_url

    state = _state()
    conf = current_app.config
    url = default_url(conf[config.STREAMS_URL], str(state.celery.conf.broker_url or ""), conf[config.STORE_URL])
    if url is None:
        raise click.ClickException(f"Where are the streams? Set {config.STREAMS_URL} = 'redis://host:6379/0'.")
    try:
        reader = Consumer(
            stream,
            group,
            registry_for(modules),
            url=url,
            name=consumer,
            start=start_id(start),
            codec=state.codec,
            batch=batch,
            claim_idle=claim_idle,
            retries=int(conf[config.RETRIES]),
            backoff=float(conf[config.RETRY_BACKOFF]),
            backoff_max=float(conf[config.RETRY_BACKOFF_MAX]),
            dedup_ttl=float(conf[config.DEDUP_TTL]),
            claim_ttl=float(conf[config.CLAIM_TTL]),
        )
    except (ConfigurationError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    _log_to_stderr(logging.getLogger("flask_eventlib"), "Consumer")  # the outcome of each event, failures
    try:
        reader.run(until_idle=until_idle, handle_signals=True)
    finally:
        reader.close()


def _find(registry: Registry, name: str) -> type[BaseEvent]:
    try:
        return registry.find(name)
    except EventNotFound as exc:
        text = str(exc) if str(exc).endswith((".", "?")) else f"{exc}."
        raise click.BadParameter(f"{text} `flask eventlib events` lists every event.", param_hint="NAME") from None


def _or_error(make: Callable[[], T]) -> T:
    """``make()``, with a badly set-up event reported as an error message rather than a traceback."""
    try:
        return make()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


def _schema_name(cls: type[BaseEvent], *, full: bool = False) -> str:
    schema = cls.schema
    if schema is None:
        return "-"
    kind = schema if isinstance(schema, type) else type(schema)
    return f"{kind.__module__}.{kind.__qualname__}" if full else kind.__qualname__


# -- dead letters -------------------------------------------------------------------------------


class _StoreCommands(AppGroup):
    """Commands that read the store: a store that cannot be reached is one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (redis.RedisError, sqlite3.Error, OSError) as exc:
            # The subcommand's app context is gone by now: ask the script info for the app again.
            app = ctx.ensure_object(ScriptInfo).load_app()
            url = app.config.get(config.STORE_URL) or "the default store (the broker's Redis, or SQLite)"
            raise click.ClickException(
                f"Cannot reach the dead-letter store {config.mask_url(url)}: {type(exc).__name__}: {exc}. "
                f"Is it running? {config.STORE_URL} (or {config.BROKER_URL}) says where it is."
            ) from None


@eventlib_cli.group("deadletters", cls=_StoreCommands)
def deadletters() -> None:
    """Events whose handler failed its last attempt: list, show, replay and purge them."""


def _store() -> Any:
    store = _state().store
    if store is None:
        raise click.ClickException("This app has no dead-letter store: set EVENTLIB_STORE_URL.")
    return store


def _select(letters: list[Any], all_: bool, event: str | None, handler: str | None, ids: tuple[str, ...]) -> list[Any]:
    """The dead letters the options name; ``--all`` alone names every one."""
    if not (all_ or event or handler or ids):
        raise click.UsageError("Say which dead letters: ID..., --event ID, --handler NAME or --all.")
    missing = set(ids) - {letter.id for letter in letters}
    if missing:
        raise click.BadParameter(f"no dead letter with the id {', '.join(sorted(missing))}", param_hint="ID")
    return dead.matching(letters, ids=set(ids), event_id=event, handler=handler)


def _when(timestamp: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@deadletters.command("list")
def deadletters_list() -> None:
    """One line per dead letter, oldest first."""
    letters = _store().dead_letters()
    if not letters:
        click.echo("No dead letters.")
        return
    for letter in letters:
        click.echo(
            f"{letter.id}  {_when(letter.last_failed_at)}  {letter.event_name or '?'} {letter.event_id}  "
            f"{letter.handler or '(undecodable message)'}  after {letter.attempts} attempts: {letter.error}"
        )
    click.echo(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}.")


@deadletters.command("show")
@click.argument("letter_id")
def deadletters_show(letter_id: str) -> None:
    """Everything about one dead letter: the event, the error and its traceback."""
    for letter in _store().dead_letters():
        if letter.id == letter_id:
            click.echo(f"id:          {letter.id}")
            click.echo(f"event:       {letter.event_name} {letter.event_id}")
            click.echo(f"handler:     {letter.handler}")
            click.echo(f"attempts:    {letter.attempts}")
            click.echo(f"first failed {_when(letter.first_failed_at)}, last failed {_when(letter.last_failed_at)}")
            click.echo(f"error:       {letter.error}")
            click.echo(f"message:     {letter.message}")
            click.echo(letter.traceback.rstrip())
            return
    raise click.BadParameter(f"no dead letter with the id {letter_id}", param_hint="LETTER_ID")


@deadletters.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--event", help="The dead letters of this event id.")
@click.option("--handler", help="The dead letters of this handler (its full name or its last part).")
def deadletters_replay(ids: tuple[str, ...], all_: bool, event: str | None, handler: str | None) -> None:
    """Run the failed handler of each chosen dead letter again (only that handler), through the workers."""
    store = _store()
    chosen = _select(store.dead_letters(), all_, event, handler, ids)
    for letter, replayed in dead.replay(_state().runner, store, chosen):
        if not replayed:
            click.echo(f"{letter.id}: an undecodable message cannot be replayed; `show` it, then purge it", err=True)
            continue
        click.echo(f"replayed {letter.id}: {letter.handler} for {letter.event_name} {letter.event_id}")
    click.echo(f"{len(chosen)} dead letter{'s' if len(chosen) != 1 else ''} replayed.")


@deadletters.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--event", help="The dead letters of this event id.")
@click.option("--handler", help="The dead letters of this handler (its full name or its last part).")
def deadletters_purge(ids: tuple[str, ...], all_: bool, event: str | None, handler: str | None) -> None:
    """Delete the chosen dead letters for good."""
    store = _store()
    chosen = _select(store.dead_letters(), all_, event, handler, ids)
    removed = dead.purge(store, chosen)
    click.echo(f"{removed} dead letter{'s' if removed != 1 else ''} purged.")
