"""Nothing lost when a process that logged events dies: gunicorn workers SIGKILLed under load
(sync; gthread with --preload), a quick shutdown of gevent workers, a Celery prefork child killed
right after its handler logged an event. Every event of a 2xx answer has its handler run once.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_eventlib import flush
from flask_eventlib.state import state_of
from flask_eventlib.store import store_from_url
from tests.chaos.conftest import CHAOS_EVENTS
from tests.conftest import (
    REDIS_URL,
    ROOT,
    alive,
    clean_up_run,
    start_worker,
    stop_process,
    wait_for,
    wait_worker_ready,
)
from tests.sample import create_app


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over gunicorn's Unix socket: no TCP port to pick, so no port another process can take."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Gunicorn:
    """``gunicorn tests.chaos.webapp:app`` on a Unix socket, in a session of its own."""

    def __init__(self, folder: Path, env: dict[str, str], *options: str) -> None:
        self.folder = folder
        self.socket = ""
        self.log_path = folder / "gunicorn.log"
        self.env = env
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket = str(self.folder / f"gunicorn-{uuid.uuid4().hex[:6]}.sock")  # a new one each start
        command = [sys.executable, "-m", "gunicorn", f"--bind=unix:{self.socket}", "--log-level=warning"]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [*command, *self.options, "tests.chaos.webapp:app"],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._answers, timeout=60, what=f"gunicorn to answer (log: {self.log_path})")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log_path.read_text()}")
        try:
            return self.get("/ping")[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        conn = UnixHTTPConnection(self.socket)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def workers(self) -> list[int]:
        """The gunicorn workers: the master's children, from /proc."""
        assert self.process is not None
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    found.append(int(entry))
        return found

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def recovered(self) -> int:
        """Events the app's processes said they recovered from dead processes' segments."""
        text = self.log_path.read_text(errors="replace")
        return sum(int(n) for n in re.findall(r"recovering (\d+) events", text))


class Run:
    """One test's queue, records, worker and gunicorn settings."""

    def __init__(self, tmp_path: Path, redis_client: redis.Redis) -> None:
        self.tmp_path = tmp_path
        self.redis = redis_client
        self.queue = f"eventlib-death-{uuid.uuid4().hex[:8]}"
        self.record_key = f"eventlib-test:records:{self.queue}"
        self.store_url = f"{REDIS_URL}?prefix={self.record_key}:store:"
        self.spool_path = str(tmp_path / "spool.sqlite3")
        self.env = {
            "SAMPLE_BROKER_URL": REDIS_URL,
            "SAMPLE_QUEUE": self.queue,
            "SAMPLE_RECORD_KEY": self.record_key,
            "SAMPLE_STORE_URL": self.store_url,
            "SAMPLE_SPOOL_PATH": self.spool_path,
        }
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self, *extra: str) -> None:
        log_path = self.tmp_path / "worker.log"
        self.worker = start_worker(REDIS_URL, self.queue, self.record_key, log_path, *extra, env=self.env)
        wait_worker_ready(self.worker, log_path)

    def runs(self) -> dict[str, int]:
        raw = self.redis.hgetall(f"{self.record_key}:runs")
        return {key.decode(): int(value) for key, value in raw.items()}

    def segments(self) -> list[Path]:
        return sorted(Path(os.path.splitext(self.spool_path)[0] + "-log").glob("*.log"))

    def recover_command(self) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env, "FLASK_APP": "tests.chaos.webapp:app"}
        return subprocess.run(
            [sys.executable, "-m", "flask", "eventlib", "recover"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def close(self) -> None:
        if self.worker is not None:
            stop_process(self.worker)
        app = create_app(EVENTLIB_BROKER_URL=REDIS_URL, EVENTLIB_QUEUE=self.queue, EVENTLIB_DURABILITY="memory")
        clean_up_run(self.redis, self.record_key, app, self.queue)


@pytest.fixture
def run(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Run]:
    found = Run(tmp_path, redis_client)
    yield found
    found.close()


def load(server: Gunicorn, requests: int, *, clients: int = 4, during: Any = None, query: str = "") -> list[str]:
    """``requests`` requests of 1-3 events each from ``clients`` threads; the ids of the 2xx
    answers. ``during(done)`` is called after each answer with the number answered so far."""
    ids: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    answered = [0]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                status, body = server.get(f"/work/{rng.randint(1, 3)}{query}")
            except (OSError, http.client.HTTPException):
                continue  # a worker killed mid-request: no answer, so not logged as far as we know
            with lock:
                if 200 <= status < 300:
                    ids.extend(json.loads(body))
                answered[0] += 1
                done = answered[0]
            if during is not None:
                during(done)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids


def settle(run: Run, ids: list[str], what: str) -> dict[str, int]:
    """Wait until every id's handler ran; the runs per id."""
    wanted = set(ids)
    try:
        return wait_for(
            lambda: (found := run.runs()) and wanted <= set(found) and found, timeout=60, what=f"every event of {what}"
        )
    except pytest.fail.Exception:
        missing = wanted - set(run.runs())
        pytest.fail(
            f"{len(missing)} of the {len(wanted)} events of {what} were never handled (lost); "
            f"where they are: {whereabouts(run, missing)}"
        )


def whereabouts(run: Run, missing: set[str]) -> str:
    """Where events that never ran can be found: a segment file (and who holds its lock, from
    /proc/locks), the spool, the queue, the dead letters; for a failure's message."""
    found: list[str] = []
    stacks: set[str] = set()  # the live processes holding such a segment: their threads' stacks
    holders: dict[int, list[str]] = {}
    with open("/proc/locks") as locks:
        for line in locks:  # "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK":
                holders.setdefault(int(fields[5].rsplit(":", 1)[1]), []).append(fields[4])
    folder = Path(os.path.splitext(run.spool_path)[0] + "-log")
    for segment in sorted(folder.iterdir()) if folder.exists() else []:
        data = segment.read_bytes()
        header = data[:32].decode(errors="replace").strip()
        watermark = int(header.rsplit(" ", 1)[1]) if header[-16:].isdigit() else 0
        unsent = sum(1 for event_id in missing if event_id.encode() in data[watermark:])
        released = sum(1 for event_id in missing if event_id.encode() in data[:watermark])
        if unsent or released:
            locked = holders.get(segment.stat().st_ino, [])
            found.append(
                f"{unsent} unsent and {released} released (the broker or the spool took them) in {segment.name} "
                f"({header!r}, locked by {locked or 'no one'})"
            )
            stacks.update(locked)
    if os.path.exists(run.spool_path):
        with sqlite3.connect(run.spool_path) as spool:
            rows = [
                str(row)
                for table in spool.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                for row in spool.execute(f"SELECT * FROM {table[0]}")
            ]
        hits = sum(1 for event_id in missing if any(event_id in row for row in rows))
        if hits:
            found.append(f"{hits} in the spool")
    queued = run.redis.lrange(run.queue, 0, -1)
    hits = sum(1 for event_id in missing if any(event_id.encode() in message for message in queued))
    if hits:
        found.append(f"{hits} in the queue")
    letters = {letter.event_id for letter in store_from_url(run.store_url).dead_letters()}
    if missing & letters:
        found.append(f"{len(missing & letters)} dead-lettered")
    said = ""
    log_path = run.tmp_path / "gunicorn.log"
    if stacks and log_path.exists():  # what the app's processes said, latest last, each once
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if "recovering" not in line]
        said = "\nthe app's processes said, last:\n" + "\n".join(list(dict.fromkeys(reversed(lines)))[:20][::-1])
    return (
        ("; ".join(found) or "in no segment, spool, queue or dead letter")
        + said
        + "".join(map(stack_of, sorted(stacks)))
    )


def stack_of(pid: str) -> str:
    """What a live process's threads are doing (``py-spy dump``, when it is installed)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if spy is None:
        return ""
    try:
        done = subprocess.run([spy, "dump", "--pid", pid], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"\n(py-spy dump --pid {pid} failed: {exc})"
    return f"\nthe threads of {pid}:\n{done.stdout}{done.stderr}"


def assert_each_ran_once(ids: list[str], runs: dict[str, int]) -> None:
    """Every event of a 2xx answer ran once, and no event (answered or not) ran twice."""
    assert [i for i in ids if runs.get(i) != 1] == []
    assert [i for i, count in runs.items() if count != 1] == []


def figures(what: str, ids: list[str], runs: dict[str, int], extra: str = "") -> str:
    lost = len(set(ids) - set(runs))
    duplicated = sum(1 for count in runs.values() if count > 1)
    return (
        f"{what}: logged {len(ids)} (2xx), processed {len(set(ids) & set(runs))}, lost {lost}, "
        f"duplicated {duplicated}{extra}"
    )


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(["--worker-class=sync", "--workers=4"], id="sync"),
        pytest.param(["--worker-class=gthread", "--workers=2", "--threads=4", "--preload"], id="gthread-preload"),
        pytest.param(
            ["--worker-class=sync", "--workers=3", "--preload", "--max-requests=40", "--max-requests-jitter=10"],
            id="sync-preload-max-requests",
        ),
    ],
)
def test_gunicorn_workers_sigkilled_under_load_lose_nothing(mode: list[str], run: Run, chaos_report: list[str]) -> None:
    run.start_worker()
    server = Gunicorn(run.tmp_path, run.env, *mode)
    server.start()
    requests = max(CHAOS_EVENTS // 2, 100)
    kills: list[int] = []
    rng = random.Random(7)

    killing = threading.Lock()

    def kill_some(done: int) -> None:
        # Ten kills spread over the run, each of a random worker that is up.
        with killing:
            if len(kills) < 10 and done >= (len(kills) + 1) * requests // 11:
                workers = server.workers()
                if workers:
                    victim = rng.choice(workers)
                    kills.append(victim)
                    os.kill(victim, signal.SIGKILL)

    try:
        ids = load(server, requests, during=kill_some)
        assert len(kills) == 10
        assert ids, "no request succeeded"
        # While the app runs: its live processes (with --preload, the master) recover the dead ones' events.
        runs = settle(run, ids, "the requests answered 2xx")
    finally:
        server.stop()
    assert_each_ran_once(ids, runs)
    chaos_report.append(
        figures(
            f"gunicorn {mode[0].split('=')[1]} {' '.join(mode[1:])}, {requests} requests, 10 workers SIGKILLed",
            ids,
            runs,
            f"; events recovered from killed workers' local logs {server.recovered()}",
        )
    )


def test_a_quick_shutdown_of_gevent_workers_loses_nothing(run: Run, chaos_report: list[str]) -> None:
    """Ctrl-C (SIGINT to the process group) is gunicorn's quick shutdown; with
    ``--graceful-timeout=0`` the master SIGKILLs its workers right after telling them to quit, as
    a deploy that does not wait does (issue 16, item 7: events were lost). What the workers had
    not sent is in the local log: the next start of the app sends it, with no request arriving."""
    pytest.importorskip("gevent", reason="gevent is in the dev extras: ./dev.sh test installs it")
    run.start_worker()
    server = Gunicorn(
        run.tmp_path,
        run.env,
        "--worker-class=gevent",
        "--workers=2",
        "--worker-connections=100",
        "--graceful-timeout=0",
    )
    server.start()
    requests = max(CHAOS_EVENTS // 2, 100)
    stopped = threading.Event()

    def quick_shutdown(done: int) -> None:
        if done >= requests // 2 and not stopped.is_set():
            stopped.set()
            assert server.process is not None
            os.killpg(server.process.pid, signal.SIGINT)

    ids = load(server, requests, clients=40, during=quick_shutdown, query="?ms=30")
    assert server.process is not None
    server.process.wait(timeout=60)
    assert stopped.is_set() and ids
    left = len(run.segments())
    # The next start of the app, which no request reaches, sends what the workers left.
    server.start()
    try:
        runs = settle(run, ids, "the requests answered 2xx before the quick shutdown")
        wait_for(lambda: not run.segments(), timeout=30, what="the dead workers' segments to go")
    finally:
        server.stop()
    assert_each_ran_once(ids, runs)
    chaos_report.append(
        figures(
            f"gevent quick shutdown (SIGINT) after {requests // 2} of {requests} requests",
            ids,
            runs,
            f"; segments left at exit {left}, events recovered by the next start {server.recovered()}",
        )
    )


#: ``flask eventlib worker --restart``: a worker killed whole (threads, solo) is started again.
SUPERVISED = [sys.executable, "-m", "flask", "--app", "tests.sample.worker:app", "eventlib", "worker", "--restart"]


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_a_worker_killed_right_after_its_handler_logged_an_event_loses_nothing(
    pool: str, run: Run, chaos_report: list[str]
) -> None:
    """A handler logs ``ops.Work`` and its process is SIGKILLed at once, before its sender could
    send the event. Prefork: the pool child dies, the Celery main process (or a sibling) sends
    the event from the local log. Threads and solo: the whole worker dies; the supervisor starts a
    new one, which sends it. The killed handler's message is redelivered and its second run logs
    the same id again: the workers' dedup runs ``ops.Work`` once."""
    # Redis redelivers the killed worker's message after 5 s (the default is an hour).
    options = {"visibility_timeout": 5, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}
    run.env["SAMPLE_CELERY_CONFIG"] = json.dumps({"broker_transport_options": options})
    log_path = run.tmp_path / "worker.log"
    supervised = pool != "prefork"
    run.worker = start_worker(
        REDIS_URL,
        run.queue,
        run.record_key,
        log_path,
        f"--pool={pool}",
        command=SUPERVISED if supervised else None,
        env=run.env,
    )
    wait_worker_ready(run.worker, log_path)
    app = create_app(
        EVENTLIB_BROKER_URL=REDIS_URL,
        EVENTLIB_QUEUE=run.queue,
        EVENTLIB_STORE_URL=run.store_url,
        SAMPLE_RECORD_KEY=run.record_key,
        EVENTLIB_DURABILITY="memory",
    )
    count = 1 if supervised else max(CHAOS_EVENTS // 50, 10)  # each kill of a whole worker costs a restart
    with app.app_context():
        ids = [state_of().log("ops.LogsOnward", {"kill": True}) for _ in range(count)]
        assert flush(30)
    wanted = [f"{event_id}:next" for event_id in ids]
    runs = settle(run, wanted, "the events logged by the killed processes")
    assert alive(run.worker.pid)
    kills = sum(int(run.redis.get(f"{run.record_key}:kills:{event_id}") or 0) for event_id in ids)
    assert kills >= count  # each event's first run killed its process
    assert [i for i in wanted if runs.get(i) != 1] == []
    what = "pool child" if pool == "prefork" else "worker (supervised: started again)"
    chaos_report.append(
        figures(f"Celery {pool}: {count} handlers each logged an event, then their {what} was SIGKILLed", wanted, runs)
    )


def test_recover_command_after_every_process_died(run: Run, chaos_report: list[str]) -> None:
    """The whole app killed at once (no sibling left to recover): ``flask eventlib recover``."""
    run.start_worker()
    server = Gunicorn(run.tmp_path, run.env, "--worker-class=sync", "--workers=2")
    server.start()
    done = threading.Event()

    def kill_all(answered: int) -> None:
        if answered >= 40 and not done.is_set():
            done.set()
            assert server.process is not None
            os.killpg(server.process.pid, signal.SIGKILL)

    ids = load(server, 200, during=kill_all)
    assert server.process is not None
    server.process.wait(timeout=30)
    result = run.recover_command()
    assert result.returncode == 0, result.stderr
    runs = settle(run, ids, "the requests answered before the whole app was killed")
    assert [i for i in ids if runs.get(i) != 1] == []
    assert run.segments() == []
    chaos_report.append(figures("gunicorn master and workers SIGKILLed, then `flask eventlib recover`", ids, runs))
