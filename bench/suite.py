"""The order of work: each measurement on a fresh database, systems side by side.

Measurements of one kind run back to back across the systems (ceiling, Node, kongtask with
``async def`` tasks, kongtask with ``def`` tasks, each on the schemas chosen), so a load spike on
this shared machine hits the figures being compared with each other, not just one of them. Drains
repeat for ``rounds`` and keep each system's best round: interference only ever slows a drain down,
so the best round is the one closest to what the system can do. Each kongtask kind drains on
v0.1.0 and on 0.18 one right after the other (the pair issue 13 compares), and the order of the
four turns round every round, so no system always runs right after another. Start-up and latency
go further: the workers take turns, run by run and sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from .ceiling import pgbench_ceiling, psycopg_ceiling
from .db import fresh_database
from .latency import latency
from .measure import drain, startup
from .results import (
    BATCHED_CEILINGS,
    CEILING_CONNECTIONS,
    CEILINGS,
    KONGTASK_KINDS,
    LATENCY_METRICS,
    NODE_0_18,
    NODE_0_18_JOBS,
    SAME_KIND_ON_V0_1,
    SCHEMA_OF,
    SCHEMAS,
    WORKERS,
    Measured,
    Results,
    Unavailable,
)
from .server import Server
from .workers import WorkerCommand

MEASUREMENTS = ("startup", "drain", "latency", "ceiling")

#: Each kongtask kind's system on 0.18.
_ON_0_18 = {kind: system for system, kind in SAME_KIND_ON_V0_1.items()}

#: The workers of a side-by-side measurement: system -> (how to start it, its database URL).
_Workers = Mapping[str, tuple[WorkerCommand, str]]


@dataclass(frozen=True)
class Settings:
    jobs_count: int
    latency_samples: int
    latency_warmup: int
    startup_repeats: int
    rounds: int
    only: frozenset[str]
    jobs_list: tuple[int, ...]  # the --jobs values each kongtask kind drains at
    schemas: tuple[str, ...] = SCHEMAS  # the schemas whose systems run (--schemas)

    def chosen(self, system: str) -> bool:
        """Whether ``system`` runs at all: its schema is one of ``--schemas``."""
        return SCHEMA_OF[system] in self.schemas


@dataclass
class _Rounds:
    """Every round of one drain of one system, until the best is chosen."""

    metrics: tuple[str, ...]
    outcomes: list[Measured | Unavailable] = field(default_factory=list)


@dataclass
class Suite:
    server: Server
    settings: Settings
    scratch: Path
    commands: dict[str, WorkerCommand]  # the workers that can run
    missing: dict[str, str]  # system -> why it cannot run
    say: Callable[[str], None]

    def __post_init__(self) -> None:
        self.results = Results()
        self._rounds: dict[tuple[str, str], _Rounds] = {}

    def run(self) -> Results:
        only = self.settings.only
        if "startup" in only:
            self._side_by_side("startup", ("startup_s",), self._startup)
        for round_ in range(1, self.settings.rounds + 1):
            if self.settings.rounds > 1 and only & {"ceiling", "drain"}:
                self.say(f"  drains, round {round_} of {self.settings.rounds}")
            self._drains(round_)
        self._keep_best_rounds()
        if "latency" in only:
            latency_metrics = tuple(m.key for m in LATENCY_METRICS)
            self._side_by_side("latency", latency_metrics, self._latency)
        return self.results

    def _drains(self, round_: int) -> None:
        """One round: by ``--jobs`` (connections, for the ceiling), the ceiling first, then Node (0.1.0
        at 1, 0.18 at :data:`NODE_0_18_JOBS`), then the kongtask systems, each kind on both schemas
        in a row; every other round in the reverse order."""
        only = self.settings.only
        kongtask = [system for kind in KONGTASK_KINDS for system in (kind, _ON_0_18[kind])]
        kongtask = kongtask if round_ % 2 else kongtask[::-1]
        ceiling = CEILING_CONNECTIONS if "ceiling" in only else ()
        drains = self.settings.jobs_list if "drain" in only else ()
        node_0_18 = (NODE_0_18_JOBS,) if "drain" in only and any(map(self.settings.chosen, NODE_0_18)) else ()
        for jobs in sorted({*ceiling, *drains, *node_0_18}):
            if jobs in ceiling:
                self._ceiling(jobs)
            node = ["node"] if jobs == 1 and jobs in drains else []
            node += list(NODE_0_18) if jobs in node_0_18 else []
            name = f"drain_j{jobs}"
            for system in [*node, *(kongtask if jobs in drains else [])]:
                if self.settings.chosen(system):
                    self._measure(name, system, (name, f"cpu_j{jobs}", f"rss_j{jobs}"), self._drain(jobs))

    def _startup(self, workers: _Workers) -> dict[str, Measured | Unavailable]:
        return startup(workers, self.settings.startup_repeats, self.scratch)

    def _drain(self, jobs: int) -> Callable[[str, str], Measured]:
        return lambda system, url: drain(
            self.commands[system], url, self.settings.jobs_count, jobs, self.scratch, SCHEMA_OF[system]
        )

    def _latency(self, workers: _Workers) -> dict[str, Measured | Unavailable]:
        return latency(workers, self.settings.latency_samples, self.settings.latency_warmup, self.scratch)

    def _ceiling(self, connections: int) -> None:
        name = f"drain_j{connections}"
        for system in CEILINGS:
            if self.settings.chosen(system):
                self._measure(name, system, (name,), self._ceiling_run(system, connections))

    def _ceiling_run(self, system: str, connections: int) -> Callable[[str, str], Measured]:
        count = self.settings.jobs_count
        form = "batched" if system in BATCHED_CEILINGS else "single"

        def run(_: str, url: str) -> Measured:
            if system.startswith("psycopg"):
                return psycopg_ceiling(url, count, connections, form, SCHEMA_OF[system])
            return pgbench_ceiling(url, count, connections, self.scratch, form)

        return run

    def _measure(self, name: str, system: str, metrics: tuple[str, ...], run: Callable[[str, str], Measured]) -> None:
        """One round of one drain of one system, on a database of its own."""
        rounds = self._rounds.setdefault((name, system), _Rounds(metrics))
        if system in self.missing:
            rounds.outcomes.append(Unavailable(self.missing[system]))
            return
        try:
            with fresh_database(self.server, f"{name}_{system}", SCHEMA_OF[system]) as url:
                outcome: Measured | Unavailable = run(system, url)
        except Unavailable as exc:
            outcome = exc
        rounds.outcomes.append(outcome)
        self._show(name, system, outcome)

    def _keep_best_rounds(self) -> None:
        for (name, system), rounds in self._rounds.items():
            primary = name  # a drain's name is its throughput metric: drain_j1, drain_j4, ...
            done = [outcome for outcome in rounds.outcomes if isinstance(outcome, Measured)]
            if not done:
                self.results.miss(name, system, rounds.metrics, str(rounds.outcomes[0]))
                continue
            best = max(done, key=lambda measured: measured.figures[primary])
            every = [measured.figures[primary] for measured in done]
            failed = [str(outcome) for outcome in rounds.outcomes if isinstance(outcome, Unavailable)]
            details = best.details | {"rounds": every, "failed_rounds": failed}
            self.results.put(name, system, Measured(best.figures, details))

    def _side_by_side(
        self, name: str, metrics: tuple[str, ...], run: Callable[[_Workers], dict[str, Measured | Unavailable]]
    ) -> None:
        """Every worker in one measurement, taking turns, each on a database of its own."""
        systems: list[str] = []
        for system in filter(self.settings.chosen, WORKERS):
            if system in self.commands:
                systems.append(system)
            else:
                self.results.miss(name, system, metrics, self.missing[system])
        if not systems:
            return
        with ExitStack() as stack:
            workers: dict[str, tuple[WorkerCommand, str]] = {
                system: (
                    self.commands[system],
                    stack.enter_context(fresh_database(self.server, f"{name}_{system}", SCHEMA_OF[system])),
                )
                for system in systems
            }
            outcomes = run(workers)
        for system, outcome in outcomes.items():
            self._show(name, system, outcome)
            if isinstance(outcome, Unavailable):
                self.results.miss(name, system, metrics, str(outcome))
            else:
                self.results.put(name, system, outcome)

    def _show(self, name: str, system: str, outcome: Measured | Unavailable) -> None:
        if isinstance(outcome, Unavailable):
            self.say(f"  {name:<9} {system:<20} n/a ({outcome})")
        else:
            shown = ", ".join(f"{key} {value:,.2f}" for key, value in outcome.figures.items())
            self.say(f"  {name:<9} {system:<20} {shown}")
