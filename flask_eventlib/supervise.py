"""Run a command as a child process and start it again when it dies: ``flask eventlib worker --restart``.

A Celery worker can die where no handler's failure is to blame: SIGKILL, the kernel's OOM killer, or
kombu's Redis transport raising while the broker restarts. Without a supervisor its events wait
until someone starts a new worker. :class:`Supervisor` is the small one the CLI offers: it starts
the command, waits, and on an abnormal exit starts it again after a growing delay. SIGTERM and
SIGINT are forwarded to the child for its graceful stop and end the supervision.

This module knows nothing of Flask or Celery: it runs any command, so its tests use tiny ones.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

logger = logging.getLogger(__name__)

#: The signals that stop the supervisor; each is passed on to the child as it came.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Exit statuses of a wrong command line (click's usage error, BSD's ``EX_USAGE``): starting the
#: same command again would fail the same way, so the supervisor gives up.
USAGE_ERRORS = frozenset({2, 64})


@dataclass(frozen=True)
class Backoff:
    """How long to wait before starting the child again.

    :param first: the delay after the first abnormal exit, in seconds.
    :param maximum: the delay doubles after each abnormal exit, up to this.
    :param reset_after: a child that ran this long before it died was healthy: the next delay is
        ``first`` again.
    """

    first: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0


def describe_status(status: int) -> str:
    """``"exited with status 1"`` or ``"was killed by SIGKILL"`` for a :attr:`Popen.returncode`."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


class Supervisor:
    """Start ``command``, and start it again each time it exits abnormally, until told to stop.

    :param command: the child's argv.
    :param name: how the log names the child (``"the worker"``).
    :param backoff: the delays between restarts.
    :param env: the child's environment (the supervisor's by default).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        name: str = "the child",
        backoff: Backoff | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.name = name
        self.backoff = backoff or Backoff()
        self.env = dict(env) if env is not None else None
        #: How many times the child was started again after an abnormal exit.
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._stop_signal: int | None = None
        self._stopping = threading.Event()
        self._signalled: set[int] = set()

    def run(self) -> int:
        """Supervise until the child exits normally or a stop signal came; return the exit status to use.

        It is 0 when the child exited with 0 (also after a forwarded SIGTERM, as Celery's warm
        shutdown does) or when a stop came while no child ran; otherwise the child's status, with a
        signal's death given as ``128 + signal number``, as shells do. Call it from the main thread:
        it installs handlers for :data:`STOP_SIGNALS` and restores the previous ones at the end.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        delay = self.backoff.first
        while not self._stopping.is_set():
            started = time.monotonic()
            child = self._start()
            status = child.wait()
            ran = time.monotonic() - started
            self._reap(child.pid)
            if self._stopping.is_set():
                logger.info("%s (pid %d) %s after the stop signal", self.name, child.pid, describe_status(status))
                return _exit_code(status)
            if status == 0:
                logger.info("%s (pid %d) exited normally; not starting another", self.name, child.pid)
                return 0
            if status in USAGE_ERRORS:
                logger.error(
                    "%s (pid %d) %s, a usage error: not starting it again, fix the command line",
                    self.name,
                    child.pid,
                    describe_status(status),
                )
                return status
            if ran >= self.backoff.reset_after:
                delay = self.backoff.first
            logger.warning(
                "%s (pid %d) %s after %.1f s; starting a new one in %g s",
                self.name,
                child.pid,
                describe_status(status),
                ran,
                delay,
            )
            # Interrupted at once by a stop signal: its handler sets the event.
            if self._stopping.wait(delay):
                break
            self.restarts += 1
            delay = min(delay * 2, self.backoff.maximum)
        logger.info("stopped before starting %s again", self.name)
        return 0

    def _start(self) -> subprocess.Popen[bytes]:
        # A process group of its own: a Ctrl-C in the terminal reaches only the supervisor, which
        # forwards it once (Celery takes a second SIGINT as "cold shutdown"), and the group lets
        # the supervisor kill the pool processes a dead worker left behind.
        child = subprocess.Popen(self.command, env=self.env, process_group=0)
        self._child = child
        logger.info("started %s (pid %d): %s", self.name, child.pid, shlex.join(self.command))
        if self._stop_signal is not None and child.pid not in self._signalled:
            # The stop came while the child was being started, before it could be forwarded.
            self._forward(self._stop_signal)
        return child

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = self._stop_signal is None
        self._stop_signal = signum
        self._stopping.set()
        child = self._child
        if first and child is not None and child.returncode is None:
            logger.info("%s: stopping %s (pid %d)", signal.Signals(signum).name, self.name, child.pid)
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        child = self._child
        if child is None:
            return
        child.send_signal(signum)  # does nothing once the child has been reaped
        self._signalled.add(child.pid)

    def _reap(self, pgid: int) -> None:
        """Kill what is left of the child's process group (a dead worker's pool processes).

        They can no longer acknowledge their messages, which the broker redelivers to the next
        worker; left alive they would only hold memory and run handlers twice.
        """
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty: nothing was left behind


def _exit_code(status: int) -> int:
    return 128 - status if status < 0 else status
