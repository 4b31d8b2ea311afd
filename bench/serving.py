"""Benchmarks 2 (time to response) and 4 (ingest): the app under gunicorn, real HTTP clients."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Child, cpu_seconds

#: The body the ingest benchmark posts (no Origin header: a server-side client passes the check).
INGEST_PATH = "/event/log"
BARE_PATH = "/bare"
#: Reads and parses the JSON body and answers as the ingest does: the floor of any ingest.
PARSED_PATH = "/parsed"


def ingest_body(key: str) -> str:
    return json.dumps({"event": "bench.Ping", "data": {"key": key, "n": 1, "total": 0}})


#: Events in each POST of the batch rounds (row 4d).
BATCH_EVENTS = 10


def batch_body(key: str) -> str:
    """A batch of :data:`BATCH_EVENTS` events in the shape the JS client sends (``{"events": [...]}``)."""
    events = [{"event": "bench.Ping", "data": {"key": key, "n": n, "total": 0}} for n in range(BATCH_EVENTS)]
    return json.dumps({"events": events})


def request_once(port: int, path: str, method: str = "GET", body: str | None = None) -> tuple[int, float]:
    """One request on a new connection (sync workers close it): status and seconds to the whole response."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


def response_times(port: int, paths: list[str], requests: int, rounds: int = 10) -> dict[str, list[float]]:
    """Seconds to response of ``requests`` sequential requests per path.

    The paths take turns in blocks (``rounds`` blocks each), so a drift of the machine touches them
    alike, while the background publishing a request leaves behind falls on requests of its own
    kind, not on the baseline's.
    """
    times: dict[str, list[float]] = {path: [] for path in paths}
    for path in paths:  # warm up both workers
        for _ in range(10):
            request_once(port, path)
    block = max(1, requests // rounds)
    for _ in range(rounds):
        for path in paths:
            for _ in range(block):
                status, seconds = request_once(port, path)
                if status >= 400:
                    raise RuntimeError(f"GET {path} answered {status}")
                times[path].append(seconds)
    return times


# -- load generators --------------------------------------------------------------------------------


def ensure_wrk(install: bool) -> str | None:
    """The ``wrk`` binary; installed with apt-get when missing, ``install`` is set and we are root."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("[bench] wrk is not installed (apt-get install wrk); using the Python load generator", file=sys.stderr)
        return None
    print("[bench] installing wrk with apt-get (the load generator of benchmark 4)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False, capture_output=True)
    if done.returncode != 0:
        print(f"[bench] apt-get install wrk failed: {done.stderr.decode()[-300:]}", file=sys.stderr)
    return shutil.which("wrk")


@dataclass
class Load:
    """What a load generator measured on one endpoint."""

    requests: int
    seconds: float
    failed: int  #: responses other than 2xx, and socket errors other than reads of closed connections
    tool: str
    #: CPU seconds the server's workers used meanwhile (``None`` if unknown).
    cpu: float | None = None

    @property
    def cpu_per_request(self) -> float | None:
        return None if self.cpu is None or not self.requests else self.cpu / self.requests

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def run_wrk(wrk: str, port: int, path: str, body: str, seconds: float, folder: Path, connections: int) -> Load:
    """``wrk`` posting ``body`` as JSON to ``path`` for ``seconds`` (one thread, ``connections`` connections)."""
    script = folder / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script)]
    done = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    output = done.stdout + done.stderr
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    if done.returncode != 0 or total is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {output[-500:]}")
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read \d+, write (\d+), timeout (\d+)", output)
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return Load(int(total.group(1)), float(total.group(2)) * unit, failed, "wrk")


def run_python_load(port: int, path: str, body: str, seconds: float, connections: int) -> Load:
    """The fallback when wrk cannot be had: ``connections`` threads posting sequentially."""
    counts = [0] * connections
    failures = [0] * connections
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        while time.perf_counter() < deadline:
            try:
                status, _ = request_once(port, path, "POST", body)
            except OSError:
                failures[index] += 1
                continue
            if 200 <= status < 300:
                counts[index] += 1
            else:
                failures[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(sum(counts), time.perf_counter() - started, sum(failures), "python threads")


def load(wrk: str | None, port: int, path: str, body: str, seconds: float, folder: Path, connections: int) -> Load:
    if wrk is not None:
        return run_wrk(wrk, port, path, body, seconds, folder, connections)
    return run_python_load(port, path, body, seconds, connections)


@dataclass
class Comparison:
    """Rounds of load on the bare endpoint, each followed at once by a round on the ingest endpoint."""

    bare: list[Load]
    ingest: list[Load]
    #: The floor endpoint's rounds (:data:`PARSED_PATH`), each between a bare and an ingest round;
    #: empty when not asked for.
    parsed: list[Load] = field(default_factory=list)
    #: The ingest's rounds posting batches (:func:`batch_body`), each after an ingest round; empty
    #: when not asked for.
    batch: list[Load] = field(default_factory=list)

    def total(self, loads: list[Load]) -> Load:
        requests, seconds = sum(x.requests for x in loads), sum(x.seconds for x in loads)
        cpu = None if any(x.cpu is None for x in loads) else sum(x.cpu or 0.0 for x in loads)
        return Load(requests, seconds, sum(x.failed for x in loads), loads[0].tool, cpu)

    @property
    def ratios(self) -> list[float]:
        """Each round's ratio: a round and the next share the machine's mood of the moment."""
        return [i.per_second / b.per_second for b, i in zip(self.bare, self.ingest, strict=True)]

    @property
    def parsed_ratios(self) -> list[float]:
        """Each round's ratio of the floor endpoint to the bare one."""
        return [f.per_second / b.per_second for b, f in zip(self.bare, self.parsed, strict=True)]

    @property
    def batch_ratios(self) -> list[float]:
        """Each round's events/s in batches against the bare endpoint's requests/s."""
        return [BATCH_EVENTS * x.per_second / b.per_second for b, x in zip(self.bare, self.batch, strict=True)]


def compare_load(
    server: Child,
    port: int,
    wrk: str | None,
    body: str,
    seconds: float,
    folder: Path,
    connections: int,
    rounds: int,
    *,
    floor: bool = False,
    batch: str | None = None,
) -> Comparison:
    """Requests/s on the bare endpoint and on the ingest endpoint, alternating, ``seconds`` each in all.

    Also measures the CPU time the server's workers spend per request, which other processes on
    the machine disturb less than the rate.

    :param floor: measure :data:`PARSED_PATH` too, between each bare round and its ingest round.
    :param batch: a body of :data:`BATCH_EVENTS` events to post to the ingest too, after each
        ingest round.
    """
    paths = (BARE_PATH, PARSED_PATH, INGEST_PATH) if floor else (BARE_PATH, INGEST_PATH)
    for path in paths:  # warm up
        for _ in range(20):
            request_once(port, path, "POST", body)
    for _ in range(20 if batch is not None else 0):
        request_once(port, INGEST_PATH, "POST", batch)
    workers = server.children()
    result = Comparison([], [])

    def measured(path: str, posted: str = body) -> Load:
        before = cpu_seconds(workers)
        done = load(wrk, port, path, posted, seconds / rounds, folder, connections)
        after = cpu_seconds(workers)
        if before is not None and after is not None:
            done.cpu = after - before
        return done

    for _ in range(rounds):
        result.bare.append(measured(BARE_PATH))
        if floor:
            result.parsed.append(measured(PARSED_PATH))
        result.ingest.append(measured(INGEST_PATH))
        if batch is not None:
            result.batch.append(measured(INGEST_PATH, batch))
    return result
