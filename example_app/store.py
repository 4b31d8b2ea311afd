"""The SQLite store the handlers write to and the dashboard reads: counters and one row per event."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import current_app

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    logged_at TEXT,
    stored_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_name ON events (name);
"""


@dataclass(frozen=True)
class StoredEvent:
    """One row of the ``events`` table, its data decoded from JSON."""

    id: str
    name: str
    data: dict[str, Any]
    logged_at: str | None
    stored_at: str


def database_path() -> str:
    """The current app's database file (``EXAMPLE_DATABASE``)."""
    return str(current_app.config["EXAMPLE_DATABASE"])


@contextmanager
def connect(path: str | None = None) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` (default: the current app's): committed on success, always closed."""
    conn = sqlite3.connect(path or database_path(), timeout=10)
    try:
        with conn:  # commits, or rolls back on an exception
            yield conn
    finally:
        conn.close()


def init_db(path: str) -> None:
    """Create the tables if they don't exist (every process calls this at start-up)."""
    with connect(path) as conn:
        # WAL lets the web process read while the worker writes.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)


def increment(counter: str, by: int = 1, *, path: str | None = None) -> None:
    """Add ``by`` to ``counter``, creating it at 0 first."""
    with connect(path) as conn:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (counter, by),
        )


def counters(path: str | None = None) -> dict[str, int]:
    """Every counter by name."""
    with connect(path) as conn:
        return dict(conn.execute("SELECT name, value FROM counters ORDER BY name").fetchall())


def add_event(
    event_id: str,
    name: str,
    data: Mapping[str, Any],
    logged_at: dt.datetime | None,
    *,
    path: str | None = None,
) -> bool:
    """Store one event; return False if a row with that id exists (a redelivered message)."""
    with connect(path) as conn:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO events (id, name, data, logged_at, stored_at) VALUES (?, ?, ?, ?, ?)",
            (
                event_id,
                name,
                json.dumps(dict(data), default=_json_default, sort_keys=True),
                logged_at.isoformat() if logged_at else None,
                dt.datetime.now(dt.UTC).isoformat(),
            ),
        )
        return cursor.rowcount == 1


def events(name: str | None = None, *, limit: int | None = 100, path: str | None = None) -> list[StoredEvent]:
    """The latest stored events (of ``name`` if given), newest first; all of them if ``limit`` is None."""
    query = "SELECT id, name, data, logged_at, stored_at FROM events"
    params: tuple[Any, ...] = ()
    if name is not None:
        query += " WHERE name = ?"
        params = (name,)
    query += " ORDER BY stored_at DESC, rowid DESC LIMIT ?"
    with connect(path) as conn:
        rows = conn.execute(query, (*params, -1 if limit is None else limit)).fetchall()
    return [_stored(row) for row in rows]


def get_event(event_id: str, *, path: str | None = None) -> StoredEvent | None:
    """The stored event ``event_id``, or None."""
    with connect(path) as conn:
        row = conn.execute(
            "SELECT id, name, data, logged_at, stored_at FROM events WHERE id = ?", (event_id,)
        ).fetchone()
    return _stored(row) if row else None


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    event_id, name, data, logged_at, stored_at = row
    return StoredEvent(event_id, name, json.loads(data), logged_at, stored_at)


def _json_default(value: Any) -> Any:
    """Decimals, dates and UUIDs are stored as strings; anything else is an error."""
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    raise TypeError(f"Cannot store {type(value).__name__} in an event row: {value!r}")
