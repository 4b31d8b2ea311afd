"""The sample worker with tracing on, its spans written to a file the test reads:
``celery -A tests.observability.traced_worker:celery worker``.

``SAMPLE_SPANS_PATH`` is the file: one JSON object per finished span, appended by whichever
process (a prefork child) finished it. ``SAMPLE_CONFIG`` should set ``EVENTLIB_TRACING``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class FileExporter(SpanExporter):
    """Appends each span as one line of JSON (a line is written at once: the children share the file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": f"{span.context.trace_id:032x}",
                        "span_id": f"{span.context.span_id:016x}",
                        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        "links": [f"{link.context.span_id:016x}" for link in span.links],
                        "attributes": dict(span.attributes or {}),
                        "pid": os.getpid(),
                    }
                )
            )
        with open(self.path, "a") as spans_file:
            spans_file.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["SAMPLE_SPANS_PATH"])))
trace.set_tracer_provider(provider)

from tests.sample.worker import app, celery  # noqa: E402  (after the provider: the app's spans use it)

__all__ = ["app", "celery"]
