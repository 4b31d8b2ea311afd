"""Faults the tests inject, written once: a server that never answers, SQLite files that cannot be used."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and reads, but never answers (a broker
    or Redis that hangs, as when SIGSTOPped or behind a network blackhole); yields its port.

    It listens before the block starts, so a client can never race its start.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def corrupt_sqlite_file(tmp_path: Path) -> str:
    """A file in the SQLite file's place that is not a database."""
    path = tmp_path / "file.sqlite3"
    path.write_bytes(b"this is not a SQLite database\n" * 200)
    return str(path)


def sqlite_file_whose_folder_cannot_be_made(tmp_path: Path) -> str:
    """A path whose parent folder cannot be created (a file stands in its way)."""
    (tmp_path / "a-file").write_text("")
    return str(tmp_path / "a-file" / "data" / "file.sqlite3")


#: The ways a SQLite file cannot be used, by name: each makes such a path in a folder.
BROKEN_SQLITE: dict[str, Callable[[Path], str]] = {
    "corrupt file": corrupt_sqlite_file,
    "folder cannot be made": sqlite_file_whose_folder_cannot_be_made,
}
