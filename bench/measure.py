"""Figures and the table: percentiles, rows with their targets, the machine they ran on."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (nearest rank) of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(len(ordered), rank) - 1]


def micros(seconds: float) -> str:
    """A duration for the table: ``8.1 µs``, ``320 µs``, ``1.42 ms``, ``2.01 s``."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-4:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e6:.1f} µs"


@dataclass(frozen=True)
class Target:
    """``ratio <= value`` (``at_most``) or ``ratio >= value``."""

    value: float
    at_most: bool = True

    def met(self, ratio: float) -> bool:
        return ratio <= self.value if self.at_most else ratio >= self.value

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.value:.2f}"


@dataclass
class Row:
    """One line of the table: our figure, the baseline's, ``ours / baseline`` and the target."""

    id: str
    what: str
    ours: str
    baseline: str
    ratio: float | None
    target: Target | None = None
    #: Why there is no ratio ("n/a (...)"), shown in its place.
    missing: str = ""
    #: The ratio of each round, when the row ran in rounds; ``ratio`` is then their median.
    rounds: list[float] = field(default_factory=list)
    #: The row measuring the bound of this one in the same run: a floor (the least any
    #: implementation of the row does) or a ceiling (the most it can reach). When the bound's own
    #: median misses this row's target, the report says so (:meth:`Report.bound_notes`).
    bound: Row | None = None

    def fill_rounds(self, ours: str, baseline: str, ratios: Sequence[float]) -> None:
        """A row measured in rounds: its ratio is their median, its spread their range."""
        self.ours, self.baseline, self.rounds, self.ratio = ours, baseline, list(ratios), median(ratios)

    @property
    def result(self) -> str:
        """``pass`` or ``FAIL`` on the median; ``borderline`` when the median meets the target
        but a round does not (the spread crosses it)."""
        if self.ratio is None:
            return "n/a"
        if self.target is None:
            return "info"
        if not self.target.met(self.ratio):
            return "FAIL"
        return "pass" if all(self.target.met(r) for r in self.rounds) else "borderline"

    @property
    def spread(self) -> str:
        """The rounds' lowest and highest ratios, and how many rounds there were."""
        if not self.rounds:
            return "—"
        return f"{_ratio(min(self.rounds))} to {_ratio(max(self.rounds))} ({len(self.rounds)})"

    def cells(self) -> list[str]:
        ratio = (self.missing or "n/a") if self.ratio is None else _ratio(self.ratio)
        return [self.id, self.what, self.ours, self.baseline, ratio, self.spread, str(self.target or "—"), self.result]


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time so far, from ``/proc/stat`` (clock ticks, all cores): the time its
    processes ran, and the time the hypervisor gave to other machines while they wanted to run
    (*steal*). A virtual machine's figures move with its neighbours' load; steal shows it."""

    busy: int
    steal: int

    @classmethod
    def now(cls) -> CpuTimes | None:
        """The times so far; ``None`` without ``/proc/stat``."""
        try:
            with open("/proc/stat") as stat:
                fields = stat.readline().split()
        except OSError:
            return None
        if len(fields) < 9 or fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
        return cls(user + nice + system + irq + softirq, steal)

    def steal_since(self, earlier: CpuTimes | None) -> float | None:
        """The share of the CPU time wanted since ``earlier`` that the hypervisor took (steal over
        run plus steal); ``None`` when unknown or when nothing ran."""
        if earlier is None:
            return None
        busy, steal = self.busy - earlier.busy, self.steal - earlier.steal
        return steal / (busy + steal) if busy + steal > 0 else None


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    if not values:
        raise ValueError("no values")
    return float(statistics.median(values))


def chunks(samples: Sequence[float], count: int) -> list[Sequence[float]]:
    """``samples`` cut into ``count`` consecutive parts of (nearly) equal size."""
    size = max(1, len(samples) // count)
    return [samples[i * size : (i + 1) * size] for i in range(min(count, len(samples)))]


def _ratio(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


HEADER = ["#", "benchmark", "flask-eventlib", "baseline", "ratio (median)", "spread (rounds)", "target", "result"]


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (what the README shows)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Report:
    """What a run prints: the machine, the table and the notes under it."""

    machine: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        parts = ["Machine: " + "; ".join(self.machine), "", table(self.rows)]
        notes = [*self.notes, *self.bound_notes()]
        if notes:
            parts += ["", *[f"- {note}" for note in notes]]
        return "\n".join(parts)

    def bound_notes(self) -> list[str]:
        """A note for each row whose target lies past its bound's median: on this machine no
        implementation doing the bound's work meets the target, whatever the row's own result."""
        notes = []
        for row in self.rows:
            bound = row.bound
            if row.target is None or bound is None or bound.ratio is None or row.target.met(bound.ratio):
                continue
            kind = "floor" if row.target.at_most else "ceiling"
            notes.append(
                f"{row.id}'s target ({row.target}) lies past its {kind} {bound.id} ({_ratio(bound.ratio)}) "
                f"in this run: on this machine, even {bound.id}'s work alone misses the target."
            )
        return notes


def machine(redis_url: str, load_at_start: float) -> list[str]:
    """CPU, cores, OS, Python, Redis and the libraries measured, and the 1-minute load average
    when the run began (other processes on the machine skew the figures)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            found = re.search(r"^model name\s*:\s*(.+)$", info.read(), flags=re.M)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    try:
        server = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    except redis.RedisError:
        server = "?"
    versions = ", ".join(f"{name} {_version(name)}" for name in ("flask", "celery", "kombu", "redis", "gunicorn"))
    return [
        f"{cpu}, {os.cpu_count()} cores",
        _os_name(),
        f"Python {platform.python_version()}",
        f"Redis server {server}",
        versions,
        f"wrk {_wrk_version()}",
        f"load average {load_at_start:.2f} at start",
        dt.date.today().isoformat(),
    ]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as release:
            found = re.search(r'^PRETTY_NAME="?([^"\n]+)', release.read(), flags=re.M)
        if found:
            return found.group(1)
    except OSError:
        pass
    return platform.platform()


def _wrk_version() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        return "(not installed)"
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"wrk (\S+)", output.stdout + output.stderr)
    return found.group(1) if found else "?"
