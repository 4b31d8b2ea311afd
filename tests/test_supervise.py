"""The supervisor behind ``flask eventlib worker --restart``, with tiny real child processes.

The child programs count their runs in a file, so a test can say "fail twice, then succeed".
``tests/chaos/test_worker_restart.py`` runs the same supervisor around a real Celery worker.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flask_eventlib.supervise import Backoff, Supervisor, describe_status
from tests.conftest import ROOT, alive, wait_for

#: Run number ``n`` (from 1) of this child exits with ``STATUSES[n - 1]``, the last one forever after.
CHILD = """
import os, sys
path = sys.argv[1]
runs = int(open(path).read() or 0) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(runs))
statuses = [int(s) for s in sys.argv[2:]]
sys.exit(statuses[min(runs, len(statuses)) - 1])
"""


def child(tmp_path: Path, *statuses: int) -> list[str]:
    return [sys.executable, "-c", CHILD, str(tmp_path / "runs"), *map(str, statuses)]


def runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


def test_a_child_that_fails_is_started_again_until_it_exits_normally(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "flask_eventlib.supervise")
    supervisor = Supervisor(child(tmp_path, 3, 1, 0), name="the job", backoff=Backoff(first=0.01))
    assert supervisor.run() == 0
    assert runs(tmp_path) == 3
    assert supervisor.restarts == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [re.sub(r"\(pid \d+\)", "(pid N)", m).split(" after ")[0] for m in warnings] == [
        "the job (pid N) exited with status 3",
        "the job (pid N) exited with status 1",
    ]
    assert "exited normally; not starting another" in caplog.records[-1].getMessage()


def test_the_delay_doubles_up_to_its_maximum(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(child(tmp_path, 1, 1, 1, 1, 1, 0), backoff=Backoff(first=0.01, maximum=0.04))
    assert supervisor.run() == 0
    delays = [float(m) for m in re.findall(r"starting a new one in ([\d.]+) s", caplog.text)]
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04]


def test_the_delay_starts_again_after_a_child_that_ran_long_enough(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # reset_after=0: every child counts as having run fine for a while before it died.
    supervisor = Supervisor(child(tmp_path, 1, 1, 1, 0), backoff=Backoff(first=0.01, reset_after=0))
    assert supervisor.run() == 0
    assert re.findall(r"starting a new one in ([\d.]+) s", caplog.text) == ["0.01"] * 3


def test_a_usage_error_is_not_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(child(tmp_path, 2, 0), backoff=Backoff(first=0.01))
    assert supervisor.run() == 2
    assert runs(tmp_path) == 1
    assert "a usage error: not starting it again" in caplog.text


def test_a_death_by_signal_is_named() -> None:
    assert describe_status(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_status(1) == "exited with status 1"


#: Like a Celery worker and its pool: starts a process of its own, then dies; exits 0 when run again.
LEFTOVER = """
import subprocess, sys
from pathlib import Path
runs = Path(sys.argv[1])
if runs.exists():
    sys.exit(0)
runs.write_text("1")
proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
Path(sys.argv[2]).write_text(str(proc.pid))
sys.exit(1)
"""


def test_a_dead_childs_leftover_processes_are_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "leftover"
    command = [sys.executable, "-c", LEFTOVER, str(tmp_path / "runs"), str(pid_file)]
    assert Supervisor(command, backoff=Backoff(first=0.01)).run() == 0
    leftover = int(pid_file.read_text())
    wait_for(lambda: not alive(leftover), timeout=10, what=f"the leftover process {leftover} to be gone")


SUPERVISOR = """
import logging, sys
from flask_eventlib.supervise import Backoff, Supervisor
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
sys.exit(Supervisor(sys.argv[2:], backoff=Backoff(first=float(sys.argv[1]))).run())
"""


def start_supervisor(tmp_path: Path, first_delay: float, command: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = tmp_path / "supervisor.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, str(first_delay), *command],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


#: Writes the names of the signals it gets to argv[1]; a moment after the first it exits 0.
GRACEFUL = """
import signal, sys, time
from pathlib import Path
got, ready = Path(sys.argv[1]), Path(sys.argv[2])
names = []
def on(signum, frame):
    names.append(signal.Signals(signum).name)
    got.write_text(" ".join(names))
signal.signal(signal.SIGTERM, on)
signal.signal(signal.SIGINT, on)
ready.touch()
while not names:
    time.sleep(0.01)
time.sleep(0.2)  # a graceful stop takes a moment: a second signal would be counted
sys.exit(0)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_is_forwarded_once_and_ends_the_supervision(tmp_path: Path, sig: signal.Signals) -> None:
    got, ready = tmp_path / "got", tmp_path / "ready"
    process, log_path = start_supervisor(tmp_path, 0.01, [sys.executable, "-c", GRACEFUL, str(got), str(ready)])
    try:
        wait_for(ready.exists, timeout=20, what="the child to start")
        process.send_signal(sig)
        assert process.wait(timeout=10) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert got.read_text() == sig.name
    assert f"{sig.name}: stopping the child" in log_path.read_text()


def test_a_stop_during_the_delay_ends_it_at_once(tmp_path: Path) -> None:
    process, log_path = start_supervisor(tmp_path, 30.0, child(tmp_path, 1))
    try:
        wait_for(lambda: "starting a new one in 30 s" in log_path.read_text(), timeout=20, what="the first exit")
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - stopped_at < 5
    finally:
        if process.poll() is None:
            process.kill()
    assert runs(tmp_path) == 1
    assert "stopped before starting the child again" in log_path.read_text()
