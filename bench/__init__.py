"""flask-eventlib's benchmark suite (issue 6): ``python -m bench`` prints ratios measured side by side.

Every figure is compared with a baseline measured in the same run on the same machine, so the
ratios hold where absolute times do not. ``python -m bench --quick`` runs every benchmark on a
small size (the test suite does, to prove the code works; its figures mean nothing).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable

#: Called when this process exits, after flask-eventlib's own exit hooks (registered here, before
#: anything imports flask_eventlib, so they run first: ``atexit`` runs the last registered first).
_at_exit: list[Callable[[], None]] = []


def at_exit(call: Callable[[], None]) -> None:
    """Call ``call`` once this process's apps have written their last figures, at exit: the run's
    cleanup, for the heartbeat a web process writes as it ends (``EVENTLIB_CONSOLE_FIGURES``)."""
    _at_exit.append(call)


@atexit.register
def _last() -> None:
    for call in _at_exit:
        call()
