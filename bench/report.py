"""The printed tables and the targets kongtask is held to.

kongtask is measured as two kinds of system: ``kongtask`` runs ``async def`` tasks, ``kongtask-def``
their plain ``def`` twins; each on a v0.1.0 database and, as ``kongtask-0.18`` and
``kongtask-def-0.18``, on a 0.18 one. Every ratio is one of them divided by another system's figure,
both from the same run: the machines are shared and noisy, so absolute numbers drift between runs
while ratios hold. The one exception, ``--baseline``, compares with an earlier run (another build),
and says so.
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
    KONGTASK_ALL,
    KONGTASK_KINDS,
    KONGTASK_KINDS_0_18,
    NODE_0_18_JOBS,
    SAME_KIND_ON_V0_1,
    SCHEMA_OF,
    SCHEMAS,
    V0_1,
    V0_18,
    Metric,
    Results,
    in_table_order,
    metric,
)

#: The worker systems by schema: the columns of one table each.
_COLUMNS = {
    V0_1: (("kongtask", "kongtask async"), ("kongtask-def", "kongtask def"), ("node", "node 0.1.0")),
    V0_18: (
        ("kongtask-0.18", "kongtask async"), ("kongtask-def-0.18", "kongtask def"),
        ("node-0.18", "node 0.18"), ("node-0.18-batched", "node 0.18 batched"),
    ),
}
#: The SQL ceiling, rows of a table of its own.
_CEILING_TITLES = {
    "psycopg": "ceiling psycopg", "pgbench": "ceiling pgbench",
    "psycopg-batched": "ceiling batched psycopg", "pgbench-batched": "ceiling batched pgbench",
    "psycopg-batched-0.18": "ceiling batched psycopg, 0.18",
}
#: The kongtask systems, and the short name of each in ratio titles and target texts.
KINDS = (("kongtask", "async"), ("kongtask-def", "def"), ("kongtask-0.18", "async 0.18"),
         ("kongtask-def-0.18", "def 0.18"))
#: The ratio tables' columns by schema: (ours, theirs, title). def/async says what a plain def
#: task costs; 0.18/v0.1.0 what the modern schema gains (issue 13).
RATIOS = {
    V0_1: (
        ("kongtask-def", "kongtask", "def/async"),
        ("kongtask", "node", "async/node"),
        ("kongtask-def", "node", "def/node"),
    ),
    V0_18: (
        ("kongtask-0.18", "kongtask", "async 0.18/v0.1.0"),
        ("kongtask-def-0.18", "kongtask-def", "def 0.18/v0.1.0"),
        ("kongtask-def-0.18", "kongtask-0.18", "def/async 0.18"),
        ("kongtask-0.18", "node-0.18-batched", "async 0.18/node batched"),
        ("kongtask-def-0.18", "node-0.18-batched", "def 0.18/node batched"),
    ),
}

#: Issue 12 ("throughput stage 2"): what batched fetch and release must reach.
THROUGHPUT_VS_CEILING = 0.8  # the best configuration, against the batched 4-connection ceiling (pgbench)
CPU_PER_JOB_US = 100.0
RSS_MB = 60.0
DEF_VS_ASYNC = 0.8  # at every --jobs
VS_BASELINE = 3.0  # the best drain, against the best of the build before batching (--baseline)

#: Issue 13 ("the modern schema, measured"): kongtask on 0.18 with jobs in no queue.
VS_OWN_V0_1 = 1.5  # each kind's drain, against the same kind at the same --jobs on v0.1.0
VS_NODE_BATCHED = 0.5  # the best 0.18 configuration, against Node 0.18 with its local queue


_LEGEND = [
    "-: not measured for that system (Node 0.1.0's --once runs one worker, so it drains at --jobs 1 only;",
    f"   Node 0.18 drains at --jobs {NODE_0_18_JOBS} only). Ratios are ours / theirs, from this same run.",
    "kongtask async: `async def` tasks (bench/tasks); kongtask def: the same tasks as plain `def`",
    "   (bench/tasks_def), which kongtask runs on a thread of the worker's instead of its event loop.",
    "v0.1.0 schema: every job in a queue of its own, as v0.1.0's add_job makes them; 0.18 schema",
    "   (`kongtask migrate --to latest`): jobs in no queue, add_job's default there. node 0.18: its defaults;",
    "   node 0.18 batched: localQueue.size 500 and completeJobBatchDelay 0 (a preset).",
    "ceiling psycopg/pgbench: get_job, then complete_job, in a tight loop, one job per round trip (what Node",
    "   0.1.0 and kongtask before batching do). ceiling batched: kongtask's get_jobs (50 jobs) then release_jobs",
    "   for all of them, in a tight loop (v0.1.0's statements; `, 0.18`: 0.18's, on a 0.18 database); async/it",
    "   and def/it take kongtask on the ceiling's schema. Worker CPU per job includes the process start-up.",
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


def targets(results: Results, jobs_list: tuple[int, ...], schemas: tuple[str, ...] = SCHEMAS) -> list[Target]:
    """Issue 12's targets (on v0.1.0), the earlier ones that still hold (Node, latency, start-up),
    then issue 13's (on 0.18); only those of the schemas this run chose.

    Some depend on this run's figures: the best configuration is whichever drained fastest.
    """
    found = _targets_v0_1(results, jobs_list) + _targets_0_18(results, jobs_list)
    return [target for target in found if SCHEMA_OF[target.system] in schemas]


def _targets_v0_1(results: Results, jobs_list: tuple[int, ...]) -> list[Target]:
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
    for system in KONGTASK_KINDS:
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
        Target(system, "drain_j1", True, 1.0, "drain --jobs 1 >= 1.0x Node", "node") for system in KONGTASK_KINDS
    ]
    found += [
        Target("kongtask", "latency_avg", False, 1.0, "latency avg <= Node's", "node"),
        Target("kongtask", "startup_s", False, 0.3, "start-up <= 0.3 s"),
    ]
    return found


def _targets_0_18(results: Results, jobs_list: tuple[int, ...]) -> list[Target]:
    """Issue 13: on 0.18, each kind at each --jobs against itself on v0.1.0, and the best
    configuration against Node 0.18 with its local queue."""
    found = [
        Target(system, f"drain_j{jobs}", True, VS_OWN_V0_1,
               f"drain --jobs {jobs} >= {VS_OWN_V0_1:g}x the same on v0.1.0", SAME_KIND_ON_V0_1[system])
        for system in KONGTASK_KINDS_0_18 for jobs in jobs_list
    ]
    best = best_drain(results, jobs_list, KONGTASK_KINDS_0_18)
    best_system, best_jobs = (best[0], best[1]) if best else ("kongtask-0.18", max(jobs_list))
    best_who = f"best ({_kind_jobs(best_system, best_jobs)})" if best else "best (0.18)"
    found.append(Target(best_system, f"drain_j{best_jobs}", True, VS_NODE_BATCHED,
                        f"drain >= {VS_NODE_BATCHED:g}x Node 0.18 batched (--jobs {NODE_0_18_JOBS})",
                        "node-0.18-batched", f"drain_j{NODE_0_18_JOBS}", best_who))
    return found


def judge(
    results: Results, jobs_list: tuple[int, ...], baseline: Baseline | None = None, schemas: tuple[str, ...] = SCHEMAS
) -> list[Verdict]:
    verdicts = []
    for target in targets(results, jobs_list, schemas):
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

    every = in_table_order(results.figures)
    lines: list[str] = []
    # One table per schema, its workers as columns; a schema the run left out has none.
    for schema, columns in _COLUMNS.items():
        workers = [system for system, _ in columns]
        shown = [m for m in every if any(results.cell(m.key, s) for s in workers)]
        if shown:
            rows = [[f"{m.label} ({m.unit})", *(cell(m, system) for system in workers)] for m in shown]
            lines += [*_table([f"{schema} schema", *(title for _, title in columns)], rows), ""]

    connections = [c for c in CEILING_CONNECTIONS if any(results.cell(f"drain_j{c}", s) for s in CEILINGS)]
    ceilings = [system for system in CEILINGS if any(results.cell(f"drain_j{c}", system) for c in connections)]
    if ceilings:
        header = ["SQL ceiling (jobs/s)", *(f"{c} conn{'s' if c > 1 else ''}" for c in connections)]
        header += [f"{kind}/it j{c}" for _, kind in KINDS[:2] for c in connections]
        # Each ceiling against kongtask on the ceiling's own schema.
        ceiling_rows = [
            [_CEILING_TITLES[system], *(cell(metric(f"drain_j{c}"), system) for c in connections),
             *(ratio_cell(f"drain_j{c}", _on_schema(ours, SCHEMA_OF[system]), system)
               for ours in KONGTASK_KINDS for c in connections)]
            for system in ceilings
        ]
        lines += _table(header, ceiling_rows)
    lines += [f"[{number}] n/a ({reason})" for reason, number in notes.items()]
    if ceilings or notes:
        lines.append("")
    # The ratios get tables of their own: more figure columns in one would not fit a terminal.
    for columns in RATIOS.values():
        ratio_rows = [
            [f"{m.label} ({m.unit})", *(ratio_cell(m.key, ours, theirs) for ours, theirs, _ in columns)]
            for m in every
            if any(ratio(results, m.key, ours, theirs) is not None for ours, theirs, _ in columns)
        ]
        if ratio_rows:
            lines += [*_table(["ratio", *(title for _, _, title in columns)], ratio_rows), ""]
    lines += _best_lines(results, jobs_list)
    lines += _LEGEND
    lines.append("")
    target_rows = [
        [v.target.text, _actual(v), {True: "met", False: "MISSED", None: "n/a"}[v.met], v.note] for v in verdicts
    ]
    lines += _table(["target", "actual", "status", "note"], target_rows)
    return "\n".join(lines)


def _on_schema(kind: str, schema: str) -> str:
    """The kongtask system of ``kind`` (``kongtask`` or ``kongtask-def``) on ``schema``."""
    if schema == V0_1:
        return kind
    return next(system for system, same in SAME_KIND_ON_V0_1.items() if same == kind)


def _best_lines(results: Results, jobs_list: tuple[int, ...]) -> list[str]:
    lines = []
    conns = max(CEILING_CONNECTIONS)
    best = best_drain(results, jobs_list)
    if best is not None:
        system, jobs, value = best
        line = f"best kongtask on v0.1.0: {_kind_jobs(system, jobs)}, {value:,.0f} jobs/s"
        # Against the batched ceiling (issue 12's yardstick) and the single-job one (the build before it).
        for ceiling in ("pgbench-batched", "pgbench"):
            if other := results.value(f"drain_j{conns}", ceiling):
                line += f"; {value / other:.2f}x {_CEILING_TITLES[ceiling]} at {conns} conns"
        lines.append(line)
    best = best_drain(results, jobs_list, KONGTASK_KINDS_0_18)
    if best is not None:
        system, jobs, value = best
        line = f"best kongtask on 0.18: {_kind_jobs(system, jobs)}, {value:,.0f} jobs/s"
        # Against the peer (issue 13's yardstick), itself on v0.1.0, and the 0.18 statements alone.
        for node in ("node-0.18-batched", "node-0.18"):
            if other := results.value(f"drain_j{NODE_0_18_JOBS}", node):
                line += f"; {value / other:.2f}x {node} --jobs {NODE_0_18_JOBS} ({other:,.0f})"
        if other := results.value(f"drain_j{jobs}", SAME_KIND_ON_V0_1[system]):
            line += f"; {value / other:.2f}x itself on v0.1.0"
        if other := results.value(f"drain_j{conns}", "psycopg-batched-0.18"):
            line += f"; {value / other:.2f}x {_CEILING_TITLES['psycopg-batched-0.18']} at {conns} conns"
        lines.append(line)
    return lines


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
    """``{kongtask system: {metric: {other system: ratio}}}``, against every other system that ran."""
    systems = {system for cells in results.figures.values() for system in cells}
    return {
        ours: {
            key: {theirs: ratio(results, key, ours, theirs) for theirs in sorted(systems - {ours})}
            for key in results.figures
        }
        for ours in KONGTASK_ALL if ours in systems
    }
