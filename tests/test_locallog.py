"""The local log: events survive the death of the process that logged them, and each dead segment
is recovered by exactly one process. Real files, real processes killed with SIGKILL."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_eventlib import signals
from flask_eventlib.locallog import LocalLog, Ticket
from flask_eventlib.publishing import Sender
from tests.conftest import wait_for


def events(n: int, prefix: str = "e") -> list[str]:
    return [json.dumps({"id": f"{prefix}{i}", "name": "x.Y"}) for i in range(n)]


class Collect:
    """A ``submit`` for :meth:`LocalLog.recover` that keeps what it was given."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.tickets: list[Ticket] = []

    def __call__(self, messages: list[str], tickets: list[Ticket]) -> None:
        self.messages.extend(messages)
        self.tickets.extend(tickets)


def _log_and_die(folder: str, n: int, release: int, durability: str = "process") -> None:
    """In a child: append ``n`` events one by one, release the first ``release``, die by SIGKILL."""
    log = LocalLog(folder, durability=durability)
    tickets = [log.append([message]) for message in events(n)]
    log.release([t for t in tickets[:release] if t is not None])
    os.kill(os.getpid(), signal.SIGKILL)


def die_after_logging(folder: Path, n: int, release: int = 0, durability: str = "process") -> None:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_log_and_die, args=(str(folder), n, release, durability))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.log"))


@pytest.mark.parametrize("durability", ["process", "machine"])
def test_events_of_a_killed_process_are_recovered_then_removed(tmp_path: Path, durability: str) -> None:
    die_after_logging(tmp_path, 25, durability=durability)
    assert len(segments(tmp_path)) == 1
    log = LocalLog(str(tmp_path))
    got = Collect()
    assert log.recover(got, max_batch=10) == 25
    assert [json.loads(m)["id"] for m in got.messages] == [f"e{i}" for i in range(25)]
    assert log.pending() == 25
    # Until the sender released them, the segment stays (locked, so nobody else sends it too).
    assert LocalLog(str(tmp_path)).recover(Collect()) == 0
    log.release(got.tickets)
    assert segments(tmp_path) == []
    assert log.pending() == 0


def test_only_events_past_the_watermark_are_sent_again(tmp_path: Path) -> None:
    die_after_logging(tmp_path, 10, release=6)
    got = Collect()
    assert LocalLog(str(tmp_path)).recover(got) == 4
    assert [json.loads(m)["id"] for m in got.messages] == ["e6", "e7", "e8", "e9"]


def test_a_live_process_segment_is_not_taken(tmp_path: Path) -> None:
    writer = LocalLog(str(tmp_path))
    writer.append(events(3))
    assert LocalLog(str(tmp_path)).recover(Collect()) == 0
    assert writer.pending() == 3


def test_a_segment_whose_events_were_all_sent_goes_at_close(tmp_path: Path) -> None:
    log = LocalLog(str(tmp_path))
    ticket = log.append(events(2))
    assert ticket is not None and len(segments(tmp_path)) == 1
    log.release([ticket])
    log.close()
    assert segments(tmp_path) == []


def test_unsent_events_stay_at_close_for_the_next_process(tmp_path: Path) -> None:
    log = LocalLog(str(tmp_path))
    log.append(events(2))
    log.close()
    got = Collect()
    assert LocalLog(str(tmp_path)).recover(got) == 2


def test_a_request_s_appends_share_one_ticket_and_others_between_start_a_new_one(tmp_path: Path) -> None:
    log = LocalLog(str(tmp_path))
    first = log.append(events(1, "a"))
    assert first is not None
    # The request's next events land right behind its ticket: the same ticket covers them.
    assert log.append(events(2, "b"), after=first) is first
    assert first.count == 3
    # Another thread's append came between: the request's next append gets a ticket of its own.
    other = log.append(events(1, "c"))
    assert other is not None and other is not first
    later = log.append(events(1, "d"), after=first)
    assert later is not None and later is not first and later.count == 1
    assert log.pending() == 5
    log.release([first])
    assert log.pending() == 2
    log.close()
    got = Collect()
    assert LocalLog(str(tmp_path)).recover(got) == 2
    assert [json.loads(m)["id"] for m in got.messages] == ["c0", "d0"]


def _recover_into(folder: str, out: str) -> None:
    log = LocalLog(folder)
    got = Collect()
    log.recover(got)
    with open(out, "w") as file:
        json.dump([json.loads(m)["id"] for m in got.messages], file)
    log.release(got.tickets)


def test_each_dead_segment_is_taken_by_exactly_one_of_several_recoverers(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    for _ in range(6):
        die_after_logging(folder, 50)
    assert len(segments(folder)) == 6
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"out{i}.json" for i in range(4)]
    children = [ctx.Process(target=_recover_into, args=(str(folder), str(out))) for out in outs]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    got = [event_id for out in outs for event_id in json.loads(out.read_text())]
    assert len(got) == 300  # 6 processes x 50 events, none twice
    assert len(set(got)) == 50  # each process used the ids e0..e49
    assert sorted(got) == sorted(f"e{i}" for i in range(50) for _ in range(6))
    assert segments(folder) == []


def test_a_torn_last_line_and_damaged_bytes_are_skipped(tmp_path: Path) -> None:
    die_after_logging(tmp_path, 3)
    (path,) = segments(tmp_path)
    with open(path, "ab") as file:
        file.write(b"\0\0\0\0\n")  # what a power loss can leave: a block of zeros
        file.write(b'{"id": "torn"')  # and a line cut short
    got = Collect()
    assert LocalLog(str(tmp_path)).recover(got) == 3
    assert [json.loads(m)["id"] for m in got.messages] == ["e0", "e1", "e2"]


def test_the_log_starts_new_segments_and_removes_sent_ones(tmp_path: Path) -> None:
    log = LocalLog(str(tmp_path), segment_bytes=200)
    tickets = [log.append([m]) for m in events(40)]
    assert len(segments(tmp_path)) > 3
    log.release([t for t in tickets if t is not None])
    assert len(segments(tmp_path)) == 1  # the one that takes the next appends


def test_machine_durability_syncs_a_segment_when_the_next_one_starts(tmp_path: Path) -> None:
    """A request's events may straddle two segments; syncing its last ticket covers both."""
    log = LocalLog(str(tmp_path), durability="machine", segment_bytes=200)
    tickets = [log.append([m]) for m in events(10)]
    assert all(t is not None for t in tickets)
    first, last = tickets[0], tickets[-1]
    assert first is not None and last is not None and first.segment is not last.segment
    log.sync(last)
    for ticket in tickets:
        assert ticket is not None and ticket.segment.synced >= ticket.end


def test_a_full_log_keeps_events_in_memory_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    log = LocalLog(str(tmp_path), max_bytes=1000, segment_bytes=300, signal_sender="app")
    with signals.local_log_failed.connected_to(receiver, sender="app"):
        tickets = [log.append([m]) for m in events(60)]
    assert None in tickets and tickets[0] is not None
    assert log.unprotected == tickets.count(None) > 0
    assert seen and "max 1000" in seen[0]["reason"]
    assert "cannot keep events" in caplog.text
    # Once the sender caught up, events are kept again.
    log.release([t for t in tickets if t is not None])
    assert log.append(events(1)) is not None


def test_an_event_kept_after_a_failure_says_the_log_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One segment of 300 bytes and room for no second: a large event cannot be kept, a small one
    # that fits the segment's rest can; that one says so, whichever way the append goes.
    log = LocalLog(str(tmp_path), max_bytes=400, segment_bytes=300)
    assert log.append(["x" * 200]) is not None
    assert log.append(["y" * 100]) is None
    assert "cannot keep events" in caplog.text and "keeps events again" not in caplog.text
    ticket = log.append(["z" * 20])
    assert ticket is not None and ticket.count == 1
    assert "keeps events again" in caplog.text
    assert log.unprotected == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB filesystem (tmpfs), mounted for the test: a disk that fills up for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (./dev.sh test runs as root in CI)")
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_disk_that_fills_up_never_makes_append_raise(small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = LocalLog(str(small_disk / "log"), segment_bytes=16 * 1024)
    tickets = [log.append([m]) for m in events(5000)]  # about 150 KB
    kept = [t for t in tickets if t is not None]
    assert kept and log.unprotected == len(tickets) - len(kept) > 0
    assert "cannot keep events" in caplog.text and "No space left" in caplog.text
    log.close()
    # What was kept is whole: the next process recovers exactly those events.
    got = Collect()
    assert LocalLog(str(small_disk / "log")).recover(got) == len(kept)
    assert [json.loads(m)["id"] for m in got.messages] == [f"e{i}" for i in range(len(kept))]


def test_a_folder_that_cannot_be_made_keeps_events_in_memory(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    log = LocalLog(str(tmp_path / "a-file" / "log"))
    assert log.append(events(3)) is None
    assert log.unprotected == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only filesystem needs root")
def test_a_read_only_filesystem_keeps_events_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
    try:
        log = LocalLog(str(folder / "log"))
        assert log.append(events(3)) is None
        assert log.unprotected == 3
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_the_sender_releases_what_the_broker_took_and_recovers_dead_segments(tmp_path: Path) -> None:
    die_after_logging(tmp_path / "log", 30)
    sent: list[str] = []
    log = LocalLog(str(tmp_path / "log"))
    sender = Sender(sent.extend, local_log=log, recover_interval=0.05)
    sender.start()
    wait_for(lambda: len(sent) >= 30, timeout=10, what="the dead process's events")
    ticket = log.append(events(5, prefix="live"))
    assert ticket is not None
    sender.submit(events(5, prefix="live"), [ticket])
    assert sender.flush(10)
    assert sorted(json.loads(m)["id"] for m in sent) == sorted(
        [f"e{i}" for i in range(30)] + [f"live{i}" for i in range(5)]
    )
    wait_for(lambda: log.pending() == 0, timeout=10, what="the recovered events to be released")
    assert [p.name for p in segments(tmp_path / "log")] == [Path(ticket.segment.path).name]


def test_recover_command_sends_a_dead_process_events(tmp_path: Path) -> None:
    """``flask eventlib recover`` sends what a killed process left, with no request."""
    folder = tmp_path / "log"
    die_after_logging(folder, 7)
    app_module = tmp_path / "recoverapp.py"
    app_module.write_text(
        "from flask import Flask\n"
        "from flask_eventlib import EventLib\n"
        "app = Flask(__name__)\n"
        f"app.config.update(EVENTLIB_LOCAL_LOG_DIR={str(folder)!r},\n"
        f"    EVENTLIB_FILESYSTEM_BROKER_DIR={str(tmp_path / 'broker')!r},\n"
        f"    EVENTLIB_SPOOL_PATH={str(tmp_path / 'spool.sqlite3')!r}, EVENTLIB_HTTP_ENABLED=False)\n"
        "EventLib(app)\n"
    )
    env = {**os.environ, "FLASK_APP": "recoverapp:app", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "eventlib", "recover"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Recovered 7 events" in result.stdout
    assert segments(folder) == []
    assert sorted(queued_event_ids(tmp_path / "broker" / "queue")) == [f"e{i}" for i in range(7)]


def queued_event_ids(folder: Path) -> list[str]:
    """The ids of the events in the messages kombu's filesystem transport holds in ``folder``."""
    ids = []
    for path in folder.glob("*.msg"):
        message = json.loads(path.read_text())
        body = json.loads(base64.b64decode(message["body"]))
        ids += [json.loads(event)["id"] for event in body[0][0]]
    return ids
