"""Adding jobs from application code: ``add_job`` (async) and ``add_job_sync``, and many at once:
``add_jobs`` and ``add_jobs_sync``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import _connections
from ._defaults import SCHEMA as DEFAULT_SCHEMA
from ._job import Job, JobOptions, JobSpec, Unpack
from ._schema import jobs


async def add_job(
    identifier: str,
    payload: Any = None,
    *,
    connection_string: str | None = None,
    pool: AsyncConnectionPool | None = None,
    connection: psycopg.AsyncConnection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
    **options: Unpack[JobOptions],
) -> Job:
    """Adds a job and returns it.

    The job goes through ``connection`` (inside its current transaction, so it is added only if
    that commits), a connection from ``pool``, or a new connection to ``connection_string`` (default
    ``DATABASE_URL``). The options are those of :class:`~kongtask.JobOptions` (``queue_name``,
    ``run_at``, ``max_attempts``, ``priority``, ``job_key``, ``job_key_mode``, ``flags``). ``run_at``
    must be timezone-aware; the payload must be JSON-serialisable; everything is checked before
    anything reaches the database, and a bad value raises :class:`~kongtask.PayloadError`.
    """
    job = jobs.plan_add_job(schema, identifier, payload, **options)
    async with _connections.borrow(connection_string, pool, connection) as conn:
        return await jobs.insert_job(conn, job)


def add_job_sync(
    identifier: str,
    payload: Any = None,
    *,
    connection_string: str | None = None,
    pool: ConnectionPool | None = None,
    connection: psycopg.Connection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
    **options: Unpack[JobOptions],
) -> Job:
    """The blocking twin of :func:`add_job`, for code without an event loop (Django, scripts)."""
    job = jobs.plan_add_job(schema, identifier, payload, **options)
    with _connections.borrow_sync(connection_string, pool, connection) as conn:
        return jobs.insert_job_sync(conn, job)


async def add_jobs(
    specs: Iterable[JobSpec | Mapping[str, Any]],
    *,
    connection_string: str | None = None,
    pool: AsyncConnectionPool | None = None,
    connection: psycopg.AsyncConnection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
    job_key_preserve_run_at: bool = False,
) -> int:
    """Adds many jobs at once, all or none, and returns how many were added.

    Each spec is a :class:`JobSpec`, or a mapping with its keys (``identifier``, and any of
    ``payload``, ``queue_name``, ``run_at``, ``max_attempts``, ``priority``, ``job_key``, ``flags``);
    what a spec leaves out takes :func:`add_job`'s default. On the 0.18 schema a job whose
    ``job_key`` a waiting job has replaces it, keeping its run_at if ``job_key_preserve_run_at``.
    Every job is checked as :func:`add_job` checks one before anything
    is sent; a bad one raises :class:`~kongtask.PayloadError` naming its index (``job 3: ...``).
    The jobs go in as few INSERT statements as their number allows (10,000 rows each), inside one
    transaction. On ``connection`` they join its current transaction (in a savepoint when one is
    open, so a failure leaves it usable) and are added only if that commits, as with add_job.

    Returns the count rather than the rows: reading back 100,000 rows costs about a third of the
    time. Use :func:`add_job` where you need a job's row.

    Many jobs for one named queue are slow to add in one go: the v0.1.0 schema counts each job into
    its queue's row, and PostgreSQL keeps every version of that row until the transaction ends, so
    the time grows with the square of the jobs per queue (10,000 in one queue take about a second).
    """
    statements = jobs.add_jobs_statements(schema, specs, job_key_preserve_run_at=job_key_preserve_run_at)
    if not statements:
        return 0
    async with _connections.borrow(connection_string, pool, connection) as conn:
        return await jobs.insert_jobs(conn, statements)


def add_jobs_sync(
    specs: Iterable[JobSpec | Mapping[str, Any]],
    *,
    connection_string: str | None = None,
    pool: ConnectionPool | None = None,
    connection: psycopg.Connection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
    job_key_preserve_run_at: bool = False,
) -> int:
    """The blocking twin of :func:`add_jobs`."""
    statements = jobs.add_jobs_statements(schema, specs, job_key_preserve_run_at=job_key_preserve_run_at)
    if not statements:
        return 0
    with _connections.borrow_sync(connection_string, pool, connection) as conn:
        return jobs.insert_jobs_sync(conn, statements)


async def remove_job(
    job_key: str,
    *,
    connection_string: str | None = None,
    pool: AsyncConnectionPool | None = None,
    connection: psycopg.AsyncConnection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> Job | None:
    """Removes the waiting job with ``job_key`` and returns it (None when no job has the key).

    A job that is running is not stopped: it loses its key and its remaining attempts, so it is not
    retried. Needs graphile-worker's 0.18 schema (:class:`~kongtask.SchemaTooOld` otherwise).
    """
    async with _connections.borrow(connection_string, pool, connection) as conn:
        return await jobs.remove_job(conn, schema, job_key)


def remove_job_sync(
    job_key: str,
    *,
    connection_string: str | None = None,
    pool: ConnectionPool | None = None,
    connection: psycopg.Connection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> Job | None:
    """The blocking twin of :func:`remove_job`."""
    with _connections.borrow_sync(connection_string, pool, connection) as conn:
        return jobs.remove_job_sync(conn, schema, job_key)
