"""Prometheus metrics of events and handlers, fed by the signals of :mod:`flask_eventlib.signals`
and, for handler attempts, by the runner itself (:class:`Runs`).

``EVENTLIB_METRICS = True`` (which needs ``pip install 'flask-eventlib[metrics]'``) makes
``init_app`` connect this module's receivers to the app's signals and serve the metrics at
``EVENTLIB_METRICS_URL`` (``/metrics``; ``None`` serves nothing: route :func:`view` yourself,
behind your own access check, or run :func:`serve`).

Counters: ``eventlib_events_logged_total{event}``, ``eventlib_events_rejected_total{event,
reason}``, ``eventlib_events_spooled_total``, ``eventlib_events_dropped_total``, and per
``{event, handler}``: ``eventlib_handler_succeeded_total``, ``eventlib_handler_failed_total``
(every failed attempt), ``eventlib_handler_retried_total``, ``eventlib_handler_dead_lettered_total``;
the histogram ``eventlib_handler_duration_seconds{event, handler}`` times every attempt.

Label values are bounded: event names and handler labels are those of the app's registry (a
rejected log of a name the registry does not know counts under ``event="(unknown)"``), and
``reason`` is one of a few words. Nothing a browser sends becomes a label.

Several processes (gunicorn's workers, Celery's prefork children): prometheus_client's
multiprocess mode. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder, the same for every
process of the machine, before they start; each process then writes its counts to its own files
there, and a scrape of any process (or of :func:`serve`) adds up the files of all of them, those
of processes that exited included, so totals never go back when a worker is recycled. This
module has counters and histograms only, for which prometheus_client's ``mark_process_dead``
has nothing to do (it removes the files of live gauges); empty the folder when the deployment
starts again.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from . import signals
from .exceptions import ConfigurationError, EventNotFound, EventNotPublic, ValidationError

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Counter,
        Histogram,
        generate_latest,
        multiprocess,
        start_http_server,
    )
except ImportError as exc:  # pragma: no cover - the message is tested with the package hidden
    raise ConfigurationError(
        "flask_eventlib.metrics needs the prometheus_client package, which is not installed: "
        "pip install 'flask-eventlib[metrics]' (or turn EVENTLIB_METRICS off)"
    ) from exc

#: The environment variable that turns prometheus_client's multiprocess mode on.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: The ``event`` label of a rejected log whose name no event of the registry has.
UNKNOWN_EVENT = "(unknown)"
#: Handler durations, in seconds: from a cache write (1 ms) to a slow API call (a minute).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labelled = Any  # a prometheus_client metric's child, for one tuple of label values


class Metrics:
    """The metrics of one process: made once, shared by every app in it that turns them on.

    :param registry: where they are registered (default: prometheus_client's ``REGISTRY``).
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        by_handler = ("event", "handler")
        self.logged = Counter("eventlib_events_logged", "Events log() accepted.", ("event",), registry=registry)
        self.rejected = Counter(
            "eventlib_events_rejected",
            "Events log() refused: reason is not_found, not_public, invalid, unserializable or error.",
            ("event", "reason"),
            registry=registry,
        )
        self.spooled = Counter(
            "eventlib_events_spooled", "Events kept in the local spool while the broker failed.", registry=registry
        )
        self.dropped = Counter("eventlib_events_dropped", "Events dropped: the spool was full.", registry=registry)
        self.succeeded = Counter(
            "eventlib_handler_succeeded", "Handler runs that succeeded.", by_handler, registry=registry
        )
        self.failed = Counter(
            "eventlib_handler_failed", "Handler runs that raised (each attempt).", by_handler, registry=registry
        )
        self.retried = Counter(
            "eventlib_handler_retried", "Retries of a handler that were scheduled.", by_handler, registry=registry
        )
        self.dead_lettered = Counter(
            "eventlib_handler_dead_lettered",
            "Handlers dead-lettered after their last attempt.",
            by_handler,
            registry=registry,
        )
        self.duration = Histogram(
            "eventlib_handler_duration_seconds",
            "How long each attempt of a handler ran, whatever its outcome.",
            by_handler,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # labels() takes a lock and builds a tuple on every call: the children are kept here,
        # one per label tuple, which the registry bounds.
        self._children: dict[tuple[Any, ...], Labelled] = {}
        self._handlers: dict[tuple[str, str], HandlerMetrics] = {}

    def child(self, metric: Any, *values: str) -> Labelled:
        """``metric.labels(*values)``, looked up once per label tuple."""
        key = (metric, *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def handler(self, event: str, handler: str) -> HandlerMetrics:
        """The children of one handler of one event, looked up once."""
        key = (event, handler)
        found = self._handlers.get(key)
        if found is None:
            found = self._handlers[key] = HandlerMetrics(
                *(
                    metric.labels(event, handler)
                    for metric in (self.succeeded, self.failed, self.retried, self.dead_lettered, self.duration)
                )
            )
        return found


class HandlerMetrics(NamedTuple):
    """One handler's children of the per-handler metrics."""

    succeeded: Labelled
    failed: Labelled
    retried: Labelled
    dead_lettered: Labelled
    duration: Labelled


_lock = threading.Lock()
_metrics: Metrics | None = None


def metrics() -> Metrics:
    """This process's :class:`Metrics`, made on first use."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


# -- the receivers: module functions, so a signal holds no reference to an app ------------------


def _logged(sender: Any, *, event: Any, **_: Any) -> None:
    found = metrics()
    found.child(found.logged, event.name).inc()


def _rejected(sender: Any, *, name: Any, error: BaseException, **_: Any) -> None:
    found = metrics()
    # Every refusal but EventNotFound comes after the registry found the name.
    event = UNKNOWN_EVENT if isinstance(error, EventNotFound) or not isinstance(name, str) else name
    found.child(found.rejected, event, rejection_reason(error)).inc()


def _spooled(sender: Any, *, count: int, **_: Any) -> None:
    metrics().spooled.inc(count)


def _dropped(sender: Any, *, count: int, **_: Any) -> None:
    metrics().dropped.inc(count)


class Runs:
    """The runner's :class:`~flask_eventlib.runner.Watcher`: handler attempts, counted by message.

    In multiprocess mode each ``inc()`` or ``observe()`` writes a value to a file under a lock,
    a few microseconds each, which per attempt cost a worker several per cent of its throughput;
    so attempts are kept as they come (an append) and counted once a message is done: one
    ``inc(n)`` per handler and outcome, and per handler one write of the durations' sum and one
    per bucket they fall in.
    """

    def __init__(self) -> None:
        # A deque: threads of a thread pool append and drain it at once without a lock.
        self._pending: collections.deque[Any] = collections.deque()

    def record(self, result: Any) -> None:
        self._pending.append(result)

    def commit(self) -> None:
        pending = self._pending
        groups: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        while True:
            try:
                result = pending.popleft()
            except IndexError:
                break
            key = (result.event.name, result.handler)
            found = groups.get(key)
            if found is None:
                found = groups[key] = ([], [])
            found[0 if result.error is None else 1].append(result.duration)
        if not groups:
            return
        counts = metrics()
        for (event, handler), (succeeded, failed) in groups.items():
            children = counts.handler(event, handler)
            if succeeded:
                children.succeeded.inc(len(succeeded))
            if failed:
                children.failed.inc(len(failed))
            observe_all(children.duration, succeeded + failed)


def observe_all(histogram: Any, amounts: list[float]) -> None:
    """``histogram.observe(a)`` for each of ``amounts``, with one write per bucket they fall in and
    one for their sum (prometheus_client's children keep ``_sum``, ``_buckets`` and
    ``_upper_bounds``; should a version not, each amount is observed in turn)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    hits: dict[int, int] = {}
    for amount in amounts:
        index = bisect.bisect_left(bounds, amount)  # the first bound >= amount, as observe() finds it
        hits[index] = hits.get(index, 0) + 1
    total.inc(sum(amounts))
    for index, count in hits.items():
        buckets[index].inc(count)


def _retried(sender: Any, *, event: Any, handler: str, **_: Any) -> None:
    metrics().handler(event.name, handler).retried.inc()


def _dead_lettered(sender: Any, *, event: Any, handler: str, **_: Any) -> None:
    metrics().handler(event.name, handler).dead_lettered.inc()


_RECEIVERS: tuple[tuple[Any, Callable[..., None]], ...] = (
    (signals.event_logged, _logged),
    (signals.event_rejected, _rejected),
    (signals.events_spooled, _spooled),
    (signals.events_dropped, _dropped),
    (signals.handler_retried, _retried),
    (signals.handler_dead_lettered, _dead_lettered),
)


def rejection_reason(error: BaseException) -> str:
    """The ``reason`` label of a refused log: one of a few words, whatever the error says."""
    if isinstance(error, EventNotFound):
        return "not_found"
    if isinstance(error, EventNotPublic):
        return "not_public"
    if isinstance(error, ValidationError):
        return "invalid"
    if isinstance(error, TypeError):  # SerializationError is one
        return "unserializable"
    return "error"


def instrument(app: Any, url: str | None) -> None:
    """Count ``app``'s events and handlers; serve the metrics at ``url`` (``None``: nowhere).

    Called by ``init_app`` with ``EVENTLIB_METRICS = True``.
    """
    folder = os.environ.get(MULTIPROC_DIR)
    if folder:
        # Each process writes its files there at its first count: a missing folder would fail
        # in the middle of a handler instead of here.
        os.makedirs(folder, exist_ok=True)
    metrics()
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, sender=app)
    if url is not None:
        app.add_url_rule(url, endpoint="eventlib_metrics", view_func=view, methods=["GET"])


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, and its content type.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) the counts of every process that
    wrote to the folder, added up; otherwise this process's, with prometheus_client's default
    collectors (process, platform, GC).
    """
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def view() -> tuple[bytes, int, dict[str, str]]:
    """A Flask view of :func:`exposition`: ``app.add_url_rule("/ops/metrics", view_func=view)``."""
    body, content_type = exposition()
    return body, 200, {"Content-Type": content_type}


def serve(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve :func:`exposition` over HTTP from a thread of this process (a machine with workers
    and no web process; multiprocess mode reads the folder of every process). Returns the server
    (``server.shutdown()`` stops it)."""
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    server, _thread = start_http_server(port, addr, registry=registry)
    return server


def main(argv: list[str] | None = None) -> None:
    """``python -m flask_eventlib.metrics --port 9808``: serve the metrics of this machine's
    processes (``PROMETHEUS_MULTIPROC_DIR``) until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m flask_eventlib.metrics", description=main.__doc__)
    parser.add_argument("--port", type=int, default=9808)
    parser.add_argument("--addr", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    args = parser.parse_args(argv)
    if not os.environ.get(MULTIPROC_DIR):
        parser.error(f"set {MULTIPROC_DIR} to the folder the workers write their metrics to")
    server = serve(args.port, args.addr)
    print(f"Serving the metrics of {os.environ[MULTIPROC_DIR]} on http://{args.addr}:{args.port}/", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
