"""Start-up and drain, timed as upstream's perfTest does: the wall time of one ``--once`` run."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path

from .db import count_jobs, insert_jobs
from .results import V0_1, Measured, Unavailable
from .workers import Exit, WorkerCommand, run_to_exit


def _checked(exit: Exit, what: str) -> Exit:
    if exit.returncode != 0:
        raise Unavailable(f"{what} exited with {exit.returncode}: {exit.output_tail or 'no output'}")
    return exit


def startup(
    workers: Mapping[str, tuple[WorkerCommand, str]], repeats: int, logs: Path
) -> dict[str, Measured | Unavailable]:
    """``--once`` on an empty, migrated queue: process start, connect, one empty fetch, exit.

    The systems take turns, run by run, so a load spike on the machine hits them alike. Round 0 is
    untimed: it warms the OS caches (and writes .pyc files) for every later run.
    """
    walls: dict[str, list[float]] = {system: [] for system in workers}
    failed: dict[str, Unavailable] = {}
    for round_ in range(repeats + 1):
        for system, (command, url) in workers.items():
            if system in failed:
                continue
            exit = run_to_exit(command, url, 1, logs / f"{system}-startup.log")
            try:
                _checked(exit, f"{system} worker --once")
            except Unavailable as exc:
                failed[system] = exc
            if round_:
                walls[system].append(exit.wall_s)
    return {
        system: failed.get(system) or Measured({"startup_s": statistics.median(runs)}, {"runs_s": runs})
        for system, runs in walls.items()
    }


def drain(command: WorkerCommand, url: str, count: int, jobs: int, logs: Path, schema: str = V0_1) -> Measured:
    """Insert ``count`` jobs in one statement, then time ``--once --jobs N`` until none are left."""
    insert_jobs(url, count, schema)
    log = logs / f"{command.system}-drain-j{jobs}.log"
    exit = _checked(run_to_exit(command, url, jobs, log), f"{command.system} worker --once --jobs {jobs}")
    remaining = count_jobs(url)
    details = {
        "jobs": count, "wall_s": exit.wall_s, "worker_cpu_s": exit.cpu_s,
        "remaining_jobs": remaining, "peak_rss_mb": exit.peak_rss_mb,
    }
    if remaining:
        raise Unavailable(f"{command.system} --once --jobs {jobs} left {remaining} of {count} jobs undone")
    # CPU the worker process itself burns per job (its start-up included): its own overhead, apart
    # from the server's. Peak RSS: the most memory it held at once.
    figures = {
        f"drain_j{jobs}": count / exit.wall_s,
        f"cpu_j{jobs}": exit.cpu_s / count * 1e6,
        f"rss_j{jobs}": exit.peak_rss_mb,
    }
    return Measured(figures, details)
