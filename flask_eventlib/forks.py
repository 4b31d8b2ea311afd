"""This process's id without a system call, for the paths that run on every event or request.

``os.getpid()`` is a system call (glibc no longer caches it): about a percent of a browser
endpoint request's CPU where the sender checked it on every hand-over. The id is read once and
set again in a forked child, by a hook registered when this module is imported, before the hooks
of the modules that import it (``os.register_at_fork`` runs a child's hooks in that order).
"""

from __future__ import annotations

import os

#: ``[pid]``: this process's id; ``this_process[0] != saved`` means a fork happened since ``saved``.
this_process = [os.getpid()]


def _after_fork_in_child() -> None:
    this_process[0] = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
