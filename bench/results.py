"""What a benchmark run found: one figure per metric and system, or the reason it is missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The systems compared, in the order of the table's columns. ``kongtask`` runs ``async def`` tasks,
#: ``kongtask-def`` their plain ``def`` twins. ``psycopg`` and ``pgbench`` are the SQL ceiling: the
#: worker's own statements in a tight loop, with no worker around them.
KONGTASK_KINDS = ("kongtask", "kongtask-def")
SYSTEMS = (*KONGTASK_KINDS, "node", "psycopg", "pgbench")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    digits: int
    higher_is_better: bool


METRICS: tuple[Metric, ...] = (
    Metric("startup_s", "start-up, empty queue", "s", 3, False),
    Metric("drain_j1", "drain, 1 worker/conn", "jobs/s", 0, True),
    Metric("drain_j4", "drain, 4 workers/conns", "jobs/s", 0, True),
    Metric("drain_j8", "drain, 8 workers", "jobs/s", 0, True),
    Metric("latency_min", "latency min", "ms", 2, False),
    Metric("latency_avg", "latency avg", "ms", 2, False),
    Metric("latency_p50", "latency p50", "ms", 2, False),
    Metric("latency_p99", "latency p99", "ms", 2, False),
    Metric("latency_max", "latency max", "ms", 2, False),
    Metric("latency_wake_avg", "wake-up avg, add_job return to start", "ms", 2, False),
    Metric("cpu_j1", "worker CPU per job, --jobs 1", "us", 0, False),
    Metric("rss_j1", "peak RSS, --jobs 1", "MB", 1, False),
    Metric("rss_j8", "peak RSS, --jobs 8", "MB", 1, False),
)

METRIC_KEYS = frozenset(metric.key for metric in METRICS)


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
            assert key in METRIC_KEYS, key
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
