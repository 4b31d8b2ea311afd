"""``flask eventlib ...`` commands."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

eventlib_cli = AppGroup("eventlib", help="flask-eventlib: events, handlers and workers.")


@eventlib_cli.command("worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Start a Celery worker that processes this app's events (extra options go to Celery)."""
    state = current_app.extensions["eventlib"]
    state.celery.worker_main(["worker", "-Q", state.queue, *ctx.args])


@eventlib_cli.command("events")
def events() -> None:
    """List every event with its handlers in run order."""
    registry = current_app.extensions["eventlib"].extension.registry
    for name, cls in registry.events().items():
        methods = [f"{cls.__qualname__}.{n}" for n in cls._method_handler_names]
        functions = [f"{f.__module__}.{f.__qualname__}" for f in registry.function_handlers(name)]
        flags = " (public)" if cls.public else ""
        click.echo(f"{name}{flags}")
        for label in methods + functions:
            click.echo(f"    {label}")
