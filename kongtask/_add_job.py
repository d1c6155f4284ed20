"""Adding jobs from application code: ``add_job`` (async) and ``add_job_sync``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import _connections
from ._defaults import SCHEMA as DEFAULT_SCHEMA
from ._job import Job
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
        job = await jobs.fetch_job(conn, statement)
    assert job is not None
    return job


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
        job = jobs.fetch_job_sync(conn, statement)
    assert job is not None
    return job
