"""What the dashboard reads: counts, locks, a page of jobs, one job, and throughput over time.

Every statement is a ``dashboard_*`` block of the generation's statements file (``v0_1.sql``,
``v0_18.sql``), so both generations answer with the same columns. Writes go through
:mod:`kongtask.admin`, never through here.

What the tables can say, and what they cannot: a job that completes is deleted, so nothing in
them tells how many jobs ran in the last hour. :class:`Throughput` measures it while the dashboard
runs, from PostgreSQL's running total of rows deleted from the jobs table.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import class_row, dict_row

from .._schema import DatabaseSchema
from .._schema.jobs import TolerantTimestamptzLoader

#: Each job is in exactly one of these, the first that fits (see the statements files).
STATES = ("locked", "dead", "failed", "scheduled", "due")

#: The most named queues the overview lists (the largest), and the most locked queues.
QUEUES_SHOWN = 50
LOCKED_QUEUES_SHOWN = 100


class _NoneForUnrepresentable(TolerantTimestamptzLoader):
    """A time Python cannot hold (``infinity``, BC, past 9999) reads as ``None``; rows that can
    hold one carry the server's own text beside it."""

    def unrepresentable(self, text: bytes) -> datetime | None:
        return None


def _tolerant(cursor: psycopg.AsyncCursor[Any]) -> None:
    cursor.adapters.register_loader("timestamptz", _NoneForUnrepresentable)


# --- counts ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """The jobs of one task or one queue, by state (empty when only the total is estimated)."""

    name: str
    total: int = 0
    states: dict[str, int] = field(default_factory=dict)
    failed_lately: int = 0


@dataclass(frozen=True)
class Counts:
    """The overview's numbers, exact or (``estimated``) from the planner's statistics."""

    tasks: list[Tally]
    queues: list[Tally]
    states: dict[str, int]
    total: int
    failed_lately: int | None
    estimated: bool
    took_ms: float


async def count_jobs(conn: psycopg.AsyncConnection[Any], database: DatabaseSchema, timeout: float) -> Counts:
    """Exact counts in one pass over the table, or estimates when that takes over ``timeout`` s."""
    started = time.perf_counter()
    try:
        async with conn.transaction():
            await conn.execute(database.dashboard_count_settings, {"milliseconds": str(max(1, int(timeout * 1000)))})
            cursor = await conn.execute(database.dashboard_counts, (), prepare=False)
            rows = await cursor.fetchall()
    except psycopg.errors.QueryCanceled:
        return await _estimate(conn, database, started)
    tasks: dict[str, Tally] = {}
    queues: dict[str, Tally] = {}
    states = dict.fromkeys(STATES, 0)
    failed_lately = 0
    for by_queue, name, state, jobs, lately in rows:
        if by_queue:
            if name is None:  # jobs without a queue: counted under their tasks
                continue
            tally = queues.setdefault(name, Tally(name))
        else:
            tally = tasks.setdefault(name, Tally(name))
            states[state] += jobs
            failed_lately += lately
        tally.states[state] = tally.states.get(state, 0) + jobs
        tally.total += jobs
        tally.failed_lately += lately
    largest = sorted(queues.values(), key=lambda t: (-t.total, t.name))[:QUEUES_SHOWN]
    return Counts(
        tasks=sorted(tasks.values(), key=lambda t: t.name), queues=largest, states=states,
        total=sum(states.values()), failed_lately=failed_lately, estimated=False,
        took_ms=(time.perf_counter() - started) * 1000,
    )


async def _estimate(conn: psycopg.AsyncConnection[Any], database: DatabaseSchema, started: float) -> Counts:
    params = {"schema": database.name}
    stats = await read_table_stats(conn, database)
    cursor = await conn.execute(database.dashboard_task_estimates, params)
    tasks = [Tally(name, total=round(share * stats.estimate)) for name, share in await cursor.fetchall()]
    return Counts(
        tasks=sorted(tasks, key=lambda t: t.name), queues=[], states={}, total=stats.estimate,
        failed_lately=None, estimated=True, took_ms=(time.perf_counter() - started) * 1000,
    )


# --- locks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockHolder:
    """A worker (a pool, on 0.18) holding queues or jobs, and its freshest lock."""

    locked_by: str
    queues: int
    jobs: int
    latest: datetime | None


@dataclass(frozen=True)
class LockedQueue:
    queue_name: str
    locked_by: str
    locked_at: datetime | None
    own_queue: bool  # v0.1.0: the queue of its own that a job without a queue was given


async def read_locks(
    conn: psycopg.AsyncConnection[Any], database: DatabaseSchema
) -> tuple[list[LockHolder], list[LockedQueue]]:
    async with conn.cursor(row_factory=class_row(LockHolder)) as cursor:
        _tolerant(cursor)
        await cursor.execute(database.dashboard_lock_holders, ())
        holders = await cursor.fetchall()
    async with conn.cursor(row_factory=class_row(LockedQueue)) as cursor:
        _tolerant(cursor)
        await cursor.execute(database.dashboard_locked_queues, {"limit": LOCKED_QUEUES_SHOWN})
        queues = await cursor.fetchall()
    return holders, queues


@dataclass(frozen=True)
class Overview:
    """What the overview shows from the tables: counts and locks, read together and cached together."""

    counts: Counts
    holders: list[LockHolder] | None  # None: not read in time
    locked_queues: list[LockedQueue]


async def read_overview(conn: psycopg.AsyncConnection[Any], database: DatabaseSchema, timeout: float) -> Overview:
    """Counts and locks, each within ``timeout`` seconds: a jobs table locked by a migration (or a
    VACUUM FULL) gives estimates and no locks, never a page that waits."""
    counts = await count_jobs(conn, database, timeout)
    try:
        async with conn.transaction():
            await conn.execute(database.dashboard_count_settings, {"milliseconds": str(max(1, int(timeout * 1000)))})
            holders, locked_queues = await read_locks(conn, database)
    except psycopg.errors.QueryCanceled:
        return Overview(counts, None, [])
    return Overview(counts, holders, locked_queues)


# --- the job list: keyset pages ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilter:
    """What the job list keeps: exact task and queue names, a state, text inside last_error."""

    task: str | None = None
    queue: str | None = None
    state: str | None = None
    error: str | None = None

    def params(self) -> dict[str, Any]:
        return {"task": self.task, "queue": self.queue, "state": self.state, "error": _contains(self.error)}


def _contains(text: str | None) -> str | None:
    """An ILIKE pattern that finds ``text`` anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    if text is None:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class JobRow:
    id: int
    task_identifier: str
    queue_name: str | None
    priority: int
    run_at: datetime | None
    run_at_text: str
    attempts: int
    max_attempts: int
    last_error: str | None
    locked_by: str | None
    state: str


@dataclass(frozen=True)
class JobsPage:
    """One page of jobs, newest first, and the cursors of the pages beside it (None: no such page)."""

    rows: list[JobRow]
    newer_than: int | None  # the "newer" link shows the jobs after this id
    older_than: int | None  # the "older" link shows the jobs before this id


async def read_page(
    conn: psycopg.AsyncConnection[Any],
    database: DatabaseSchema,
    where: JobFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> JobsPage:
    """The ``size`` jobs just below ``before`` (newest first), or just above ``after``."""
    params = where.params() | {"before": before, "after": after, "limit": size + 1}
    statement = database.dashboard_jobs_newer if after is not None else database.dashboard_jobs_older
    async with conn.cursor(row_factory=class_row(JobRow)) as cursor:
        _tolerant(cursor)
        # Never a generic plan: each filter left out must fold away for its page to use the index.
        await cursor.execute(statement, params, prepare=False)
        rows = await cursor.fetchall()
    more = len(rows) > size
    rows = rows[:size]
    if after is not None:  # fetched oldest first
        rows.reverse()
        return JobsPage(rows, rows[0].id if more else None, rows[-1].id if rows else after + 1)
    newer = None if before is None else rows[0].id if rows else before - 1
    return JobsPage(rows, newer, rows[-1].id if more else None)


# --- one job ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobDetail:
    id: int
    task_identifier: str
    queue_name: str | None
    own_queue: bool
    payload: str
    priority: int
    run_at: datetime | None
    run_at_text: str
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime | None
    updated_at: datetime | None
    locked_by: str | None
    locked_at: datetime | None
    queue_jobs: int | None
    key: str | None
    revision: int | None
    flags: list[str]
    state: str


async def read_job(conn: psycopg.AsyncConnection[Any], database: DatabaseSchema, job_id: int) -> JobDetail | None:
    async with conn.cursor(row_factory=class_row(JobDetail)) as cursor:
        _tolerant(cursor)
        await cursor.execute(database.dashboard_job, {"job_id": job_id})
        return await cursor.fetchone()


# --- throughput --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableStats:
    """PostgreSQL's running totals for the jobs table, and its estimate of the rows in it."""

    inserted: int
    deleted: int
    estimate: int


async def read_table_stats(conn: psycopg.AsyncConnection[Any], database: DatabaseSchema) -> TableStats:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(database.dashboard_table_stats, {"schema": database.name})
        row = await cursor.fetchone()
    return TableStats(**row) if row else TableStats(0, 0, 0)


@dataclass(frozen=True)
class Rates:
    """Jobs added and completed (deleted) over ``minutes``, and the completions of each minute."""

    minutes: float
    added: int
    completed: int
    per_minute: list[int]


class Throughput:
    """Samples of the jobs table's running totals, kept for an hour: the dashboard's own memory of
    how many jobs were added and completed, since the tables keep none.

    A deleted row is a completed job, or one deleted by hand. PostgreSQL publishes a session's
    counts when its transaction ends (at most about once a second, and within about ten seconds
    of going idle), so the figures trail the truth by seconds.
    """

    def __init__(self, keep: float = 3600.0) -> None:
        self.keep = keep
        self._samples: collections.deque[tuple[float, TableStats]] = collections.deque()

    def record(self, stats: TableStats, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._samples and (stats.deleted < self._samples[-1][1].deleted or
                              stats.inserted < self._samples[-1][1].inserted):
            self._samples.clear()  # statistics were reset (or another database): start again
        self._samples.append((now, stats))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.keep:
            self._samples.popleft()

    def rates(self, now: float | None = None) -> Rates | None:
        """What the samples say, or None before there are two of them."""
        if len(self._samples) < 2:
            return None
        now = time.monotonic() if now is None else now
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        buckets = [0] * 60
        previous = first
        for at, stats in list(self._samples)[1:]:
            minute = int((now - at) // 60)
            if minute < 60:
                buckets[59 - minute] += stats.deleted - previous.deleted
            previous = stats
        return Rates(
            minutes=(last_at - first_at) / 60, added=last.inserted - first.inserted,
            completed=last.deleted - first.deleted, per_minute=buckets,
        )
