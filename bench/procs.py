"""Child processes of a run (gunicorn, celery workers): start, wait for, stop; free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark could not run (a process died, a deadline passed)."""


def wait_for(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.01) -> T:
    """Poll ``check`` until it returns something truthy; raise :class:`BenchError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"Timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)  # a polling interval under a deadline


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Child:
    """A process of the run, in its own session (so it is stopped with its children), logging to a file."""

    def __init__(self, command: list[str], log_path: Path, bench_config: dict[str, Any]) -> None:
        self.command = command
        self.log_path = log_path
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "BENCH_CONFIG": json.dumps(bench_config), "PYTHONPATH": path}
        with log_path.open("wb") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"{' '.join(self.command[:4])} exited with {self.process.returncode}:\n{self.log_tail()}")

    def children(self) -> list[int]:
        """Process ids of the direct children (gunicorn's workers), from ``/proc``; empty elsewhere."""
        found = []
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if entry.isdigit():
                stat = _stat(int(entry))
                if stat is not None and int(stat[1]) == self.process.pid:
                    found.append(int(entry))
        return found

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def celery_worker(target: str, log_path: Path, bench_config: dict[str, Any], concurrency: int) -> Child:
    """``celery -A bench.wsgi:<target> worker`` with ``concurrency`` prefork children."""
    command = [sys.executable, "-m", "celery", "-A", f"bench.wsgi:{target}", "worker", "--pool=prefork"]
    command += [f"--concurrency={concurrency}", "--loglevel=WARNING", "--without-gossip", "--without-mingle"]
    command += ["--without-heartbeat", "--hostname", f"bench-{target}-{os.getpid()}@%h"]
    return Child(command, log_path, bench_config)


def gunicorn(port: int, log_path: Path, bench_config: dict[str, Any], workers: int) -> Child:
    """``gunicorn bench.wsgi:app`` with ``workers`` sync workers on 127.0.0.1:``port``."""
    command = [sys.executable, "-m", "gunicorn", "--worker-class=sync", f"--workers={workers}"]
    command += [f"--bind=127.0.0.1:{port}", "--log-level=warning", "bench.wsgi:app"]
    child = Child(command, log_path, bench_config)

    def up() -> bool:
        child.check_alive()
        return port_open(port)

    wait_for(up, timeout=60, what=f"gunicorn on port {port} (log: {log_path})")
    return child


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is field 0)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pids: list[int]) -> float | None:
    """User plus system CPU time the processes used so far; ``None`` without ``/proc``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        stat = _stat(pid)
        if stat is None:
            return None
        total += int(stat[11]) + int(stat[12])
    return total / ticks if pids else None
