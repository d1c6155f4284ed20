"""Looking after jobs: list them; complete, fail or reschedule them; retry one; unlock a dead worker's.

On graphile-worker 0.18's schema these go through upstream's SQL admin functions
(``complete_jobs``, ``permanently_fail_jobs``, ``reschedule_jobs``, ``force_unlock_workers``) and its
public ``jobs`` view, as Node's ``WorkerUtils`` do; on v0.1.0's schema, which has neither, through
plain SQL on its tables to the same effect. Either way :func:`complete_jobs`,
:func:`permanently_fail_jobs` and :func:`reschedule_jobs` leave alone a job that a worker is running
(one locked less than 4 hours ago, as upstream counts it), and say so in
:attr:`JobsChanged.running`. v0.1.0 locks a job's queue rather than the job: there a job counts as
running while its queue is locked, so in a named queue the jobs waiting behind the running one are
left alone too.

Each function takes ``connection_string`` (default ``DATABASE_URL``), ``pool`` or ``connection``, and
``schema``. A database part way between the two schemas is refused in one line, as the worker
refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.rows import class_row

from . import _defaults
from ._connections import borrow
from ._job import Job
from ._schema import DatabaseSchema, held_by, schema_named
from ._schema.jobs import PRIORITY_RANGE, TolerantTimestamptzLoader, check_run_at, fetch_job, fetch_rows, schema_too_old
from .errors import ConfigurationError, PayloadError

JobState = Literal["all", "locked", "failed", "dead", "unknown-task"]
JOB_STATES: tuple[JobState, ...] = ("all", "locked", "failed", "dead", "unknown-task")


@dataclass(frozen=True)
class JobSummary:
    """A job as the admin listing shows it, with the lock on it (on v0.1.0: on its queue).

    ``run_at`` is ``None`` when the database holds a time Python cannot represent (``infinity``,
    ``-infinity``, a BC date, a year past 9999); ``run_at_text`` always has the server's own text.
    ``key`` and ``flags`` are the job's key and flags (always ``None`` on v0.1.0's schema).
    """

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
    locked_at: datetime | None
    key: str | None = None
    flags: dict[str, bool] | None = None


@dataclass(frozen=True)
class JobsChanged:
    """What :func:`complete_jobs`, :func:`permanently_fail_jobs` or :func:`reschedule_jobs` did with
    the ids it was given: every id is in exactly one of the three lists.

    - ``jobs``: the jobs it changed, by id, as they are now (deleted ones as they were);
    - ``running``: ids it left alone because a worker is running the job (see the module's notes);
    - ``missing``: ids of no job (never added, or already completed or deleted).
    """

    jobs: list[Job]
    running: list[int]
    missing: list[int]


@dataclass(frozen=True)
class Unlocked:
    """What :func:`force_unlock_workers` released of one worker's: the ids of the jobs it held
    (always empty on v0.1.0's schema, which locks queues only) and the names of its queues."""

    worker_id: str
    job_ids: list[int]
    queue_names: list[str]


class _NoneForUnrepresentable(TolerantTimestamptzLoader):
    """A timestamptz Python cannot represent becomes ``None`` rather than failing the whole listing;
    the listing carries the server's own text beside it."""

    def unrepresentable(self, text: bytes) -> datetime | None:
        return None


async def list_jobs(
    state: JobState = "all",
    *,
    limit: int = 100,
    task: str | None = None,
    queue: str | None = None,
    flag: str | None = None,
    known_tasks: Collection[str] | None = None,
    schema: str = _defaults.SCHEMA,
    **target: Any,
) -> list[JobSummary]:
    """Jobs in ``state``: ``locked`` (held by a worker), ``failed`` (will be retried), ``dead``
    (attempts reached max_attempts: never retried unless you say so), ``unknown-task`` (their task
    is not among ``known_tasks``, so a worker with just those tasks never runs them), or ``all``.
    ``task``, ``queue`` and ``flag`` keep only the jobs of that task identifier, of that queue, or
    carrying that flag (flags need graphile-worker's 0.18 schema: on v0.1.0's,
    :class:`~kongtask.SchemaTooOld`)."""
    if state not in JOB_STATES:
        raise ConfigurationError(f"unknown job state {state!r}; choose one of {', '.join(JOB_STATES)}")
    if state == "unknown-task" and known_tasks is None:
        raise ConfigurationError("state 'unknown-task' needs known_tasks: the task names you have")
    params = {
        "state": state, "limit": limit, "task": task, "queue": queue, "flag": flag,
        "known_tasks": sorted(known_tasks or ()),
    }
    schema_named(schema)  # a bad schema name fails before any connection
    async with borrow(**target) as conn, conn.cursor(row_factory=class_row(JobSummary)) as cur:
        database = await held_by(conn, schema)
        if flag is not None and not database.capabilities.flags:
            raise schema_too_old(schema, "listing jobs by flag")
        cur.adapters.register_loader("timestamptz", _NoneForUnrepresentable)
        await cur.execute(database.list_jobs, params)
        return await cur.fetchall()


#: graphile-worker 0.18 keeps priority, attempts and max_attempts in smallints; kongtask keeps that
#: range on v0.1.0's schema too.
_SMALLINT_MAX = 2**15 - 1
_BIGINT_MAX = 2**63 - 1


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _job_ids(job_ids: Iterable[int]) -> list[int]:
    """``job_ids`` checked, each once, in the order given."""
    if isinstance(job_ids, (str, bytes)) or not isinstance(job_ids, Iterable):
        raise ConfigurationError(f"job_ids must be a list of job ids (whole numbers), got {job_ids!r}")
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        if not _whole(job_id) or not 1 <= job_id <= _BIGINT_MAX:
            raise ConfigurationError(f"a job id is a whole number from 1 to {_BIGINT_MAX}, got {job_id!r}")
    return ids


async def _change_jobs(
    statement: Callable[[DatabaseSchema], str], job_ids: Iterable[int], params: dict[str, Any],
    schema: str, target: dict[str, Any],
) -> JobsChanged:
    ids = _job_ids(job_ids)
    schema_named(schema)
    async with borrow(**target) as conn:
        database = await held_by(conn, schema)
        # Tolerant: a job added from SQL with run_at 'infinity' must still be completed or moved.
        rows = await fetch_rows(conn, statement(database), {"job_ids": ids, **params}, tolerant=True)
        changed = sorted((Job(*row) for row in rows), key=lambda job: job.id)
        done = {job.id for job in changed}
        left = [job_id for job_id in ids if job_id not in done]
        # The statement leaves a job alone only while a worker holds it: those still there are running.
        present = set()
        if left:
            present = {row[0] for row in await fetch_rows(conn, database.present_jobs, {"job_ids": left})}
    return JobsChanged(
        jobs=changed,
        running=[job_id for job_id in left if job_id in present],
        missing=[job_id for job_id in left if job_id not in present],
    )


async def complete_jobs(job_ids: Iterable[int], *, schema: str = _defaults.SCHEMA, **target: Any) -> JobsChanged:
    """Marks the jobs done: deletes them, as a worker does when their task succeeds, without running
    them. A job a worker is running is left alone (``running``)."""
    return await _change_jobs(lambda db: db.complete_jobs, job_ids, {}, schema, target)


async def permanently_fail_jobs(
    job_ids: Iterable[int], reason: str | None = None, *, schema: str = _defaults.SCHEMA, **target: Any
) -> JobsChanged:
    """Fails the jobs for good: ``reason`` (default ``"Manually marked as failed"``, upstream's text)
    becomes their ``last_error`` and their attempts are used up, so no worker runs them again unless
    you reschedule them with more attempts. A job a worker is running is left alone (``running``)."""
    if reason is not None:
        if not isinstance(reason, str):
            raise ConfigurationError(f"reason must be a string, got {reason!r}")
        if "\x00" in reason:
            raise ConfigurationError("reason holds a NUL character, which PostgreSQL text cannot; remove it")
    return await _change_jobs(lambda db: db.permanently_fail_jobs, job_ids, {"reason": reason}, schema, target)


async def reschedule_jobs(
    job_ids: Iterable[int],
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
    attempts: int | None = None,
    max_attempts: int | None = None,
    schema: str = _defaults.SCHEMA,
    **target: Any,
) -> JobsChanged:
    """Changes what is given of the jobs' ``run_at`` (an aware datetime), ``priority`` (a smaller
    number runs first), ``attempts`` (how many were made: 0 to start afresh) and ``max_attempts``.
    A job a worker is running is left alone (``running``)."""
    if run_at is None and priority is None and attempts is None and max_attempts is None:
        raise ConfigurationError("give run_at, priority, attempts or max_attempts (any of them)")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise ConfigurationError(f"run_at must be a datetime, got {run_at!r}")
        try:
            check_run_at(run_at)
        except PayloadError as exc:
            raise ConfigurationError(str(exc)) from None
    low, high = PRIORITY_RANGE
    for name, value, least, most in (
        ("priority", priority, low, high), ("attempts", attempts, 0, _SMALLINT_MAX),
        ("max_attempts", max_attempts, 1, _SMALLINT_MAX),
    ):
        if value is not None and (not _whole(value) or not least <= value <= most):
            raise ConfigurationError(f"{name} must be a whole number from {least} to {most}, got {value!r}")
    params = {"run_at": run_at, "priority": priority, "attempts": attempts, "max_attempts": max_attempts}
    return await _change_jobs(lambda db: db.reschedule_jobs, job_ids, params, schema, target)


async def force_unlock_workers(
    worker_ids: Iterable[str], *, schema: str = _defaults.SCHEMA, **target: Any
) -> list[Unlocked]:
    """Releases every job and queue the workers hold (workers you know are dead), so that their jobs
    run again now rather than when the lock expires; one :class:`Unlocked` per worker id, in order.

    A worker id is the lock id a worker logs when it starts and that ``list_jobs("locked")`` shows
    (on 0.18's schema, Node's and kongtask's alike, one per process). Unlocking a worker that is in
    fact alive lets its running jobs run a second time elsewhere.
    """
    if isinstance(worker_ids, (str, bytes)) or not isinstance(worker_ids, Iterable):
        raise ConfigurationError(f"worker_ids must be a list of worker ids, got {worker_ids!r}")
    ids = list(dict.fromkeys(worker_ids))
    for worker_id in ids:
        if not isinstance(worker_id, str) or not worker_id or "\x00" in worker_id:
            raise ConfigurationError(f"a worker id is a non-empty string without NUL, got {worker_id!r}")
    schema_named(schema)
    async with borrow(**target) as conn:
        database = await held_by(conn, schema)
        rows = await fetch_rows(conn, database.force_unlock_workers, {"worker_ids": ids})
    return [Unlocked(worker_id, list(job_ids), list(queues)) for worker_id, job_ids, queues in rows]


async def unlock_worker(worker_id: str, *, schema: str = _defaults.SCHEMA, **target: Any) -> list[str]:
    """Releases everything ``worker_id`` holds (see :func:`force_unlock_workers`); returns the names
    of its queues."""
    [unlocked] = await force_unlock_workers([worker_id], schema=schema, **target)
    return unlocked.queue_names


async def retry_job(job_id: int, *, schema: str = _defaults.SCHEMA, **target: Any) -> Job | None:
    """Makes a job due now with one more attempt, even one that used up its attempts; returns it, or
    ``None`` when there is no such job (on 0.18's schema, also when a worker is running it)."""
    schema_named(schema)
    async with borrow(**target) as conn:
        database = await held_by(conn, schema)
        return await fetch_job(conn, (database.retry_job, {"job_id": job_id}), tolerant=True)


async def reschedule_job(
    job_id: int,
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
    schema: str = _defaults.SCHEMA,
    **target: Any,
) -> Job | None:
    """One job's :func:`reschedule_jobs`: its ``run_at`` and/or ``priority``; returns the job, or
    ``None`` when there is no such job or a worker is running it."""
    if run_at is None and priority is None:
        raise ConfigurationError("give run_at, priority, or both")
    changed = await reschedule_jobs([job_id], run_at=run_at, priority=priority, schema=schema, **target)
    return changed.jobs[0] if changed.jobs else None


async def delete_job(job_id: int, *, schema: str = _defaults.SCHEMA, **target: Any) -> Job | None:
    """One job's :func:`complete_jobs`: deletes it; returns it, or ``None`` when there is no such job
    or a worker is running it."""
    changed = await complete_jobs([job_id], schema=schema, **target)
    return changed.jobs[0] if changed.jobs else None
