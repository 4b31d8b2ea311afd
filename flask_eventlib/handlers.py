"""The ``@handler`` decorator: it marks methods and functions; each app's registry decides.

``@handler`` only records, on the function itself, what it handles and how it is retried, and
returns the function unchanged. Nothing is registered at import time: ``EventLib.init_app``
scans the app's modules for marked functions (pluggy's marker and manager), so two apps in one
process never see each other's handlers.
"""

from __future__ import annotations

import inspect
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from .exceptions import ConfigurationError


class HandlerSink(Protocol):
    """Where ``@handler(..., registry=...)`` registers a function at once (a Registry)."""

    def add_function_handler(self, target: str, func: Callable[..., Any]) -> None: ...


F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on a method marked with ``@handler``.
HANDLER_MARK = "__eventlib_handler__"
#: Attribute set on a function marked with ``@handler("app.EventName")``: the tuple of its targets.
TARGETS_ATTR = "__eventlib_targets__"
#: Every function marked with a bare ``@handler``; ``flask_eventlib.testing.check_events`` reports
#: those that no BaseEvent subclass has (a method of a class that is not an event never runs).
MARKED: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
#: Every function marked with ``@handler("target")``, so ``init_app`` can warn about a marked
#: function in one of the app's modules that no setting lists (it would never run).
MARKED_FUNCTIONS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
#: Attribute holding a handler's :class:`RetryPolicy`, when it sets one.
POLICY_ATTR = "__eventlib_retry_policy__"


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing handler is retried; ``None`` fields fall back to the app's defaults.

    :param retries: attempts after the first one; 0 never retries.
    :param backoff: seconds before the first retry; each later retry waits twice as long, with
        jitter, up to the app's ``EVENTLIB_RETRY_BACKOFF_MAX``.
    """

    retries: int | None = None
    backoff: float | None = None

    def __post_init__(self) -> None:
        if self.retries is not None and (not isinstance(self.retries, int) or self.retries < 0):
            raise ConfigurationError(f"@handler(retries={self.retries!r}): retries is a whole number >= 0")
        if self.backoff is not None and (not isinstance(self.backoff, (int, float)) or self.backoff < 0):
            raise ConfigurationError(f"@handler(backoff={self.backoff!r}): backoff is a number of seconds >= 0")


def policy_of(func: Any) -> RetryPolicy | None:
    """The retry policy ``@handler`` recorded on ``func`` (or its function, for a bound method)."""
    return getattr(getattr(func, "__func__", func), POLICY_ATTR, None)


#: ``app.EventName``, ``app.*`` or ``*``.
_TARGET = re.compile(r"\*|[A-Za-z_][\w-]*\.(\*|[A-Za-z_]\w*)")


def check_target(target: str) -> str:
    """Return ``target`` if it is a valid handler target, else raise :class:`ConfigurationError`."""
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise ConfigurationError(
            f"@handler({target!r}): a handler target is 'app.EventName' (e.g. 'deals.DealClick'), "
            "'app.*' for every event of an app, or '*' for every event."
        )
    return target


@overload
def handler(target: F, /) -> F: ...
@overload
def handler(
    target: str | None = None,
    /,
    *,
    registry: HandlerSink | None = None,
    retries: int | None = None,
    backoff: float | None = None,
) -> Callable[[F], F]: ...
def handler(
    target: Any = None,
    /,
    *,
    registry: HandlerSink | None = None,
    retries: int | None = None,
    backoff: float | None = None,
) -> Any:
    """Mark an event method as a handler, or a function as a handler of events.

    On a method of a :class:`~flask_eventlib.BaseEvent` subclass, ``@handler`` (or ``@handler()``)
    marks it; it is called with no arguments and ``self`` is the event. Method handlers run first.

    On a function, ``@handler("deals.DealClick")`` marks it for that event, ``@handler("deals.*")``
    for every event of the ``deals`` app and ``@handler("*")`` for every event; it is called with
    the event. The function is returned unchanged; each app that lists its module (in
    ``EVENTLIB_HANDLER_MODULES``, or an events module) registers it when ``init_app`` scans.

    A handler that raises is retried alone, with exponential backoff and jitter; after its last
    attempt the event and the error go to the dead letters. Raise
    :class:`~flask_eventlib.DontRetry` for a failure that no retry can fix.

    :param target: the event name the function handles.
    :param registry: also register the function in this :class:`~flask_eventlib.Registry` at
        once (for registries built by hand; apps find marked functions by scanning).
    :param retries: attempts after the first (default ``EVENTLIB_RETRIES``).
    :param backoff: seconds before the first retry (default ``EVENTLIB_RETRY_BACKOFF``).
    """
    policy = RetryPolicy(retries, backoff) if (retries is not None or backoff is not None) else None
    if callable(target):
        return _mark(target)
    if target is None:
        return lambda func: _mark(func, policy)
    check_target(target)

    def mark(func: F) -> F:
        if not callable(func):
            raise ConfigurationError(
                f"@handler({target!r}) decorates {func!r}, which is not callable: put it on a "
                "function that takes the event."
            )
        try:
            if policy is not None:
                setattr(func, POLICY_ATTR, policy)
            targets = getattr(func, TARGETS_ATTR, ())
            if target not in targets:
                setattr(func, TARGETS_ATTR, (*targets, target))
        except (AttributeError, TypeError):
            raise ConfigurationError(
                f"@handler({target!r}) cannot mark {func!r}: put it on a plain function (def)."
            ) from None
        try:
            MARKED_FUNCTIONS.add(func)
        except TypeError:  # no weak references: only the unlisted-module warning misses it
            pass
        if registry is not None:
            registry.add_function_handler(target, func)
        return func

    return mark


def targets_of(obj: Any) -> tuple[str, ...]:
    """The targets ``@handler("...")`` marked ``obj`` with (empty for anything else)."""
    targets = getattr(obj, TARGETS_ATTR, ()) if inspect.isfunction(obj) else ()
    return targets if isinstance(targets, tuple) else ()


def _mark(func: F, policy: RetryPolicy | None = None) -> F:
    if "." not in getattr(func, "__qualname__", "").replace(".<locals>.", ""):
        raise ConfigurationError(
            f"@handler without an event name marks a method of a BaseEvent subclass, but "
            f"{getattr(func, '__qualname__', func)!r} is not defined in a class. To make a function "
            f"a handler, name its event: @handler('app.EventName')."
        )
    setattr(func, HANDLER_MARK, True)
    try:
        MARKED.add(func)
    except TypeError:  # no weak references (a staticmethod object): not tracked
        pass
    if policy is not None:
        setattr(func, POLICY_ATTR, policy)
    return func


def is_marked(obj: Any) -> bool:
    """Whether ``obj`` was marked with a bare ``@handler``."""
    return getattr(obj, HANDLER_MARK, False) is True


#: Attribute set on a function marked with ``@external_handler("...")``: the tuple of its targets.
EXTERNAL_TARGETS_ATTR = "__eventlib_external_targets__"


def external_handler(target: str, /, *, retries: int | None = None, backoff: float | None = None) -> Callable[[F], F]:
    """Mark a function as a handler of events read from a Redis Stream, outside the Flask app.

    ``@external_handler("deals.DealClick")`` (or ``"deals.*"``, or ``"*"``) marks it for a
    consumer process (``python -m flask_eventlib.consume STREAM --group G -m your.module``, see
    ``docs/streams.md``), which calls it with the event. An app's workers never run it, even when
    they import its module. Retries, dead letters and dedup are the workers' (per consumer group).

    :param target: the event name the function handles.
    :param retries: attempts after the first (default: the consumer's ``--retries``).
    :param backoff: seconds before the first retry (default: the consumer's ``--backoff``).
    """
    policy = RetryPolicy(retries, backoff) if (retries is not None or backoff is not None) else None
    if callable(target):
        raise ConfigurationError(
            f"@external_handler needs the event it handles: @external_handler('app.EventName') on {target!r}"
        )
    try:
        check_target(target)
    except ConfigurationError:
        raise ConfigurationError(
            f"@external_handler({target!r}): a target is 'app.EventName' (e.g. 'deals.DealClick'), "
            "'app.*' for every event of an app, or '*' for every event."
        ) from None

    def mark(func: F) -> F:
        if not inspect.isfunction(func):
            raise ConfigurationError(
                f"@external_handler({target!r}) cannot mark {func!r}: put it on a plain function (def)."
            )
        if policy is not None:
            setattr(func, POLICY_ATTR, policy)
        targets = getattr(func, EXTERNAL_TARGETS_ATTR, ())
        if target not in targets:
            setattr(func, EXTERNAL_TARGETS_ATTR, (*targets, target))
        return func

    return mark


def external_targets_of(obj: Any) -> tuple[str, ...]:
    """The targets ``@external_handler("...")`` marked ``obj`` with (empty for anything else)."""
    targets = getattr(obj, EXTERNAL_TARGETS_ATTR, ()) if inspect.isfunction(obj) else ()
    return targets if isinstance(targets, tuple) else ()
