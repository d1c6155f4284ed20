"""The printed tables and the targets kongtask is held to.

kongtask is measured as two systems: ``kongtask`` runs ``async def`` tasks, ``kongtask-def`` their
plain ``def`` twins. Every ratio is one of them divided by another system's figure, both from the
same run: the machines are shared and noisy, so absolute numbers drift between runs while ratios
hold. The one exception, ``--baseline``, compares with an earlier run (another build), and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import (
    CEILING_CONNECTIONS,
    CEILINGS,
    DEFAULT_JOBS,
    KONGTASK_KINDS,
    Metric,
    Results,
    in_table_order,
    metric,
)

#: The worker systems, columns of the main table.
_COLUMNS = (("kongtask", "kongtask async"), ("kongtask-def", "kongtask def"), ("node", "node 0.1.0"))
#: The SQL ceiling, rows of a table of its own.
_CEILING_TITLES = {
    "psycopg": "ceiling psycopg", "pgbench": "ceiling pgbench",
    "psycopg-batched": "ceiling batched psycopg", "pgbench-batched": "ceiling batched pgbench",
}
#: The kongtask systems, and the short name of each kind in ratio titles and target texts.
KINDS = (("kongtask", "async"), ("kongtask-def", "def"))
#: The main ratio table's columns: (ours, theirs, title). def/async says what a plain def task costs.
RATIOS = (
    ("kongtask-def", "kongtask", "def/async"),
    ("kongtask", "node", "async/node"),
    ("kongtask-def", "node", "def/node"),
)

#: Issue 12 ("throughput stage 2"): what batched fetch and release must reach.
THROUGHPUT_VS_CEILING = 0.8  # the best configuration, against the batched 4-connection ceiling (pgbench)
CPU_PER_JOB_US = 100.0
RSS_MB = 60.0
DEF_VS_ASYNC = 0.8  # at every --jobs
VS_BASELINE = 3.0  # the best drain, against the best of the build before batching (--baseline)


_LEGEND = [
    "-: not measured for that system (Node 0.1.0's --once runs one worker, so Node drains at --jobs 1 only).",
    "   Ratios are ours / theirs, from this same run.",
    "kongtask async: `async def` tasks (bench/tasks); kongtask def: the same tasks as plain `def`",
    "   (bench/tasks_def), which kongtask runs on a thread of the worker's instead of its event loop.",
    "ceiling psycopg/pgbench: get_job, then complete_job, in a tight loop, one job per round trip (what Node",
    "   0.1.0 and kongtask before batching do). ceiling batched: kongtask's get_jobs (50 jobs) then release_jobs",
    "   for all of them, in a tight loop. Worker CPU per job includes the process start-up.",
]


@dataclass(frozen=True)
class Target:
    system: str  # the kongtask kind held to it
    metric: str
    at_least: bool
    bound: float
    what: str
    against: str | None = None  # a system (or "baseline") to take a ratio against; None: the figure itself
    against_metric: str | None = None  # the other system's metric, when not the same
    who: str | None = None  # how the text names what is judged; the kind's short name by default

    @property
    def text(self) -> str:
        return f"{self.who or dict(KINDS)[self.system]}: {self.what}"


@dataclass(frozen=True)
class Verdict:
    target: Target
    actual: float | None
    met: bool | None  # None: a figure it needs is missing
    note: str = ""

    def json(self) -> dict[str, Any]:
        target = self.target
        return {
            "target": target.text, "system": target.system, "metric": target.metric, "against": target.against,
            "against_metric": target.against_metric or (target.metric if target.against else None),
            "bound": target.bound, "actual": self.actual, "met": self.met, "note": self.note,
        }


@dataclass(frozen=True)
class Baseline:
    """An earlier run's JSON (``--baseline``): its best kongtask drain, and its single-job ceiling."""

    path: Path
    best: tuple[str, str, float] | None  # (system, metric, jobs/s)
    single_ceiling_j4: float | None  # pgbench, get_job + complete_job, 4 connections

    @classmethod
    def read(cls, path: Path) -> Baseline:
        figures = json.loads(path.read_text())["figures"]
        values = {
            (system, key): cell["value"]
            for key, cells in figures.items() if key.startswith("drain_j")
            for system, cell in cells.items() if cell.get("value") is not None
        }
        drains = [(system, key, value) for (system, key), value in values.items() if system in KONGTASK_KINDS]
        best = max(drains, key=lambda found: found[2]) if drains else None
        return cls(path, best, values.get(("pgbench", "drain_j4")))


def ratio(results: Results, key: str, ours: str, theirs: str, their_key: str | None = None) -> float | None:
    mine, other = results.value(key, ours), results.value(their_key or key, theirs)
    return mine / other if mine is not None and other else None


def best_drain(results: Results, jobs_list: tuple[int, ...], systems: tuple[str, ...] = KONGTASK_KINDS
               ) -> tuple[str, int, float] | None:
    """The fastest kongtask configuration of this run: (system, --jobs, jobs/s)."""
    found = [
        (system, jobs, value)
        for system in systems for jobs in jobs_list
        if (value := results.value(f"drain_j{jobs}", system)) is not None
    ]
    return max(found, key=lambda row: row[2]) if found else None


def _kind_jobs(system: str, jobs: int) -> str:
    return f"{dict(KINDS)[system]} --jobs {jobs}"


def targets(results: Results, jobs_list: tuple[int, ...]) -> list[Target]:
    """Issue 12's targets, then the earlier ones that still hold (Node, latency, start-up).

    Some depend on this run's figures: the best configuration is whichever drained fastest.
    """
    best = best_drain(results, jobs_list)
    best_system, best_jobs = (best[0], best[1]) if best else ("kongtask", max(jobs_list))
    best_who = f"best ({_kind_jobs(best_system, best_jobs)})" if best else "best"
    ceiling_jobs = max(CEILING_CONNECTIONS)
    found: list[Target] = [
        Target(best_system, f"drain_j{best_jobs}", True, THROUGHPUT_VS_CEILING,
               f"drain >= {THROUGHPUT_VS_CEILING}x {ceiling_jobs}-conn batched ceiling (pgbench)",
               "pgbench-batched", f"drain_j{ceiling_jobs}", best_who),
        Target(best_system, f"drain_j{best_jobs}", True, VS_BASELINE,
               f"drain >= {VS_BASELINE:g}x the best of the build before batching (--baseline)",
               "baseline", None, best_who),
    ]
    for system, _ in KINDS:
        fastest = best_drain(results, jobs_list, (system,))
        jobs = fastest[1] if fastest else DEFAULT_JOBS
        found.append(Target(system, f"cpu_j{jobs}", False, CPU_PER_JOB_US,
                            f"CPU per job at its fastest (--jobs {jobs}) <= {CPU_PER_JOB_US:g} us"))
        found.append(Target(system, f"rss_j{DEFAULT_JOBS}", False, RSS_MB,
                            f"peak RSS at default settings (--jobs {DEFAULT_JOBS}) <= {RSS_MB:g} MB"))
    found += [
        Target("kongtask-def", f"drain_j{jobs}", True, DEF_VS_ASYNC, f"drain --jobs {jobs} >= {DEF_VS_ASYNC}x async",
               "kongtask")
        for jobs in jobs_list
    ]
    found += [
        Target(system, "drain_j1", True, 1.0, "drain --jobs 1 >= 1.0x Node", "node") for system, _ in KINDS
    ]
    found += [
        Target("kongtask", "latency_avg", False, 1.0, "latency avg <= Node's", "node"),
        Target("kongtask", "startup_s", False, 0.3, "start-up <= 0.3 s"),
    ]
    return found


def judge(results: Results, jobs_list: tuple[int, ...], baseline: Baseline | None = None) -> list[Verdict]:
    verdicts = []
    for target in targets(results, jobs_list):
        note = ""
        if target.against == "baseline":
            actual, note = _against_baseline(results, target, baseline)
        elif target.against:
            actual = ratio(results, target.metric, target.system, target.against, target.against_metric)
        else:
            actual = results.value(target.metric, target.system)
        met = None if actual is None else (actual >= target.bound if target.at_least else actual <= target.bound)
        verdicts.append(Verdict(target, actual, met, note))
    return verdicts


def _against_baseline(results: Results, target: Target, baseline: Baseline | None) -> tuple[float | None, str]:
    if baseline is None:
        return None, "needs --baseline: a run of the build before batching"
    mine = results.value(target.metric, target.system)
    if baseline.best is None or mine is None:
        return None, f"no kongtask drain in {baseline.path}" if baseline.best is None else ""
    system, key, value = baseline.best
    then = f"{dict(KINDS)[system]} --jobs {key.removeprefix('drain_j')} in {baseline.path.name}"
    # Runs at different times see different loads: the single-job ceiling of each run, measured in
    # both, says how much of the change is the machine's.
    ceiling_now = results.value("drain_j4", "pgbench")
    if ceiling_now and baseline.single_ceiling_j4:
        scaled = (mine / ceiling_now) / (value / baseline.single_ceiling_j4)
        return mine / value, f"against {then}; {scaled:.2f}x relative to each run's single 4-conn ceiling"
    return mine / value, f"against {then}"


def _format(value: float, found: Metric) -> str:
    return f"{value:,.{found.digits}f}"


def render(results: Results, verdicts: list[Verdict], jobs_list: tuple[int, ...]) -> str:
    notes: dict[str, int] = {}

    def cell(found: Metric, system: str) -> str:
        got = results.cell(found.key, system)
        if got is None:
            return "-"
        if got.value is not None:
            return _format(got.value, found)
        number = notes.setdefault(got.reason or "unknown", len(notes) + 1)
        return f"n/a [{number}]"

    def ratio_cell(key: str, ours: str, theirs: str) -> str:
        value = ratio(results, key, ours, theirs)
        return "-" if value is None else f"{value:.2f}x"

    workers = [system for system, _ in _COLUMNS]
    shown = [m for m in in_table_order(results.figures) if any(results.cell(m.key, s) for s in workers)]
    rows = [[f"{m.label} ({m.unit})", *(cell(m, system) for system in workers)] for m in shown]
    lines = _table(["metric", *(title for _, title in _COLUMNS)], rows)

    connections = [c for c in CEILING_CONNECTIONS if any(results.cell(f"drain_j{c}", s) for s in CEILINGS)]
    if connections:
        lines.append("")
        header = ["SQL ceiling (jobs/s)", *(f"{c} conn{'s' if c > 1 else ''}" for c in connections)]
        header += [f"{kind}/it j{c}" for _, kind in KINDS for c in connections]
        ceiling_rows = [
            [_CEILING_TITLES[system], *(cell(metric(f"drain_j{c}"), system) for c in connections),
             *(ratio_cell(f"drain_j{c}", ours, system) for ours, _ in KINDS for c in connections)]
            for system in CEILINGS
        ]
        lines += _table(header, ceiling_rows)
    lines += [f"[{number}] n/a ({reason})" for reason, number in notes.items()]
    lines.append("")
    # The ratios get a table of their own: more figure columns in one would not fit a terminal.
    ratio_rows = [
        [f"{m.label} ({m.unit})", *(ratio_cell(m.key, ours, theirs) for ours, theirs, _ in RATIOS)]
        for m in shown
        if any(ratio(results, m.key, ours, theirs) is not None for ours, theirs, _ in RATIOS)
    ]
    if ratio_rows:
        lines += _table(["ratio", *(title for _, _, title in RATIOS)], ratio_rows)
    lines += _best_lines(results, jobs_list)
    lines += _LEGEND
    lines.append("")
    target_rows = [
        [v.target.text, _actual(v), {True: "met", False: "MISSED", None: "n/a"}[v.met], v.note] for v in verdicts
    ]
    lines += _table(["target", "actual", "status", "note"], target_rows)
    return "\n".join(lines)


def _best_lines(results: Results, jobs_list: tuple[int, ...]) -> list[str]:
    best = best_drain(results, jobs_list)
    if best is None:
        return []
    system, jobs, value = best
    line = f"best kongtask: {_kind_jobs(system, jobs)}, {value:,.0f} jobs/s"
    conns = max(CEILING_CONNECTIONS)
    # Against the batched ceiling (issue 12's yardstick) and the single-job one (the build before it).
    for ceiling in ("pgbench-batched", "pgbench"):
        if other := results.value(f"drain_j{conns}", ceiling):
            line += f"; {value / other:.2f}x {_CEILING_TITLES[ceiling]} at {conns} conns"
    return [line]


def _actual(verdict: Verdict) -> str:
    if verdict.actual is None:
        return "-"
    if verdict.target.against:
        return f"{verdict.actual:.2f}x"
    found = metric(verdict.target.metric)
    return f"{_format(verdict.actual, found)} {found.unit}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        # The first column reads as text (left), the figures as numbers (right), a note as text.
        cells = (
            c.ljust(w) if i == 0 or header[i] == "note" else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def ratios_json(results: Results) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{kongtask system: {metric: {other system: ratio}}}``, against every other system."""
    others = {ours: tuple(s for s in ("node", *CEILINGS, *KONGTASK_KINDS) if s != ours) for ours, _ in KINDS}
    return {
        ours: {
            key: {theirs: ratio(results, key, ours, theirs) for theirs in others[ours]}
            for key in results.figures
        }
        for ours, _ in KINDS
    }
