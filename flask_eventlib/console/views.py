"""The console's pages: overview, events, dead letters, one event by id.

Server-rendered; ``static/console.js`` swaps the overview's figures in every two seconds (the
``/live`` fragment) and asks before a purge. Every action is a POST carrying the session's CSRF
token (:mod:`.guard`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from .. import config
from .. import deadletters as dead
from ..envelope import decode
from ..exceptions import ConfigurationError
from ..figures import (
    BUCKET,
    MAX_TRACES_PER_BUCKET,
    RETENTION,
    SEEN_RECENTLY,
    TRACE_BUCKET,
    logged_at_of,
    overview,
    story,
)
from ..handlers import policy_of
from ..state import EventLibState, state_of
from ..store import DeadLetter, Store, succeeded
from ..tasks import queue_depth
from ..typescript import data_fields
from . import guard

bp = Blueprint(
    "eventlib_console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
bp.before_request(guard.check_access)
bp.before_request(guard.check_csrf)

#: The most dead letters a group's page lists (its buttons still act on the whole group).
PAGE_SIZE = 200
#: Seconds a broker gets to say how deep the events queue is.
QUEUE_TIMEOUT = 1.0


def _state() -> EventLibState:
    return state_of(caller="the console")


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"csrf_token": guard.csrf_token, "fmt": Formats, "csrf_field": guard.FIELD, "app_name": current_app.name}


class Formats:
    """How the templates show numbers and times (``fmt.rate(x)``), kept out of the app's filters."""

    @staticmethod
    def rate(per_second: float | None) -> str:
        if not per_second:
            return "0/s"
        if per_second >= 100:
            return f"{per_second:,.0f}/s"
        if per_second >= 1:
            return f"{per_second:.1f}/s"
        return f"{per_second:.2f}/s"

    @staticmethod
    def duration(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        if seconds >= 1:
            return f"{seconds:.2f} s"
        if seconds >= 1e-3:
            return f"{seconds * 1e3:.1f} ms"
        return f"{seconds * 1e6:.0f} µs"

    @staticmethod
    def ago(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        if seconds < 90:
            return f"{seconds:.0f} s"
        if seconds < 5400:
            return f"{seconds / 60:.0f} min"
        if seconds < 172_800:
            return f"{seconds / 3600:.0f} h"
        return f"{seconds / 86_400:.0f} d"

    @staticmethod
    def when(timestamp: float | None) -> str:
        if not timestamp:
            return "-"
        return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"

    @staticmethod
    def count(n: int | None) -> str:
        return f"{n or 0:,}"


# -- the overview --------------------------------------------------------------------------------


def chart(series: dict[str, list[float]], width: int = 720, height: int = 160) -> dict[str, Any]:
    """SVG polyline points of each series on one scale (the largest value at the top)."""
    top = max((max(values, default=0.0) for values in series.values()), default=0.0) or 1.0
    lines = {}
    for name, values in series.items():
        step = width / max(len(values) - 1, 1)
        lines[name] = " ".join(f"{i * step:.1f},{height - value / top * height:.1f}" for i, value in enumerate(values))
    return {"lines": lines, "top": top, "width": width, "height": height}


def _queue(state: EventLibState) -> dict[str, Any]:
    found: dict[str, Any] = {"name": state.queue, "depth": None, "error": None}
    if state.eager:
        found["error"] = "eager mode: no queue"
        return found
    try:
        found["depth"] = queue_depth(state.celery, state.queue, timeout=QUEUE_TIMEOUT)
    except Exception as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
    return found


def _figures(state: EventLibState) -> dict[str, Any] | None:
    """The overview's figures (``None`` when this app gathers none), this process's own first."""
    figures = state.figures
    if figures is None:
        return None
    figures.flush()
    found = overview(figures.sink)
    found["queue"] = _queue(state)
    found["workers_recently"] = sum(1 for w in found["processes"]["workers"] if w["age"] <= SEEN_RECENTLY)
    return found


@bp.get("/")
def index() -> str:
    return _overview_page("eventlib_console/overview.html")


@bp.get("/live")
def live() -> str:
    """The overview's figures alone, which the page's script swaps in."""
    return _overview_page("eventlib_console/_live.html")


#: The spans the overview's chart can show, in minutes (``?minutes=``); the first is the default.
CHART_MINUTES = (RETENTION // 60, 10)


def _overview_page(template: str) -> str:
    data = _figures(_state())
    minutes = request.args.get("minutes", type=int)
    minutes = minutes if minutes in CHART_MINUTES else CHART_MINUTES[0]
    shown = None
    if data is not None:
        buckets = minutes * 60 // BUCKET
        shown = chart({name: values[-buckets:] for name, values in data["series"].items()})
    return render_template(template, data=data, chart=shown, minutes=minutes, spans=CHART_MINUTES, **_limits())


@bp.get("/overview.json")
def overview_json() -> Response:
    """The overview's figures as JSON (for scripts; the page itself needs no JS to read them)."""
    data = _figures(_state())
    if data is None:
        return jsonify(error=f"This app gathers no figures: {config.CONSOLE_FIGURES} is off."), 404  # type: ignore[return-value]
    return jsonify(data)


def _limits() -> dict[str, Any]:
    return {
        "bucket": BUCKET,
        "retention": RETENTION,
        "seen_recently": SEEN_RECENTLY,
        "trace_cap": MAX_TRACES_PER_BUCKET,
        "trace_bucket": TRACE_BUCKET,
    }


# -- the events ----------------------------------------------------------------------------------


@bp.get("/events")
def events() -> str:
    state = _state()
    registry, runner = state.registry, state.runner
    data = _figures(state)
    rows = []
    for name, cls in registry.events().items():
        try:
            fields: list[tuple[str, str, bool]] | None = data_fields(cls, name=name) if cls.schema is not None else None
            problem = None
        except ConfigurationError as exc:
            fields, problem = None, str(exc)
        handlers = []
        for label, call in cls(registry=registry, name=name)._handler_calls():
            policy = policy_of(getattr(call, "func", call))
            retries = policy.retries if policy and policy.retries is not None else runner.retries
            backoff = policy.backoff if policy and policy.backoff is not None else runner.backoff
            handlers.append({"label": label, "retries": retries, "backoff": backoff, "own": policy is not None})
        doc = (cls.__dict__.get("__doc__") or "").strip().splitlines()
        rows.append(
            {
                "name": name,
                "cls": cls,
                "path": f"{cls.__module__}.{cls.__qualname__}",
                "doc": doc[0] if doc else "",
                "schema": None if cls.schema is None else _schema_name(cls.schema),
                "fields": fields,
                "problem": problem,
                "handlers": handlers,
                "figures": (data or {}).get("events", {}).get(name),
            }
        )
    return render_template("eventlib_console/events.html", rows=rows, data=data, backoff_max=runner.backoff_max)


def _schema_name(schema: Any) -> str:
    kind = schema if isinstance(schema, type) else type(schema)
    return f"{kind.__module__}.{kind.__qualname__}"


# -- the dead letters ----------------------------------------------------------------------------


@bp.get("/deadletters")
def deadletters() -> str:
    store = _state().store
    groups = dead.groups(store.dead_letters()) if store is not None else None
    return render_template("eventlib_console/deadletters.html", groups=groups, now=time.time())


def _store(state: EventLibState) -> Store:
    """The app's store, or a 404 page saying it has none."""
    if state.store is None:
        guard.not_found("This app has no dead-letter store: set EVENTLIB_STORE_URL.")
    return state.store


def _group(letters: list[DeadLetter], gid: str) -> dead.Group | None:
    return next((group for group in dead.groups(letters) if group.id == gid), None)


@bp.get("/deadletters/group/<gid>")
def group(gid: str) -> str:
    found = _group(_store(_state()).dead_letters(), gid)
    if found is None:
        guard.not_found(f"There are no dead letters in the group {gid} any more.")
    return render_template("eventlib_console/group.html", group=found, letters=found.letters[:PAGE_SIZE])


def _shown(value: Any) -> str:
    """Data for people: indented JSON, what JSON cannot say as text."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


@bp.get("/deadletters/<letter_id>")
def letter(letter_id: str) -> str:
    state = _state()
    found = next((letter for letter in _store(state).dead_letters() if letter.id == letter_id), None)
    if found is None:
        guard.not_found(f"There is no dead letter {letter_id} (any more: replayed or purged?).")
    fields = current_app.config[config.CONSOLE_REDACT]
    envelope: dict[str, Any] | None = None
    problem = None
    try:
        decoded = decode(found.message, state.codec)
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        envelope = {
            "data": _shown(dead.redact(decoded.data, fields)),
            "context": _shown(dead.redact(decoded.context, fields)),
            "logged_at": decoded.logged_at,
        }
    return render_template(
        "eventlib_console/letter.html",
        letter=found,
        envelope=envelope,
        problem=problem,
        size=len(found.message.encode()),
        gid=dead.group_id(found.event_name, found.handler, dead.error_class(found)),
        error_class=dead.error_class(found),
        redacted=fields,
    )


@bp.post("/deadletters/<any(replay, purge):action>")
def act(action: str) -> Response:
    """Replay or purge dead letters: those named by ``id`` fields, or a whole ``group``."""
    state = _state()
    store = state.store
    back = _next() or url_for(".deadletters")
    if store is None:
        flash("This app has no dead-letter store.", "error")
        return redirect(back)
    gid = request.form.get("group")
    ids = set(request.form.getlist("id"))
    if gid:
        chosen = found.letters if (found := _group(store.dead_letters(), gid)) else []
    elif ids:
        chosen = dead.matching(store.dead_letters(), ids=ids)
    else:
        flash("Choose the dead letters first.", "error")
        return redirect(back)
    if not chosen:
        flash("Those dead letters are gone already (replayed or purged meanwhile).", "error")
        return redirect(back)
    if action == "purge":
        removed = dead.purge(store, chosen)
        flash(f"{_letters(removed)} purged.", "ok")
        return redirect(back)
    try:
        outcomes = list(dead.replay(state.runner, store, chosen))
    except Exception as exc:
        flash(f"The replay stopped: {type(exc).__name__}: {exc}. The dead letters not replayed are kept.", "error")
        return redirect(back)
    replayed = sum(1 for _, done in outcomes if done)
    flash(f"{_letters(replayed)} replayed: the workers run their handlers again.", "ok")
    if replayed < len(outcomes):
        flash(f"{_letters(len(outcomes) - replayed)} of undecodable messages cannot be replayed: purge them.", "error")
    return redirect(back)


def _letters(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


def _next() -> str | None:
    """Where a form asks to go back to: a page of the console only."""
    target = request.form.get("next") or ""
    parts = urlsplit(target)
    home = url_for(".index")
    if parts.scheme or parts.netloc or not target.startswith(home) or "//" in target or "\\" in target:
        return None
    return target


# -- one event -----------------------------------------------------------------------------------


@bp.get("/event")
def event() -> str | Response:
    event_id = (request.args.get("id") or "").strip()
    if not event_id:
        return render_template("eventlib_console/event.html", event_id="", found=None)
    state = _state()
    store = state.store
    letters = [d for d in store.dead_letters() if d.event_id == event_id] if store is not None else []
    done = succeeded(store.completed([event_id]).get(event_id, ())) if store is not None else set()
    figures = state.figures
    if figures is not None:
        figures.flush()
    registry = state.registry
    name = letters[0].event_name if letters else None

    def labels(event_name: str) -> list[str]:
        try:
            return registry.handler_labels(event_name)
        except Exception:
            return []  # an event this app does not know (any more)

    found = None
    if figures is not None:
        found = story(
            figures.sink,
            event_id,
            labels=labels,
            done=done,
            dead=[d.handler for d in letters],
            name=name,
            logged_at=logged_at_of(letters[0].message) if letters else None,
        )
    return render_template(
        "eventlib_console/event.html",
        event_id=event_id,
        found=found,
        letters=letters,
        done=sorted(done),
        figures_on=figures is not None,
        now=time.time(),
        **_limits(),
    )
