"""The example's event registry.

The example keeps its events and function handlers in a registry of its own instead of the
process-wide default: then it can share a process with another app that also has a ``deals``
blueprint (the test suite's sample app does). An app alone in its process can drop this, use
``EventLib()`` without ``registry=`` and write ``@handler("deals.DealClick")``.
"""

from __future__ import annotations

from flask_eventlib import Registry

#: Every event of the example, and its function handlers.
registry = Registry()
