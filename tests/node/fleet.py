"""The mixed-fleet tests' shared parts: a kongtask worker and a Node worker drain one set of jobs,
each run recorded in ``public.fleet_runs`` by ``js/tasks/record_times.js`` or its twin
``py/record_times.py``, with start and end read from the database clock.
"""

from __future__ import annotations

import itertools
import subprocess
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import psycopg
from psycopg import sql

from tests.cli_support import Background
from tests.node.interop import SCHEMA, count_rows, tail
from tests.support import wait_until

FLEET_JOBS = 2000
FLEET_QUEUE = "fleet-queue"
FLEET_QUEUE_EVERY = 10  # every tenth job goes to the one named queue: 200 of them
#: How long each task pauses between recording its start and its end, in milliseconds. Jobs are
#: fetched in order, so with equal pauses the nine jobs between two of the queue's keep them
#: apart even without a queue lock. The queue's second hundred pause longer than the other workers
#: need for those nine: without the lock they would be in flight two at a time. Its first hundred
#: are as quick as the rest, so the queue keeps up and changes hands between kongtask and Node (a
#: worker that finishes a queue's job while that queue is behind goes straight on to its next).
FLEET_SLEEP_MS = 2
FLEET_SLOW_SLEEP_MS = 40
#: Deadline for the fleet to empty the jobs table. The drain takes seconds; the deadline stays below
#: kongtask's default job expiry (120 s), so a queue left locked with no job running fails the test
#: instead of being quietly reclaimed by the expiry.
FLEET_DRAIN_TIMEOUT_S = 90


def fleet_sleep_ms(i: int) -> int:
    """The pause of the fleet's job number ``i`` (1 to FLEET_JOBS)."""
    return FLEET_SLOW_SLEEP_MS if i % FLEET_QUEUE_EVERY == 0 and i > FLEET_JOBS // 2 else FLEET_SLEEP_MS


class FleetRun(NamedTuple):
    job_id: int
    queue_name: str | None
    i: int
    ran_by: str
    started_at: datetime
    ended_at: datetime | None


def create_fleet_runs_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "create table public.fleet_runs ("
            " seq serial primary key, job_id bigint not null, queue_name text, i int not null,"
            " ran_by text not null, started_at timestamptz not null, ended_at timestamptz)"
        )


def fleet_runs(url: str) -> list[FleetRun]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select job_id, queue_name, i, ran_by, started_at, ended_at from public.fleet_runs order by seq"
        ).fetchall()
    return [FleetRun(*row) for row in rows]


def overlaps(in_queue: list[FleetRun]) -> list[tuple[FleetRun, FleetRun]]:
    """Runs of one queue, by start: each that started before the one before it ended."""
    ordered = sorted(in_queue, key=lambda run: run.started_at)
    return [
        (before, after) for before, after in itertools.pairwise(ordered)
        if before.ended_at is None or after.started_at < before.ended_at
    ]


def fleet_state(url: str, queues_table: str) -> str:
    """What is left in the queue tables, for a drain that missed its deadline."""
    with psycopg.connect(url) as conn:
        now = conn.execute("select clock_timestamp()").fetchone()
        queues = conn.execute(
            sql.SQL(
                "select queue_name, job_count, locked_by, locked_at from {}"
                " order by locked_at nulls last, queue_name limit 20"
            ).format(sql.Identifier(SCHEMA, queues_table))
        ).fetchall()
        waiting = conn.execute(
            "select queue_name, count(*), min(id), max(attempts) from graphile_worker.jobs"
            " group by queue_name order by min(id) limit 20"
        ).fetchall()
    return (
        f"database clock: {now}\n{queues_table} (queue, job_count, locked_by, locked_at):\n"
        + "".join(f"  {row}\n" for row in queues)
        + "jobs (queue, count, first id, most attempts):\n"
        + "".join(f"  {row}\n" for row in waiting)
    )


def wait_for_drain(
    url: str, worker: Background, node: subprocess.Popen[str], node_log: Path, jobs_table: str, queues_table: str
) -> None:
    """Waits until ``jobs_table`` is empty while both workers run; a deadline or an early exit of
    either fails, showing the queues and both logs."""

    def drained() -> bool:
        for name, code in (("kongtask", worker.process.poll()), ("Node", node.poll())):
            if code is not None:
                raise AssertionError(f"the {name} worker exited ({code}) before the jobs ran out")
        return count_rows(url, jobs_table) == 0

    try:
        wait_until(drained, timeout=FLEET_DRAIN_TIMEOUT_S, interval=0.2, what="the fleet to drain the jobs")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n{fleet_state(url, queues_table)}--- kongtask ---\n{tail(worker.output())}\n"
            f"--- Node ---\n{tail(node_log.read_text(errors='replace'))}"
        ) from None
