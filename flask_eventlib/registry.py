"""One app's registry: event names to event classes, and the function handlers of each name.

A :class:`Registry` is built for each Flask app by ``EventLib.init_app``, from the modules it
scans; decorators only mark (see :mod:`flask_eventlib.handlers`). Event names are unique per
registry, as blueprint names are unique per app: two apps in one process may each have their own
``deals.DealClick``. Nothing is written onto the event classes, which several apps may share.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from .events import BaseEvent
from .exceptions import ConfigurationError, EventNotFound
from .handlers import MARKED_FUNCTIONS, check_target, handler, targets_of

_LABEL = re.compile(r"[A-Za-z_][\w-]*")


class Registry:
    """Knows one app's events by name and its function handlers by target.

    Function handlers may be registered before their event: they are kept by target name and
    matched when an event of that name runs.
    """

    def __init__(self) -> None:
        self._events: dict[str, type[BaseEvent]] = {}
        self._names: dict[type[BaseEvent], str] = {}
        self._labels: set[str] = set()
        self._functions: dict[str, list[Callable[..., Any]]] = {}
        self._cache: dict[str, list[Callable[..., Any]]] = {}
        #: The modules scanned for events and marked functions, by name.
        self.scanned_modules: set[str] = set()

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
        owner = self._names.get(cls)
        if owner is not None and owner != name:
            raise ConfigurationError(
                f"{_where(cls)} is already the event {owner!r} of this app and cannot also be "
                f"{name!r}; define a subclass for the second name."
            )
        self._names[cls] = name
        self._events[name] = cls
        self._labels.add(label)
        return name

    def register_module(self, label: str, module: ModuleType | str) -> list[str]:
        """Register every ``BaseEvent`` subclass defined in ``module`` (imported ones don't count),
        and the functions it defines that are marked ``@handler("...")``.

        :returns: the event names registered.
        """
        if isinstance(module, str):
            module = importlib.import_module(module)
        names = []
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseEvent) and value is not BaseEvent and value.__module__ == module.__name__:
                names.append(self.register_event(label, value))
        # The label exists even with no events, so "no event X in the Y app" stays accurate.
        self._labels.add(label)
        self.scan_handlers(module)
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

    def name_of(self, cls: type[BaseEvent]) -> str | None:
        """The name ``cls`` has in this registry, or ``None`` if it is not one of its events."""
        return self._names.get(cls)

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
                hint=self._hint(name) if isinstance(name, str) and "." not in name and name else None,
            )
        label, event = name.split(".")
        raise EventNotFound(f"There is no event named {event} in the {label} app", name=name, hint=self._hint(name))

    def _hint(self, name: str) -> str | None:
        """What to say after "There is no event named ...": the nearest name, the apps there are."""
        names = list(self._events)
        if not names:
            return (
                "This app has no events: they are the BaseEvent classes of the events module of a blueprint's "
                "package (registered on the app before init_app), or of a module in EVENTLIB_EVENT_MODULES."
            )
        label, _, event = name.rpartition(".")
        apps = sorted({known.split(".")[0] for known in names})
        # The event's own name decides: "deals.Nope" is not a typo of "deals.Typed" for sharing "deals.".
        same_app = [known for known in names if known.split(".")[0] == label] or names
        by_event = {known.split(".")[1]: known for known in reversed(same_app)}
        guess = difflib.get_close_matches(event, list(by_event), n=1)
        suggestion = f"Did you mean {by_event[guess[0]]!r}?" if guess else None
        if not label or label in apps:
            return suggestion
        there = f"There is no app {label!r}; the apps with events are {', '.join(repr(app) for app in apps)}."
        return f"{there} {suggestion}" if suggestion else there

    def events(self) -> dict[str, type[BaseEvent]]:
        """Every registered event, by name, sorted."""
        return dict(sorted(self._events.items()))

    # -- function handlers ------------------------------------------------------------------

    def scan_handlers(self, module: ModuleType | str, *, marked: Callable[[Any], tuple[str, ...]] = targets_of) -> int:
        """Register the functions ``module`` defines that are marked ``@handler("...")``.

        Functions imported into ``module`` from elsewhere are left to their own module's scan.

        :param marked: reads a function's targets from its mark (a stream consumer's registry
            reads ``@external_handler``'s).
        :returns: how many (function, target) pairs were registered.
        """
        if isinstance(module, str):
            module = importlib.import_module(module)
        found = 0
        for value in list(vars(module).values()):
            targets = marked(value)
            if targets and value.__module__ == module.__name__:
                for target in targets:
                    self.add_function_handler(target, value)
                    found += 1
        self.scanned_modules.add(module.__name__)
        return found

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
        """``@registry.handler("app.EventName")``: mark a function and register it here at once."""
        return handler(target, registry=self)

    def targets(self) -> dict[str, list[Callable[..., Any]]]:
        """Every function-handler target with its functions (including unmatched targets)."""
        return {target: list(funcs) for target, funcs in self._functions.items()}

    def handler_labels(self, name: str) -> list[str]:
        """The handlers of the event ``name`` in the order they run, named as the logs name them."""
        return [label for label, _ in self.find(name)(registry=self, name=name)._handler_calls()]

    def unlisted_handlers(self, package: str) -> list[Callable[..., Any]]:
        """Functions marked ``@handler("...")`` in ``package`` (and below) that no scan found.

        Such a module was imported, so its author meant its handlers to run; since an app scans
        only the modules it lists, they never would. Modules outside the app's own package may
        belong to other apps (several can share a process), so only ``package`` is searched.
        """
        found = []
        for func in list(MARKED_FUNCTIONS):
            module = getattr(func, "__module__", "") or ""
            if module not in self.scanned_modules and (module == package or module.startswith(package + ".")):
                found.append(func)
        return sorted(found, key=lambda func: f"{func.__module__}.{func.__qualname__}")

    def include(self, other: Registry) -> None:
        """Add ``other``'s events and function handlers to this registry (same names, same order)."""
        for name, cls in other.events().items():
            self.register_event(name.partition(".")[0], cls)
        self._labels.update(other._labels)
        for target, funcs in other.targets().items():
            for func in funcs:
                self.add_function_handler(target, func)
        self.scanned_modules.update(other.scanned_modules)


class MethodHandlerView(Mapping[type, list[Callable[..., Any]]]):
    """Read-only ``{event class: [method handler functions]}`` for every ``BaseEvent`` subclass.

    Method handlers belong to the class itself (they are marked in its body), so this view is the
    same for every app.
    """

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
