"""The printed tables and the targets kongtask is held to.

kongtask is measured as two systems: ``kongtask`` runs ``async def`` tasks, ``kongtask-def`` their
plain ``def`` twins. Every ratio is one of them divided by another system's figure, both from the
same run: the machines are shared and noisy, so absolute numbers drift between runs while ratios
hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .results import METRICS, Metric, Results

_COLUMNS = (
    ("kongtask", "kongtask async"), ("kongtask-def", "kongtask def"), ("node", "node 0.1.0"),
    ("psycopg", "SQL/psycopg"), ("pgbench", "SQL/pgbench"),
)
#: The kongtask systems, and the short name of each kind in ratio titles and target texts.
KINDS = (("kongtask", "async"), ("kongtask-def", "def"))
#: The systems each kind's figures are divided by.
AGAINST = ("node", "psycopg", "pgbench")
#: The ratio table's columns: (ours, theirs, title). def/async says what a plain def task costs.
RATIOS = (
    *((ours, theirs, f"{kind}/{theirs}") for ours, kind in KINDS for theirs in AGAINST),
    ("kongtask-def", "kongtask", "def/async"),
)


_LEGEND = [
    "-: not measured for that system (Node 0.1.0's --once runs one worker; the SQL ceiling has no worker",
    "   process, so no start-up, latency, CPU or RSS). Ratios are ours / theirs, from this same run.",
    "kongtask async: `async def` tasks (bench/tasks); kongtask def: the same tasks as plain `def`",
    "   (bench/tasks_def), which kongtask runs on a thread of the worker's instead of its event loop.",
    "SQL/*: get_job, then complete_job, in a tight loop: two commits per job, as Node 0.1.0 does. kongtask",
    "   sends complete_job and the next get_job in one statement (one round trip, one commit per job), so on",
    "   an fsync-bound server it can pass this ceiling. Worker CPU per job includes the process start-up.",
]


@dataclass(frozen=True)
class Target:
    metric: str
    against: str | None  # a system to take a ratio against, or None for the system's own figure
    at_least: bool
    bound: float
    what: str
    system: str = "kongtask"  # the kongtask kind held to it

    @property
    def text(self) -> str:
        return f"{dict(KINDS)[self.system]}: {self.what}"


def _drain_targets(system: str) -> tuple[Target, ...]:
    return (
        Target("drain_j1", "node", True, 1.0, "drain --jobs 1 >= 1.0x Node", system),
        Target("drain_j1", "psycopg", True, 0.9, "drain --jobs 1 >= 0.9x 1-conn ceiling (psycopg)", system),
        Target("drain_j4", "pgbench", True, 0.85, "drain --jobs 4 >= 0.85x 4-conn ceiling (pgbench)", system),
        Target("rss_j8", None, False, 60.0, "peak RSS at --jobs 8 <= 60 MB", system),
    )


#: The drain targets hold for both kinds; latency and start-up are judged on async def tasks.
TARGETS: tuple[Target, ...] = (
    *_drain_targets("kongtask"),
    Target("latency_avg", "node", False, 1.0, "latency avg <= Node's"),
    Target("startup_s", None, False, 0.3, "start-up <= 0.3 s"),
    *_drain_targets("kongtask-def"),
)


@dataclass(frozen=True)
class Verdict:
    target: Target
    actual: float | None
    met: bool | None  # None: a figure it needs is missing

    def json(self) -> dict[str, Any]:
        target = self.target
        return {
            "target": target.text, "system": target.system, "metric": target.metric, "against": target.against,
            "bound": target.bound, "actual": self.actual, "met": self.met,
        }


def ratio(results: Results, metric: str, ours: str, theirs: str) -> float | None:
    mine, other = results.value(metric, ours), results.value(metric, theirs)
    return mine / other if mine is not None and other else None


def judge(results: Results) -> list[Verdict]:
    verdicts = []
    for target in TARGETS:
        if target.against:
            actual = ratio(results, target.metric, target.system, target.against)
        else:
            actual = results.value(target.metric, target.system)
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

    def ratio_cell(metric: Metric, ours: str, theirs: str) -> str:
        value = ratio(results, metric.key, ours, theirs)
        return "-" if value is None else f"{value:.2f}x"

    shown = [metric for metric in METRICS if metric.key in results.figures]
    header = ["metric", *(title for _, title in _COLUMNS)]
    rows = [[f"{metric.label} ({metric.unit})", *(cell(metric, system) for system, _ in _COLUMNS)] for metric in shown]
    lines = _table(header, rows)
    lines += [f"[{number}] n/a ({reason})" for reason, number in notes.items()]
    lines.append("")
    # The ratios get a table of their own: ten figure columns in one would not fit a terminal.
    ratio_rows = [
        [f"{metric.label} ({metric.unit})", *(ratio_cell(metric, ours, theirs) for ours, theirs, _ in RATIOS)]
        for metric in shown
        if any(ratio(results, metric.key, ours, theirs) is not None for ours, theirs, _ in RATIOS)
    ]
    if ratio_rows:
        lines += _table(["ratio", *(title for _, _, title in RATIOS)], ratio_rows)
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


def ratios_json(results: Results) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{kongtask system: {metric: {other system: ratio}}}``."""
    return {
        ours: {
            metric.key: {theirs: ratio(results, metric.key, ours, theirs) for o, theirs, _ in RATIOS if o == ours}
            for metric in METRICS
            if metric.key in results.figures
        }
        for ours, _ in KINDS
    }
