"""What is wrong with an app's events and handlers: the checks behind ``flask eventlib check``.

Flask-free: it reads a :class:`~flask_eventlib.Registry` (and the app's package, to find handler
modules nobody listed). ``flask_eventlib.testing.check_events`` and the command line call it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from .events import BaseEvent
from .exceptions import ConfigurationError
from .handlers import MARKED
from .registry import MethodHandlerView, Registry


def problems(registry: Registry, *, package: str | None = None) -> list[str]:
    """What is wrong with the registered events, one sentence each (empty when all is well).

    :param package: the app's own package: its modules with ``@handler`` functions that the
        registry did not scan are reported (they never run).
    """
    events = registry.events()
    found: list[str] = []
    for func in registry.unlisted_handlers(package) if package else ():
        found.append(
            f"{_label(func)} is marked @handler, but its module is not in EVENTLIB_HANDLER_MODULES, "
            f"so it never runs: add {func.__module__!r} to EVENTLIB_HANDLER_MODULES."
        )
    for name, cls in events.items():
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not registry.handler_labels(name):
            found.append(
                f"{name} has no handler, so logging it does nothing: add a @handler method to {where} "
                f"or a @handler({name!r}) function in a module listed in EVENTLIB_HANDLER_MODULES."
            )
        if cls.schema is not None:
            from .schemas import schema_instance

            try:
                schema_instance(cls.schema, owner=cls)
            except ConfigurationError as exc:
                found.append(f"{name}: {exc}")
        elif cls.public:
            found.append(
                f"{name} is public but has no schema, so browsers can send it any data: set "
                f"`schema = SomeSchema` (a Marshmallow schema) on {where}, or make it private."
            )
    for target, funcs in registry.targets().items():
        if _matches_any(target, events):
            continue
        labels = ", ".join(_label(func) for func in funcs)
        guess = difflib.get_close_matches(target, [*events, *{f"{n.split('.')[0]}.*" for n in events}], n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else "`flask eventlib events` lists the events."
        found.append(f"@handler({target!r}) on {labels} matches no registered event, so it never runs; {hint}")
    claimed = {func for cls in MethodHandlerView() for func in MethodHandlerView()[cls]}
    for func in sorted(set(MARKED) - claimed, key=_label):
        owner = func.__qualname__.rsplit(".", 1)[0]
        found.append(
            f"{_label(func)} is marked @handler, but {owner} is not a BaseEvent subclass, so it "
            f"never runs: define it as `class {owner.rsplit('.', 1)[-1]}(BaseEvent)`, or register a "
            "function with @handler('app.EventName')."
        )
    return found


def _matches_any(target: str, events: dict[str, type[BaseEvent]]) -> bool:
    if target == "*" or target in events:
        return True
    label, _, rest = target.partition(".")
    return rest == "*" and any(name.partition(".")[0] == label for name in events)


def _label(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
