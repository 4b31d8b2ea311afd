"""``BaseEvent``: an event's data, its validation and the handlers it runs."""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from .exceptions import ValidationError
from .handlers import is_marked


class HandlerSource(Protocol):
    """What an event asks of its app's registry (:class:`~flask_eventlib.Registry` is one)."""

    def name_of(self, cls: type[BaseEvent]) -> str | None: ...

    def function_handlers(self, name: str) -> list[Callable[..., Any]]: ...


class EventData(dict):  # type: ignore[type-arg]
    """An event's data: a plain ``dict`` that can also be called as the spec writes it.

    ``event.data("key")`` is ``event.data.get("key")``.
    """

    def __call__(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)


class BaseEvent:
    """Base class of every event.

    Subclasses live in the ``events`` module of a blueprint's package; the class ``DealClick`` in
    the ``deals`` blueprint's package is the event ``"deals.DealClick"``.

    :param data: the event's data (a dict).
    :param id: the event id; one is made when ``log()`` creates the event.
    :param context: server-side facts about the event (e.g. the client address), not its data.
    :param logged_at: when ``log()`` accepted it (aware, UTC).
    :param registry: the app's registry, which knows the event's function handlers.
    :param name: the event's name; by default its class's name in ``registry``.
    :param trace: the trace context of the code that logged it (``EVENTLIB_TRACING``), or ``None``.
    """

    #: A Marshmallow schema (class or instance); the default :meth:`clean` loads data through it.
    schema: ClassVar[Any] = None
    #: Whether browsers may log this event through the HTTP endpoint.
    public: ClassVar[bool] = False
    #: The event's name in the app that logged it, ``"app.ClassName"`` (``None`` for an event
    #: built by hand outside a registry). A class can be an event of several apps, each with its
    #: own registry: ``registry.name_of(cls)`` gives the class's name in one of them.
    name: str | None = None

    #: Names of the methods marked with ``@handler``, base classes' first.
    _method_handler_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if attr not in names and is_marked(value):
                    names.append(attr)
        # An override without @handler takes the method out of the handlers.
        cls._method_handler_names = tuple(n for n in names if is_marked(getattr(cls, n)))

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        context: dict[str, Any] | None = None,
        logged_at: _dt.datetime | None = None,
        registry: HandlerSource | None = None,
        name: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> None:
        # An EventData is the caller's own copy (log() makes one): taken as is, not copied again.
        self.data: EventData = data if type(data) is EventData else EventData(data or {})
        self.id = id
        self.context: dict[str, Any] = context or {}
        self.logged_at = logged_at
        self.trace = trace
        self._registry = registry
        if name is None and registry is not None:
            name = registry.name_of(type(self))
        self.name = name

    @classmethod
    def _logged(
        cls,
        data: EventData,
        id: str,
        logged_at: _dt.datetime,
        registry: HandlerSource,
        name: str,
        context: dict[str, Any] | None,
        trace: dict[str, str] | None,
    ) -> BaseEvent:
        """The event ``log()`` builds, from the copy of the caller's data it made.

        A class that keeps :meth:`__init__` as it is (nearly all) gets its attributes set here
        directly, a fifth of the cost of the keyword call; one with an ``__init__`` of its own gets
        that call.
        """
        if cls.__init__ is not _BASE_INIT:
            return cls(data, id=id, context=context, logged_at=logged_at, registry=registry, name=name, trace=trace)
        event = _new_object(cls)
        event.data = data
        event.id = id
        event.context = context or {}
        event.logged_at = logged_at
        event.trace = trace
        event._registry = registry
        event.name = name
        return event

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} id={self.id}>"

    # -- validation -------------------------------------------------------------------------

    def clean(self) -> dict[str, Any] | None:
        """Validate or transform ``self.data`` before the event is sent.

        Change ``self.data`` in place or return a new dict, which replaces it; raise
        :class:`~flask_eventlib.ValidationError` to refuse the event. The default loads the data
        through :attr:`schema` when one is set.
        """
        if self.schema is not None:
            from .schemas import load

            return load(self.schema, self.data, owner=type(self))
        return None

    def require_data_keys(self, keys: Iterable[str]) -> None:
        """Raise :class:`~flask_eventlib.ValidationError` naming the keys missing from the data.

        :param keys: the required keys; missing ones are reported in this order.
        """
        missing = [key for key in keys if key not in self.data]
        if missing:
            raise ValidationError(
                f"The following keys are missing: {', '.join(missing)}",
                messages={key: ["Missing data for required field."] for key in missing},
            )

    def full_clean(self) -> None:
        """Run :meth:`clean` and apply what it returns."""
        cleaned = self.clean()
        if cleaned is not None:
            if not isinstance(cleaned, dict):
                raise TypeError(
                    f"{type(self).__name__}.clean() returned {type(cleaned).__name__}; "
                    "return a dict, or None after changing self.data in place"
                )
            self.data = cleaned if isinstance(cleaned, EventData) else EventData(cleaned)

    # -- handlers ---------------------------------------------------------------------------

    def registered_handlers(self) -> list[Callable[..., Any]]:
        """The handlers of this event, in the order they run.

        Method handlers first (declaration order, inherited ones included), bound to this event
        and called with no arguments; then function handlers of this event's name (registration
        order), then wildcard handlers (``app.*``, then ``*``), each called with the event.
        """
        methods: list[Callable[..., Any]] = [getattr(self, n) for n in self._method_handler_names]
        return methods + self._function_handlers()

    def _function_handlers(self) -> list[Callable[..., Any]]:
        if self.name is None or self._registry is None:
            return []  # built by hand, outside an app: only its method handlers
        return self._registry.function_handlers(self.name)

    def _handler_calls(self) -> list[tuple[str, Callable[[], Any]]]:
        """``(label, zero-argument call)`` for each handler, in run order."""
        calls: list[tuple[str, Callable[[], Any]]] = []
        cls = type(self)
        for attr in self._method_handler_names:
            calls.append((f"{cls.__module__}.{cls.__qualname__}.{attr}", getattr(self, attr)))
        for func in self._function_handlers():
            label = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
            calls.append((label, _bind(func, self)))
        return calls


def _bind(func: Callable[[BaseEvent], Any], event: BaseEvent) -> Callable[[], Any]:
    return functools.partial(func, event)


_BASE_INIT = BaseEvent.__init__
_new_object = object.__new__
