"""Looking after stuck and failed jobs: list, unlock, retry, reschedule, delete.

Plain SQL on the v0.1.0 tables (no schema of their own), so they work on any graphile-worker
v0.1.0 database, whoever migrated it; a database past migration 1 (upstream 0.18's schema) is
refused in one line, as the worker refuses it. Each function takes ``connection_string`` (default
``DATABASE_URL``), ``pool`` or ``connection``, and ``schema``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.rows import class_row, tuple_row

from . import _defaults
from ._connections import borrow
from ._job import Job
from ._schema import DatabaseSchema, held_by, schema_named
from ._schema.jobs import TolerantTimestamptzLoader, fetch_job
from .errors import ConfigurationError

JobState = Literal["all", "locked", "failed", "dead", "unknown-task"]
JOB_STATES: tuple[JobState, ...] = ("all", "locked", "failed", "dead", "unknown-task")


@dataclass(frozen=True)
class JobSummary:
    """A job as the admin listing shows it, with the lock on its queue.

    ``run_at`` is ``None`` when the database holds a time Python cannot represent (``infinity``,
    ``-infinity``, a BC date, a year past 9999); ``run_at_text`` always has the server's own text.
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
    known_tasks: Collection[str] | None = None,
    schema: str = _defaults.SCHEMA,
    **target: Any,
) -> list[JobSummary]:
    """Jobs in ``state``: ``locked`` (their queue is held by a worker), ``failed`` (will be retried),
    ``dead`` (attempts reached max_attempts: never retried unless you say so), ``unknown-task``
    (their task is not among ``known_tasks``, so a worker with just those tasks never runs them),
    or ``all``. ``task`` and ``queue`` keep only the jobs of that task identifier or queue name."""
    if state not in JOB_STATES:
        raise ConfigurationError(f"unknown job state {state!r}; choose one of {', '.join(JOB_STATES)}")
    if state == "unknown-task" and known_tasks is None:
        raise ConfigurationError("state 'unknown-task' needs known_tasks: the task names you have")
    params = {
        "state": state, "limit": limit, "task": task, "queue": queue, "known_tasks": sorted(known_tasks or ()),
    }
    schema_named(schema)  # a bad schema name fails before any connection
    async with borrow(**target) as conn, conn.cursor(row_factory=class_row(JobSummary)) as cur:
        database = await held_by(conn, schema)
        cur.adapters.register_loader("timestamptz", _NoneForUnrepresentable)
        await cur.execute(database.list_jobs, params)
        return await cur.fetchall()


async def unlock_worker(worker_id: str, *, schema: str = _defaults.SCHEMA, **target: Any) -> list[str]:
    """Releases every queue ``worker_id`` holds (a worker you know is dead); returns their names."""
    schema_named(schema)
    async with borrow(**target) as conn:
        database = await held_by(conn, schema)
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(database.unlock_worker, {"worker_id": worker_id})
        return [row[0] for row in await cursor.fetchall()]


async def _one_job(
    statement: Callable[[DatabaseSchema], str], params: dict[str, Any], schema: str, target: dict[str, Any]
) -> Job | None:
    schema_named(schema)
    # Tolerant: a job added from SQL with run_at 'infinity' must still be retried or deleted.
    async with borrow(**target) as conn:
        database = await held_by(conn, schema)
        return await fetch_job(conn, (statement(database), params), tolerant=True)


async def retry_job(job_id: int, *, schema: str = _defaults.SCHEMA, **target: Any) -> Job | None:
    """Makes a job due now with one more attempt, even one that used up its attempts."""
    return await _one_job(lambda db: db.retry_job, {"job_id": job_id}, schema, target)


async def reschedule_job(
    job_id: int,
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
    schema: str = _defaults.SCHEMA,
    **target: Any,
) -> Job | None:
    """Changes a waiting job's ``run_at`` and/or ``priority`` (a smaller priority runs first)."""
    if run_at is None and priority is None:
        raise ConfigurationError("give run_at, priority, or both")
    if run_at is not None and run_at.tzinfo is None:
        raise ConfigurationError(f"run_at {run_at.isoformat()} has no time zone; pass an aware datetime")
    params = {"run_at": run_at, "priority": priority, "job_id": job_id}
    return await _one_job(lambda db: db.reschedule_job, params, schema, target)


async def delete_job(job_id: int, *, schema: str = _defaults.SCHEMA, **target: Any) -> Job | None:
    """Deletes a job; returns it, or ``None`` when there was no such job."""
    return await _one_job(lambda db: db.delete_job, {"job_id": job_id}, schema, target)
