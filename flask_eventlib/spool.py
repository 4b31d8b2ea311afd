"""The spool: a durable FIFO of event batches in a SQLite file, where events wait while the broker
is down, shared safely by the processes of one machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from .sqlite import SQLiteFile, SQLiteFileError

#: Publishes one list of encoded events as one broker message; raises when it cannot. It may
#: return how many messages then wait in the broker's queue (``None``: not known), which tells
#: the sender that the workers are behind (:class:`flask_eventlib.publishing.Sender`).
Send = Callable[[list[str]], "int | None"]


class SpoolFull(Exception):
    """The spool holds its maximum number of events."""


class SpoolError(SQLiteFileError):
    """The spool's file cannot be opened, read or written (read-only disk, corrupt file, full disk)."""


_SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT, count INTEGER NOT NULL, body TEXT NOT NULL);
"""


class Spool:
    """A durable FIFO of event batches in a SQLite file, shared safely by the processes using it.

    The file and its folder are created on first use. Every failure of the file itself is a
    :class:`SpoolError`, so callers tell it from the broker's.

    :param path: the SQLite file.
    :param max_events: the most events it holds; past that :meth:`put` raises :class:`SpoolFull`.
    """

    def __init__(self, path: str, max_events: int = 100_000) -> None:
        self.path = path
        self.max_events = max_events
        self._file = SQLiteFile(path, _SPOOL_SCHEMA, name="spool", error=SpoolError)
        # Batches this process sent whose removal failed (a full disk): row id -> event count.
        # They are never sent again from here; their rows are removed once the file can be written.
        self._sent: dict[int, int] = {}

    def put(self, messages: list[str]) -> None:
        """Append a batch durably.

        :raises SpoolFull: when it would hold more than ``max_events`` events.
        :raises SpoolError: when the file cannot be written.
        """
        with self._file.transaction():
            held = self._held()
            if held + len(messages) > self.max_events:
                raise SpoolFull(f"the spool {self.path} holds {held} events (max {self.max_events})")
            self._file.execute("INSERT INTO spool (count, body) VALUES (?, ?)", (len(messages), json.dumps(messages)))

    def pending(self) -> int:
        """How many events it holds (0, without making it, when the file does not exist yet).

        :raises SpoolError: when the file cannot be read.
        """
        if not os.path.exists(self.path):
            return 0  # looking must not create it: the spool is made when first needed
        return self._held() - sum(self._sent.values())

    def oldest(self) -> str | None:
        """The oldest event it holds (``None`` when empty or not made yet).

        :raises SpoolError: when the file cannot be read.
        """
        if not os.path.exists(self.path):
            return None
        rows = self._file.execute("SELECT body FROM spool ORDER BY id LIMIT 1")
        messages = json.loads(rows[0][0]) if rows else []
        return str(messages[0]) if messages else None

    def _held(self) -> int:
        ((held,),) = self._file.execute("SELECT COALESCE(SUM(count), 0) FROM spool")
        return int(held)

    def drain(self, send: Send, limit: int = 100, max_batch: int = 100) -> int:
        """Send the oldest batches, oldest first, removing each once sent; return events sent.

        Consecutive batches go together, as one message of up to ``max_batch`` events (a batch
        larger than that goes alone): an outage at a quiet time leaves a batch per request, which
        would otherwise reach the workers as as many small messages, each paying a message's cost.
        At most ``limit`` messages per call. Stops at the first failure (which propagates) so order
        is kept. The batches of a message are claimed in one transaction, so two processes sharing
        the spool never send the same batch. ``send``'s exceptions propagate as they are; the
        file's own failures as :class:`SpoolError`.
        """
        self._remove_sent()
        sent = 0
        for _ in range(limit):
            taken: dict[int, int] = {}
            delivered = False
            try:
                with self._file.transaction():
                    # The counts first, then the bodies of the batches taken only.
                    rows = self._file.execute("SELECT id, count FROM spool ORDER BY id LIMIT ?", (max(max_batch, 1),))
                    if not rows:
                        break
                    events = 0
                    for row_id, count in rows:
                        if taken and events + count > max_batch:
                            break
                        taken[row_id] = count
                        events += count
                    ids = list(taken)
                    messages: list[str] = []
                    for (body,) in self._file.execute(
                        f"SELECT body FROM spool WHERE id IN ({_marks(ids)}) ORDER BY id", ids
                    ):
                        messages.extend(json.loads(body))
                    send(messages)  # raises: the transaction rolls back and the batches stay
                    delivered = True
                    self._delete(ids)
            except SpoolError:
                if delivered:  # sent, but not removed: never send them again from this process
                    self._sent.update(taken)
                raise
            sent += len(messages)
        return sent

    def _remove_sent(self) -> None:
        """Remove the rows of batches sent earlier whose removal failed.

        :raises SpoolError: when the file still cannot be written (then nothing more is sent
            from it: its oldest batch may be one already sent).
        """
        if not self._sent:
            return
        ids = list(self._sent)
        with self._file.transaction():
            self._delete(ids)
        for row_id in ids:
            del self._sent[row_id]

    def _delete(self, ids: list[int]) -> None:
        """Remove the rows ``ids`` (the caller holds a transaction)."""
        self._file.execute(f"DELETE FROM spool WHERE id IN ({_marks(ids)})", ids)

    def close(self) -> None:
        """Close this process's connection to the file; the next call opens another."""
        self._file.close()


def _marks(ids: list[int]) -> str:
    """The placeholders of ``ids`` in an ``IN (...)`` list."""
    return ",".join("?" * len(ids))
