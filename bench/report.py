"""The printed tables and the targets kongtask is held to.

Every ratio is kongtask's figure divided by the other system's, both from the same run: the
machines are shared and noisy, so absolute numbers drift between runs while ratios hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .results import METRICS, Metric, Results

_COLUMNS = (("kongtask", "kongtask"), ("node", "node 0.1.0"), ("psycopg", "SQL/psycopg"), ("pgbench", "SQL/pgbench"))
#: The systems kongtask's figures are divided by, and the column titles of those ratios.
RATIOS = (("node", "k/node"), ("psycopg", "k/psycopg"), ("pgbench", "k/pgbench"))


_LEGEND = [
    "-: not measured for that system (Node 0.1.0's --once runs one worker; the SQL ceiling has no worker",
    "   process, so no start-up, latency, CPU or RSS). Ratios are kongtask / other, from this same run.",
    "SQL/*: get_job, then complete_job, in a tight loop: two commits per job, as Node 0.1.0 does. kongtask",
    "   sends complete_job and the next get_job in one statement (one round trip, one commit per job), so on",
    "   an fsync-bound server it can pass this ceiling. Worker CPU per job includes the process start-up.",
]


@dataclass(frozen=True)
class Target:
    metric: str
    against: str | None  # a system to take a ratio against, or None for kongtask's own figure
    at_least: bool
    bound: float
    text: str


TARGETS: tuple[Target, ...] = (
    Target("drain_j1", "node", True, 1.0, "drain --jobs 1 >= 1.0x Node"),
    Target("drain_j1", "psycopg", True, 0.9, "drain --jobs 1 >= 0.9x 1-conn ceiling (psycopg)"),
    Target("drain_j4", "pgbench", True, 0.85, "drain --jobs 4 >= 0.85x 4-conn ceiling (pgbench)"),
    Target("latency_avg", "node", False, 1.0, "latency avg <= Node's"),
    Target("startup_s", None, False, 0.3, "start-up <= 0.3 s"),
    Target("rss_j8", None, False, 60.0, "peak RSS at --jobs 8 <= 60 MB"),
)


@dataclass(frozen=True)
class Verdict:
    target: Target
    actual: float | None
    met: bool | None  # None: a figure it needs is missing

    def json(self) -> dict[str, Any]:
        target = self.target
        return {
            "target": target.text, "metric": target.metric, "against": target.against,
            "bound": target.bound, "actual": self.actual, "met": self.met,
        }


def ratio(results: Results, metric: str, system: str) -> float | None:
    ours, theirs = results.value(metric, "kongtask"), results.value(metric, system)
    return ours / theirs if ours is not None and theirs else None


def judge(results: Results) -> list[Verdict]:
    verdicts = []
    for target in TARGETS:
        if target.against:
            actual = ratio(results, target.metric, target.against)
        else:
            actual = results.value(target.metric, "kongtask")
        met = None if actual is None else (actual >= target.bound if target.at_least else actual <= target.bound)
        verdicts.append(Verdict(target, actual, met))
    return verdicts


def _format(value: float, metric: Metric) -> str:
    return f"{value:,.{metric.digits}f}"


def render(results: Results, verdicts: list[Verdict]) -> str:
    notes: dict[str, int] = {}

    def cell(metric: Metric, system: str) -> str:
        found = results.cell(metric.key, system)
        if found is None:
            return "-"
        if found.value is not None:
            return _format(found.value, metric)
        number = notes.setdefault(found.reason or "unknown", len(notes) + 1)
        return f"n/a [{number}]"

    def ratio_cell(metric: Metric, system: str) -> str:
        value = ratio(results, metric.key, system)
        return "-" if value is None else f"{value:.2f}x"

    header = ["metric", *(title for _, title in _COLUMNS), *(title for _, title in RATIOS)]
    rows = [
        [
            f"{metric.label} ({metric.unit})",
            *(cell(metric, system) for system, _ in _COLUMNS),
            *(ratio_cell(metric, system) for system, _ in RATIOS),
        ]
        for metric in METRICS
        if metric.key in results.figures
    ]
    lines = _table(header, rows)
    lines += [f"[{number}] n/a ({reason})" for reason, number in notes.items()]
    lines += _LEGEND
    lines.append("")
    target_rows = [[v.target.text, _actual(v), {True: "met", False: "MISSED", None: "n/a"}[v.met]] for v in verdicts]
    lines += _table(["target", "actual", "status"], target_rows)
    return "\n".join(lines)


def _actual(verdict: Verdict) -> str:
    if verdict.actual is None:
        return "-"
    if verdict.target.against:
        return f"{verdict.actual:.2f}x"
    metric = next(m for m in METRICS if m.key == verdict.target.metric)
    return f"{_format(verdict.actual, metric)} {metric.unit}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        # The first column reads as text (left), the figures as numbers (right).
        cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def ratios_json(results: Results) -> dict[str, dict[str, float | None]]:
    return {
        metric.key: {system: ratio(results, metric.key, system) for system, _ in RATIOS}
        for metric in METRICS
        if metric.key in results.figures
    }
