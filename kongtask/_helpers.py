"""What a running task receives as ``helpers``.

An ``async def`` task gets :class:`Helpers`, whose database methods are awaited on the worker's
pool. A plain ``def`` task runs in a thread and gets :class:`SyncHelpers`: the same methods, called
without asyncio, each handed over to the worker's event loop and waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from ._job import Job, JobOptions, Unpack
from ._resources import SharedResources
from ._schema import jobs


def _job_logger(task_name: str, job: Job) -> logging.Logger:
    # A Logger of its own, not registered with logging's manager (so it is freed with the job),
    # whose records carry the job id and propagate to ``kongtask.task.<name>``.
    parent = logging.getLogger(f"kongtask.task.{task_name}")
    logger = logging.Logger(parent.name)
    logger.parent = parent

    def tag(record: logging.LogRecord) -> bool:
        record.job_id = job.id
        record.task = record.task_identifier = task_name
        record.queue = job.queue_name
        record.attempt = job.attempts
        record.max_attempts = job.max_attempts
        return True

    logger.addFilter(tag)
    return logger


class _HelpersBase:
    def __init__(self, job: Job, resources: SharedResources) -> None:
        self.job = job
        self._resources = resources
        self._logger: logging.Logger | None = None

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``kongtask.task.<task>`` whose records carry ``job_id``."""
        if self._logger is None:
            self._logger = _job_logger(self.job.task_identifier, self.job)
        return self._logger


T = TypeVar("T")


async def _on_a_live_connection(
    pool: AsyncConnectionPool, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
) -> T:
    """Runs ``work`` on a pooled connection, once more on another if the first turns out dead.

    After a server restart the pool still holds the connections that died with it; a task's query
    must not fail for that (the job would be retried anyway, so trying once more adds no new risk
    of running a statement twice).
    """
    used: psycopg.AsyncConnection[Any] | None = None
    try:
        async with pool.connection() as used:
            return await work(used)
    except psycopg.OperationalError:
        if used is None or not used.broken:
            raise
    await pool.check()  # drop the idle connections that died with it
    async with pool.connection() as conn:
        return await work(conn)


class Helpers(_HelpersBase):
    """Helpers for ``async def`` tasks."""

    async def add_job(self, identifier: str, payload: Any = None, **options: Unpack[JobOptions]) -> Job:
        """Adds a job, with the same options as :func:`kongtask.add_job`."""
        schema = self._resources.schema
        return await _on_a_live_connection(
            self._resources.pool, lambda conn: jobs.add_job(conn, schema, identifier, payload, **options)
        )

    @contextlib.asynccontextmanager
    async def with_pg_client(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection from the worker's pool for the block: ``async with helpers.with_pg_client() as conn``."""
        async with self._resources.pool.connection() as conn:
            yield conn

    async def query(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        """Runs one statement on the worker's pool; returns its rows (``[]`` when it has none)."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description else []

        return await _on_a_live_connection(self._resources.pool, run)


class SyncHelpers(_HelpersBase):
    """Helpers for plain ``def`` tasks, which run in a thread: no asyncio needed."""

    def __init__(self, job: Job, resources: SharedResources) -> None:
        super().__init__(job, resources)
        self._async = Helpers(job, resources)

    def _on_loop(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._resources.loop).result()

    def add_job(self, identifier: str, payload: Any = None, **options: Unpack[JobOptions]) -> Job:
        """Adds a job, with the same options as :func:`kongtask.add_job`."""
        job: Job = self._on_loop(self._async.add_job(identifier, payload, **options))
        return job

    def query(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        """Runs one statement on the worker's pool; returns its rows (``[]`` when it has none)."""
        rows: list[tuple[Any, ...]] = self._on_loop(self._async.query(query, params))
        return rows

    @contextlib.contextmanager
    def with_pg_client(self) -> Iterator[psycopg.Connection[Any]]:
        """A blocking connection for the block, from a small pool kept beside the worker's."""
        with self._resources.sync_pool().connection() as conn:
            yield conn
