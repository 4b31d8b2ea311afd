"""The chaos suite: real workers killed, a real Redis stopped, RabbitMQ cut off by a proxy; figures at the end.

``EVENTLIB_CHAOS_EVENTS`` scales the number of events (default 1000).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_for

CHAOS_EVENTS = int(os.environ.get("EVENTLIB_CHAOS_EVENTS", "1000"))
REPORT: list[str] = []


@pytest.fixture
def chaos_report() -> Iterator[list[str]]:
    """Lines appended here are printed in the test summary, even when the test passes."""
    yield REPORT


class PrivateRedis:
    """A redis-server of the test's own, durable (every write fsynced), that it can kill and restart."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; ./dev.sh test installs it (apt-get install redis-server)")
        self.binary = binary
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _pings(client), timeout=20, what="the private redis-server")
        client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.kill()
