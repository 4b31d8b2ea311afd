"""The benchmark suite runs: ``python -m bench --quick`` prints every row with a number.

Benchmarks are scripts, not timed tests: nothing here asserts a time or a ratio's value.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import redis

from bench.measure import CpuTimes, Report, Row, Target, chunks, median, percentile, table
from bench.suite import JS_CLIENT
from tests.conftest import REDIS_URL, ROOT

ROWS = [
    "1a",
    "1b",
    "1c",
    "1d",
    "2a",
    "2b",
    "2d",
    "2c",
    "3a",
    "3b",
    "3c",
    "3d",
    "3e",
    "3f",
    "4a",
    "4b",
    "4c",
    "4d",
    "4e",
    "5",
    "6a",
    "6b",
    "7a",
    "7b",
    "9a",
    "9b",
    "9c",
]
#: ``python -m bench.streams``: the streams' rows, in a script of their own.
STREAM_ROWS = ["8a", "8b", "8c", "8d", "8e"]


def test_percentiles_and_results() -> None:
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7], 99) == 7
    rows = [
        Row("x", "time", "1 µs", "10 µs", 0.1, Target(0.05)),
        Row("y", "rate", "4/s", "1/s", 4.0, Target(3.0, at_most=False)),
        Row("z", "size", "", "", None, Target(1.0), missing="n/a (not built)"),
        # Rounds: the median decides; a round on the wrong side of the target makes it borderline.
        Row("r", "rounds", "", "", 1.1, Target(1.15), rounds=[1.05, 1.1, 1.2]),
        Row("s", "rounds", "", "", 1.1, Target(1.15), rounds=[1.05, 1.1, 1.12]),
    ]
    assert [row.result for row in rows] == ["FAIL", "pass", "n/a", "borderline", "pass"]
    assert "| z | size |  |  | n/a (not built) | — | ≤ 1.00 | n/a |" in table(rows)
    assert "| r | rounds |  |  | 1.100 | 1.050 to 1.200 (3) | ≤ 1.15 | borderline |" in table(rows)
    assert median([3, 1, 2]) == 2 and median([1, 2, 3, 4]) == 2.5
    assert [list(part) for part in chunks([1, 2, 3, 4, 5, 6, 7], 3)] == [[1, 2], [3, 4], [5, 6]]


def test_a_target_past_its_bound_is_named() -> None:
    floor = Row("2d", "floor", "", "", 1.173)
    ceiling = Row("3c", "ceiling", "", "", 5.5)
    rows = [
        Row("2a", "time", "", "", 1.34, Target(1.15), bound=floor),
        Row("3a", "rate", "", "", 3.5, Target(6.0, at_most=False), bound=ceiling),
        # Bounds that leave room for the target: nothing to say, whatever the row's own result.
        Row("4a", "rate", "", "", 0.8, Target(0.85, at_most=False), bound=Row("4c", "floor", "", "", 0.92)),
        Row("2x", "time", "", "", 1.2, Target(1.15), bound=Row("2y", "floor", "", "", 1.10)),
        floor,
        ceiling,
    ]
    notes = Report([], rows).bound_notes()
    assert notes == [
        "2a's target (≤ 1.15) lies past its floor 2d (1.173) in this run: on this machine, even 2d's work "
        "alone misses the target.",
        "3a's target (≥ 6.00) lies past its ceiling 3c (5.500) in this run: on this machine, even 3c's work "
        "alone misses the target.",
    ]
    assert notes[0] in Report(["a machine"], rows).render()
    assert rows[0].result == "FAIL"  # the note explains a result; it does not change it


def test_steal_is_the_share_of_wanted_cpu_time_the_hypervisor_took() -> None:
    before = CpuTimes(busy=1000, steal=50)
    assert CpuTimes(busy=1900, steal=150).steal_since(before) == 0.1
    assert CpuTimes(busy=1000, steal=50).steal_since(before) is None  # nothing ran
    assert CpuTimes(busy=1000, steal=50).steal_since(None) is None
    now = CpuTimes.now()
    if now is not None:  # Linux: the first line of /proc/stat
        assert now.busy > 0 and now.steal >= 0


@pytest.mark.worker
@pytest.mark.parametrize(
    ("module", "expected"), [("bench", ROWS), ("bench.streams", STREAM_ROWS)], ids=["suite", "streams"]
)
def test_quick_run_prints_every_row_with_a_ratio(module: str, expected: list[str], redis_client: redis.Redis) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--redis-url", REDIS_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    machine = done.stdout.splitlines()[0]
    assert machine.startswith("Machine: ") and " cores; " in machine and "Redis server 7" in machine
    cells = {
        line.split(" | ")[0].strip("| "): [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in done.stdout.splitlines()
        if re.match(r"\| \d[a-z]? \|", line)
    }
    assert list(cells) == expected
    for row, (_, _what, ours, baseline, ratio, spread, _target, result) in cells.items():
        if row == "5" and not JS_CLIENT.exists():
            assert (ratio, result) == ("n/a (not built)", "n/a")
            continue
        assert float(ratio) > 0, (row, ratio)
        assert re.search(r"\d", ours) and re.search(r"\d", baseline), (row, ours, baseline)
        assert result in {"pass", "borderline", "FAIL", "info"}, (row, result)
        assert re.fullmatch(r"\S+ to \S+ \(\d+\)", spread) or (row == "5" and spread == "—"), (row, spread)
    if module == "bench" and CpuTimes.now() is not None:
        assert re.search(r"^- The hypervisor took \d+\.\d% of the CPU time this run wanted", done.stdout, re.M)
        assert re.search(r"^\[bench\]   \d+\.\d s, steal \d+\.\d%$", done.stderr, re.M), done.stderr[-2000:]
    # The run deleted its queues and keys.
    run_id = re.search(r"\[bench\] run (\w+)", done.stderr)
    assert run_id is not None, done.stderr[-2000:]
    assert not list(redis_client.scan_iter(match=f"*bench*{run_id.group(1)}*"))
