"""What a benchmark run found: one figure per metric and system, or the reason it is missing."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: The two database schemas kongtask runs on (``--schemas``): v0.1.0's, its default, and upstream
#: graphile-worker 0.18's (``kongtask migrate --to latest``).
V0_1, V0_18 = "v0.1.0", "0.18"
SCHEMAS = (V0_1, V0_18)

#: The systems compared. ``kongtask`` runs ``async def`` tasks, ``kongtask-def`` their plain ``def``
#: twins, both on a v0.1.0 database; ``kongtask-0.18`` and ``kongtask-def-0.18`` the same on a 0.18
#: database. ``node`` is graphile-worker 0.1.0 (on v0.1.0); ``node-0.18`` graphile-worker 0.18.0 with
#: its defaults and ``node-0.18-batched`` the same with its local queue and batched completions (on
#: 0.18). The others are the SQL ceiling, the worker's statements in a tight loop with no worker
#: around them: ``psycopg`` and ``pgbench`` one job at a time (get_job, complete_job), the
#: ``-batched`` ones kongtask's batched get_jobs and release_jobs, on v0.1.0, and
#: ``psycopg-batched-0.18`` kongtask's batched statements for 0.18.
KONGTASK_KINDS = ("kongtask", "kongtask-def")
KONGTASK_KINDS_0_18 = ("kongtask-0.18", "kongtask-def-0.18")
KONGTASK_ALL = (*KONGTASK_KINDS, *KONGTASK_KINDS_0_18)
NODE_0_18 = ("node-0.18", "node-0.18-batched")
NODE_SYSTEMS = ("node", *NODE_0_18)
#: Every worker process the benchmark starts, in the order they take turns.
WORKERS = ("node", *KONGTASK_KINDS, *NODE_0_18, *KONGTASK_KINDS_0_18)
SINGLE_CEILINGS = ("psycopg", "pgbench")
BATCHED_CEILINGS = ("psycopg-batched", "pgbench-batched", "psycopg-batched-0.18")
CEILINGS = (*SINGLE_CEILINGS, *BATCHED_CEILINGS)
SYSTEMS = (*WORKERS, *CEILINGS)

#: The schema each system's databases hold.
SCHEMA_OF: dict[str, str] = {
    system: V0_18 if system in (*KONGTASK_KINDS_0_18, *NODE_0_18, "psycopg-batched-0.18") else V0_1
    for system in SYSTEMS
}
#: A kongtask system on 0.18 and the same kind of task on v0.1.0: the pairs issue 13 compares.
SAME_KIND_ON_V0_1 = {"kongtask-0.18": "kongtask", "kongtask-def-0.18": "kongtask-def"}

#: Node graphile-worker 0.18 drains at this ``--jobs`` only, whatever ``--jobs-list`` says: the
#: concurrency issue 13's figures for it were taken at (its ``--once`` runs that many workers).
NODE_0_18_JOBS = 8

#: The ``--jobs`` values every kongtask kind drains at (``--jobs-list``); the ceiling runs at 1 and 4.
DEFAULT_JOBS_LIST = (1, 4, 8, 16)
CEILING_CONNECTIONS = (1, 4)
#: kongtask's default ``--jobs`` (upstream's concurrency, 1): what "at default settings" means.
DEFAULT_JOBS = 1


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    digits: int
    higher_is_better: bool


STARTUP = Metric("startup_s", "start-up, empty queue", "s", 3, False)
LATENCY_METRICS: tuple[Metric, ...] = (
    Metric("latency_min", "latency min", "ms", 2, False),
    Metric("latency_avg", "latency avg", "ms", 2, False),
    Metric("latency_p50", "latency p50", "ms", 2, False),
    Metric("latency_p99", "latency p99", "ms", 2, False),
    Metric("latency_max", "latency max", "ms", 2, False),
    Metric("latency_wake_avg", "wake-up avg, add_job return to start", "ms", 2, False),
)

#: The per-``--jobs`` metrics of a drain, in the order the table shows them: ``drain_j4`` and so on.
_PER_JOBS = re.compile(r"(drain|cpu|rss)_j(\d+)")
_PER_JOBS_ORDER = ("drain", "cpu", "rss")


def per_jobs(kind: str, jobs: int) -> Metric:
    """``drain`` (jobs/s), ``cpu`` (worker CPU per job) or ``rss`` (peak RSS) at ``--jobs`` ``jobs``."""
    if kind == "drain":
        return Metric(f"drain_j{jobs}", f"drain, --jobs {jobs}", "jobs/s", 0, True)
    if kind == "cpu":
        return Metric(f"cpu_j{jobs}", f"worker CPU per job, --jobs {jobs}", "us", 0, False)
    assert kind == "rss", kind
    return Metric(f"rss_j{jobs}", f"peak RSS, --jobs {jobs}", "MB", 1, False)


def metric(key: str) -> Metric:
    """The metric named ``key``; AssertionError for a key no measurement produces."""
    if key == STARTUP.key:
        return STARTUP
    for latency in LATENCY_METRICS:
        if latency.key == key:
            return latency
    match = _PER_JOBS.fullmatch(key)
    assert match, key
    return per_jobs(match.group(1), int(match.group(2)))


def in_table_order(keys: Iterable[str]) -> list[Metric]:
    """The metrics named by ``keys``: start-up, drains by ``--jobs``, CPU, RSS, then latency."""

    def place(found: Metric) -> tuple[int, int, int]:
        if found is STARTUP:
            return (0, 0, 0)
        if match := _PER_JOBS.fullmatch(found.key):
            return (1, _PER_JOBS_ORDER.index(match.group(1)), int(match.group(2)))
        return (2, LATENCY_METRICS.index(found), 0)

    return sorted((metric(key) for key in keys), key=place)


class Unavailable(Exception):
    """A measurement that could not be made; the message says why, in one line."""


@dataclass(frozen=True)
class Measured:
    """What one measurement of one system produced: table figures plus the raw data behind them."""

    figures: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    value: float | None = None
    reason: str | None = None


@dataclass
class Results:
    figures: dict[str, dict[str, Cell]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, name: str, system: str, measured: Measured) -> None:
        for key, value in measured.figures.items():
            metric(key)  # a key no measurement produces is a bug
            self.figures.setdefault(key, {})[system] = Cell(value=value)
        self.details.setdefault(name, {})[system] = measured.details

    def miss(self, name: str, system: str, metrics: tuple[str, ...], reason: str) -> None:
        for key in metrics:
            self.figures.setdefault(key, {})[system] = Cell(reason=reason)
        self.details.setdefault(name, {})[system] = {"unavailable": reason}

    def value(self, metric: str, system: str) -> float | None:
        return self.figures.get(metric, {}).get(system, Cell()).value

    def cell(self, metric: str, system: str) -> Cell | None:
        return self.figures.get(metric, {}).get(system)

    def figures_json(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            metric: {
                system: {"value": cell.value} if cell.value is not None else {"value": None, "reason": cell.reason}
                for system, cell in cells.items()
            }
            for metric, cells in self.figures.items()
        }
