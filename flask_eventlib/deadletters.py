"""Dead letters for people: choose, group, replay and purge them, and show their data redacted.

What ``flask eventlib deadletters`` and the console's dead-letter pages share; no Flask here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .store import DeadLetter, Store

#: What a redacted value is shown as.
REDACTED = "[redacted]"
#: Hours and days the counts of a group go back.
HOURS, DAYS = 24, 7


class Replayer(Protocol):
    """What replays a dead letter: a :class:`~.runner.Runner`."""

    def replay(self, letter: DeadLetter) -> None: ...


def error_class(letter: DeadLetter) -> str:
    """The class of the error a dead letter records (``RuntimeError`` of ``RuntimeError('x')``)."""
    return letter.error.partition("(")[0].strip() or "?"


def matching(
    letters: Iterable[DeadLetter],
    *,
    ids: Collection[str] = (),
    event_id: str | None = None,
    handler: str | None = None,
) -> list[DeadLetter]:
    """The letters with one of ``ids`` (when given), of ``event_id`` and of ``handler`` (its full
    name or its last part); with none of them, every letter."""

    def matches(letter: DeadLetter) -> bool:
        return (
            (not ids or letter.id in ids)
            and (event_id is None or letter.event_id == event_id)
            and (handler is None or letter.handler == handler or letter.handler.endswith("." + handler))
        )

    return [letter for letter in letters if matches(letter)]


def replay(runner: Replayer, store: Store, letters: Iterable[DeadLetter]) -> Iterator[tuple[DeadLetter, bool]]:
    """Run each letter's failed handler again (that handler only, through the workers) and remove
    the letter; yield each letter with whether it was replayed (an undecodable message, which
    names no handler, cannot be: it stays)."""
    for letter in letters:
        if not letter.handler:
            yield letter, False
            continue
        runner.replay(letter)
        store.remove_dead_letters([letter.id])
        yield letter, True


def purge(store: Store, letters: Iterable[DeadLetter]) -> int:
    """Delete the letters for good; return how many were removed."""
    return store.remove_dead_letters([letter.id for letter in letters])


def group_id(event_name: str, handler: str, error: str) -> str:
    """A short, stable id for the group of an event name, a handler and an error class."""
    return hashlib.blake2b(f"{event_name}\n{handler}\n{error}".encode(), digest_size=6).hexdigest()


@dataclass
class Group:
    """The dead letters of one event name, one handler and one error class."""

    id: str
    event_name: str
    handler: str
    error_class: str
    #: Newest first.
    letters: list[DeadLetter] = field(default_factory=list)
    #: Letters that last failed in each of the last :data:`HOURS` hours, oldest hour first.
    by_hour: list[int] = field(default_factory=lambda: [0] * HOURS)
    #: Letters that last failed in each of the last :data:`DAYS` days, oldest day first.
    by_day: list[int] = field(default_factory=lambda: [0] * DAYS)

    @property
    def count(self) -> int:
        return len(self.letters)

    @property
    def last_failed_at(self) -> float:
        return self.letters[0].last_failed_at if self.letters else 0.0

    @property
    def last_hour(self) -> int:
        return self.by_hour[-1]

    @property
    def last_day(self) -> int:
        return sum(self.by_hour)


def groups(letters: Iterable[DeadLetter], now: float | None = None) -> list[Group]:
    """The letters grouped by event name, handler and error class, the latest failure first."""
    now = time.time() if now is None else now
    found: dict[str, Group] = {}
    for letter in sorted(letters, key=lambda d: (-d.last_failed_at, d.id)):
        error = error_class(letter)
        gid = group_id(letter.event_name, letter.handler, error)
        group = found.get(gid)
        if group is None:
            group = found[gid] = Group(gid, letter.event_name, letter.handler, error)
        group.letters.append(letter)
        ago = now - letter.last_failed_at
        hour, day = int(ago // 3600), int(ago // 86_400)
        if 0 <= hour < HOURS:
            group.by_hour[HOURS - 1 - hour] += 1
        if 0 <= day < DAYS:
            group.by_day[DAYS - 1 - day] += 1
    return list(found.values())


def redact(value: Any, fields: Collection[str]) -> Any:
    """``value`` with the value of every key named in ``fields`` (any case, at any depth)
    replaced by :data:`REDACTED`."""
    names = {name.lower() for name in fields}
    if not names:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: REDACTED if str(k).lower() in names else walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(value)
