"""The registry: event names to event classes, and the function handlers of each name."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from .events import BaseEvent
from .exceptions import ConfigurationError, EventNotFound
from .handlers import check_target

_LABEL = re.compile(r"[A-Za-z_][\w-]*")


class Registry:
    """Knows every event by name and every function handler by target.

    Function handlers may be registered before their event is discovered: they are kept by
    target name and matched when an event of that name runs.
    """

    def __init__(self) -> None:
        self._events: dict[str, type[BaseEvent]] = {}
        self._labels: set[str] = set()
        self._functions: dict[str, list[Callable[..., Any]]] = {}
        self._cache: dict[str, list[Callable[..., Any]]] = {}

    # -- events -----------------------------------------------------------------------------

    def register_event(self, label: str, cls: type[BaseEvent]) -> str:
        """Register ``cls`` as the event ``"<label>.<ClassName>"`` and return that name."""
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise ConfigurationError(
                f"{label!r} cannot label events: use a name of letters, digits, '_' or '-', "
                "without dots (it becomes the part before the dot in 'app.EventName')."
            )
        if not (isinstance(cls, type) and issubclass(cls, BaseEvent)) or cls is BaseEvent:
            raise ConfigurationError(
                f"{cls!r} is not a subclass of flask_eventlib.BaseEvent: only event classes can be "
                "registered; define it as `class Name(BaseEvent): ...`."
            )
        name = f"{label}.{cls.__name__}"
        existing = self._events.get(name)
        if existing is not None and existing is not cls:
            raise ConfigurationError(
                f"Two events are named {name!r}: {_where(existing)} and {_where(cls)}. "
                "Rename one of the classes or give one of the apps another label."
            )
        owner = cls.__dict__.get("name")
        if owner is not None and owner != name:
            raise ConfigurationError(
                f"{_where(cls)} is already the event {owner!r} and cannot also be {name!r}; "
                "define a subclass for the second name."
            )
        cls.name = name
        self._events[name] = cls
        self._labels.add(label)
        return name

    def register_module(self, label: str, module: ModuleType | str) -> list[str]:
        """Register every ``BaseEvent`` subclass defined in ``module`` (imported ones don't count).

        :returns: the names registered.
        """
        if isinstance(module, str):
            module = importlib.import_module(module)
        names = []
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseEvent) and value is not BaseEvent and value.__module__ == module.__name__:
                names.append(self.register_event(label, value))
        # The label exists even with no events, so "no event X in the Y app" stays accurate.
        self._labels.add(label)
        return names

    def discover(self, label: str, package: str) -> list[str]:
        """Import ``<package>.events`` if it exists and register its events under ``label``.

        A missing ``events`` module is fine; an ``ImportError`` raised inside one propagates.
        """
        module_name = f"{package}.events" if package else "events"
        try:
            spec = importlib.util.find_spec(module_name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            return []
        return self.register_module(label, importlib.import_module(module_name))

    def find(self, name: str) -> type[BaseEvent]:
        """The event class named ``name``.

        :raises EventNotFound: for an unknown name, or one not of the form ``app.EventName``.
        """
        try:
            return self._events[name]
        except (KeyError, TypeError):
            pass
        if not isinstance(name, str) or name.count(".") != 1 or "" in name.split("."):
            raise EventNotFound(
                f"{name!r} is not an event name: expected 'app.EventName', e.g. 'deals.DealClick'",
                name=name if isinstance(name, str) else None,
            )
        label, event = name.split(".")
        raise EventNotFound(f"There is no event named {event} in the {label} app", name=name)

    def events(self) -> dict[str, type[BaseEvent]]:
        """Every registered event, by name, sorted."""
        return dict(sorted(self._events.items()))

    # -- function handlers ------------------------------------------------------------------

    def add_function_handler(self, target: str, func: Callable[..., Any]) -> None:
        """Register ``func`` for ``target`` (``app.EventName``, ``app.*`` or ``*``)."""
        check_target(target)
        if not callable(func):
            raise ConfigurationError(
                f"@handler({target!r}) decorates {func!r}, which is not callable: put it on a "
                "function that takes the event."
            )
        funcs = self._functions.setdefault(target, [])
        if func not in funcs:
            funcs.append(func)
        self._cache.clear()

    def function_handlers(self, name: str) -> list[Callable[..., Any]]:
        """Function handlers for the event ``name``: its own, then ``app.*``, then ``*``."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        label = name.partition(".")[0]
        found = [
            *self._functions.get(name, ()),
            *self._functions.get(f"{label}.*", ()),
            *self._functions.get("*", ()),
        ]
        self._cache[name] = found
        return found

    def handler(self, target: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``@registry.handler("app.EventName")``: like ``@handler`` for this registry."""
        from .handlers import handler

        return handler(target, registry=self)

    def targets(self) -> dict[str, list[Callable[..., Any]]]:
        """Every function-handler target with its functions (including unmatched targets)."""
        return {target: list(funcs) for target, funcs in self._functions.items()}


class MethodHandlerView(Mapping[type, list[Callable[..., Any]]]):
    """Read-only ``{event class: [method handler functions]}`` for every ``BaseEvent`` subclass."""

    def __getitem__(self, cls: type) -> list[Callable[..., Any]]:
        if not (isinstance(cls, type) and issubclass(cls, BaseEvent)):
            raise KeyError(cls)
        return [getattr(cls, name) for name in cls._method_handler_names]

    def __iter__(self) -> Iterator[type]:
        stack = list(BaseEvent.__subclasses__())
        seen: set[type] = set()
        while stack:
            cls = stack.pop(0)
            if cls not in seen:
                seen.add(cls)
                yield cls
                stack.extend(cls.__subclasses__())

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: The registry that module-level ``@handler`` and ``EventLib()`` use unless given another.
default_registry = Registry()
