"""Adding jobs from application code: ``add_job`` (async) and ``add_job_sync``, and many at once:
``add_jobs`` and ``add_jobs_sync``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import _connections
from ._defaults import SCHEMA as DEFAULT_SCHEMA
from ._job import Job, JobSpec
from ._schema import jobs


async def add_job(
    identifier: str,
    payload: Any = None,
    *,
    queue_name: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    connection_string: str | None = None,
    pool: AsyncConnectionPool | None = None,
    connection: psycopg.AsyncConnection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> Job:
    """Adds a job and returns it.

    The job goes through ``connection`` (inside its current transaction, so it is added only if
    that commits), a connection from ``pool``, or a new connection to ``connection_string`` (default
    ``DATABASE_URL``). ``run_at`` must be timezone-aware; the payload must be JSON-serialisable, and
    is checked before anything reaches the database.
    """
    statement = jobs.add_job_statement(
        schema, identifier, payload, queue_name=queue_name, run_at=run_at, max_attempts=max_attempts
    )
    async with _connections.borrow(connection_string, pool, connection) as conn:
        return await jobs.fetch_added_job(conn, statement, identifier, queue_name)


def add_job_sync(
    identifier: str,
    payload: Any = None,
    *,
    queue_name: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    connection_string: str | None = None,
    pool: ConnectionPool | None = None,
    connection: psycopg.Connection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> Job:
    """The blocking twin of :func:`add_job`, for code without an event loop (Django, scripts)."""
    statement = jobs.add_job_statement(
        schema, identifier, payload, queue_name=queue_name, run_at=run_at, max_attempts=max_attempts
    )
    with _connections.borrow_sync(connection_string, pool, connection) as conn:
        return jobs.fetch_added_job_sync(conn, statement, identifier, queue_name)


async def add_jobs(
    specs: Iterable[JobSpec | Mapping[str, Any]],
    *,
    connection_string: str | None = None,
    pool: AsyncConnectionPool | None = None,
    connection: psycopg.AsyncConnection[Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> int:
    """Adds many jobs at once, all or none, and returns how many were added.

    Each spec is a :class:`JobSpec`, or a mapping with its keys (``identifier``, and any of
    ``payload``, ``queue_name``, ``run_at``, ``max_attempts``); what a spec leaves out takes
    :func:`add_job`'s default. Every job is checked as :func:`add_job` checks one before anything
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
    statements = jobs.add_jobs_statements(schema, specs)
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
) -> int:
    """The blocking twin of :func:`add_jobs`."""
    statements = jobs.add_jobs_statements(schema, specs)
    if not statements:
        return 0
    with _connections.borrow_sync(connection_string, pool, connection) as conn:
        return jobs.insert_jobs_sync(conn, statements)
