"""The ``@handler`` decorator: it marks methods and records functions; the registry decides."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on a method marked with ``@handler``.
HANDLER_MARK = "__eventlib_handler__"

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
def handler(target: str | None = None, /, *, registry: Registry | None = None) -> Callable[[F], F]: ...
def handler(target: Any = None, /, *, registry: Registry | None = None) -> Any:
    """Mark an event method as a handler, or register a function as a handler of events.

    On a method of a :class:`~flask_eventlib.BaseEvent` subclass, ``@handler`` (or ``@handler()``)
    marks it; it is called with no arguments and ``self`` is the event. Method handlers run first.

    On a function, ``@handler("deals.DealClick")`` registers it for that event,
    ``@handler("deals.*")`` for every event of the ``deals`` app and ``@handler("*")`` for every
    event; it is called with the event. The function is returned unchanged.

    :param target: the event name the function handles.
    :param registry: the registry to record the function in; the default one if omitted.
    """
    if callable(target):
        return _mark(target)
    if target is None:
        return _mark
    check_target(target)

    def register(func: F) -> F:
        from .registry import default_registry

        (registry or default_registry).add_function_handler(target, func)
        return func

    return register


def _mark(func: F) -> F:
    if "." not in getattr(func, "__qualname__", "").replace(".<locals>.", ""):
        raise ConfigurationError(
            f"@handler without an event name marks a method of a BaseEvent subclass, but "
            f"{getattr(func, '__qualname__', func)!r} is not defined in a class. To make a function "
            f"a handler, name its event: @handler('app.EventName')."
        )
    setattr(func, HANDLER_MARK, True)
    return func


def is_marked(obj: Any) -> bool:
    """Whether ``obj`` was marked with a bare ``@handler``."""
    return getattr(obj, HANDLER_MARK, False) is True
