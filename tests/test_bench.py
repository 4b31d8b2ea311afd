"""The benchmark suite runs: ``python -m bench --quick`` prints every row with a number.

Benchmarks are scripts, not timed tests: nothing here asserts a time or a ratio's value.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import redis

from bench.measure import Row, Target, chunks, median, percentile, table
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
    "4a",
    "4b",
    "4c",
    "4d",
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
    # The run deleted its queues and keys.
    run_id = re.search(r"\[bench\] run (\w+)", done.stderr)
    assert run_id is not None, done.stderr[-2000:]
    assert not list(redis_client.scan_iter(match=f"*bench*{run_id.group(1)}*"))
