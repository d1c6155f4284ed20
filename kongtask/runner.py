"""The library's entry points: ``run``, ``run_once`` and ``migrate``, and how their options combine.

Options mirror upstream's: exactly one of ``task_directory`` or ``task_list``; at most one of
``pool`` or ``connection_string``, else ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from . import _db
from ._db import Backoff
from .errors import ConfigurationError, ConnectionFailed
from .jobs import DEFAULT_JOB_EXPIRY
from .migrate import migrate_connection
from .pool import Runner
from .queries import DEFAULT_SCHEMA
from .tasks import Task, load_task_directory
from .worker import WorkerConfig

log = logging.getLogger("kongtask.runner")

#: Connections beyond one per worker, for what tasks run through their helpers.
_EXTRA_POOL_CONNECTIONS = 2


def resolve_connection_string(pool: AsyncConnectionPool | None, connection_string: str | None) -> str | None:
    """The connection string to open a pool with, or ``None`` when ``pool`` is given."""
    if pool is not None and connection_string is not None:
        raise ConfigurationError("give either a pool or a connection string, not both")
    if pool is not None:
        return None
    resolved = connection_string or os.environ.get("DATABASE_URL")
    if not resolved:
        raise ConfigurationError(
            "no database given: pass connection_string= or pool=, or set DATABASE_URL"
        )
    return resolved


def _resolve_tasks(task_directory: str | Path | None, task_list: Mapping[str, Task] | None) -> dict[str, Task]:
    if task_directory is not None and task_list is not None:
        raise ConfigurationError("give either task_directory or task_list, not both")
    if task_list is not None:
        tasks = dict(task_list)
    elif task_directory is not None:
        tasks = load_task_directory(task_directory)
    else:
        raise ConfigurationError("no tasks given: pass task_directory= (a folder of task files) or task_list=")
    for name, fn in tasks.items():
        if not callable(fn):
            raise ConfigurationError(f"task {name!r} is a {type(fn).__name__}, not a function")
    return tasks


async def _migrate_with_retry(conninfo: str, schema: str, *, retry: bool) -> None:
    """Migrates before any worker starts; a continuous run waits for the database to come up."""
    backoff = Backoff(ceiling=10.0)
    while True:
        try:
            conn = await _db.connect(conninfo)
        except ConnectionFailed as exc:
            if not retry:
                raise
            delay = backoff.next()
            log.warning("%s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            continue
        async with conn:
            await migrate_connection(conn, schema)
        return


async def _start(
    *,
    task_directory: str | Path | None,
    task_list: Mapping[str, Task] | None,
    pool: AsyncConnectionPool | None,
    connection_string: str | None,
    schema: str,
    concurrency: int,
    poll_interval: float,
    shutdown_timeout: float,
    job_expiry: timedelta,
    handle_signals: bool,
    once: bool,
) -> Runner:
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {concurrency}")
    if poll_interval <= 0:
        raise ConfigurationError(f"poll_interval must be positive, got {poll_interval}")
    tasks = _resolve_tasks(task_directory, task_list)
    conninfo = resolve_connection_string(pool, connection_string)
    owns_pool = pool is None
    if pool is None:
        assert conninfo is not None
        _db.connection_kwargs(conninfo)  # a malformed string fails here, in one line
        await _migrate_with_retry(conninfo, schema, retry=not once)
        pool = AsyncConnectionPool(
            conninfo,
            kwargs=_db.connection_kwargs(conninfo),
            min_size=1,
            max_size=concurrency + _EXTRA_POOL_CONNECTIONS,
            open=False,
            name="kongtask",
        )
        await pool.open()
    else:
        async with pool.connection() as conn:
            await migrate_connection(conn, schema)
    config = WorkerConfig(
        tasks=tasks,
        schema=schema,
        poll_interval=poll_interval,
        job_expiry=job_expiry,
        log_success=not os.environ.get("NO_LOG_SUCCESS"),
    )
    return Runner(
        config,
        pool,
        concurrency=concurrency,
        once=once,
        shutdown_timeout=shutdown_timeout,
        owns_pool=owns_pool,
        handle_signals=handle_signals,
    )


async def run(
    *,
    task_directory: str | Path | None = None,
    task_list: Mapping[str, Task] | None = None,
    pool: AsyncConnectionPool | None = None,
    connection_string: str | None = None,
    schema: str = DEFAULT_SCHEMA,
    concurrency: int = 1,
    poll_interval: float = 2.0,
    shutdown_timeout: float = 30.0,
    job_expiry: timedelta = DEFAULT_JOB_EXPIRY,
    handle_signals: bool = False,
) -> Runner:
    """Migrates, then runs ``concurrency`` workers until stopped; returns the running :class:`Runner`.

    New jobs wake an idle worker at once through ``LISTEN "jobs:insert"``; ``poll_interval``
    (seconds) is the fallback. With ``handle_signals``, SIGINT/SIGTERM stop gracefully and a second
    signal stops at once.
    """
    return await _start(
        task_directory=task_directory, task_list=task_list, pool=pool, connection_string=connection_string,
        schema=schema, concurrency=concurrency, poll_interval=poll_interval, shutdown_timeout=shutdown_timeout,
        job_expiry=job_expiry, handle_signals=handle_signals, once=False,
    )


async def run_once(
    *,
    task_directory: str | Path | None = None,
    task_list: Mapping[str, Task] | None = None,
    pool: AsyncConnectionPool | None = None,
    connection_string: str | None = None,
    schema: str = DEFAULT_SCHEMA,
    concurrency: int = 1,
    poll_interval: float = 2.0,
    shutdown_timeout: float = 30.0,
    job_expiry: timedelta = DEFAULT_JOB_EXPIRY,
    handle_signals: bool = False,
) -> None:
    """Migrates, then runs every runnable job with ``concurrency`` workers and returns."""
    runner = await _start(
        task_directory=task_directory, task_list=task_list, pool=pool, connection_string=connection_string,
        schema=schema, concurrency=concurrency, poll_interval=poll_interval, shutdown_timeout=shutdown_timeout,
        job_expiry=job_expiry, handle_signals=handle_signals, once=True,
    )
    await runner.wait()


async def migrate(
    *,
    connection_string: str | None = None,
    pool: AsyncConnectionPool | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> list[int]:
    """Brings the database to the newest schema; returns the numbers of the migrations applied."""
    conninfo = resolve_connection_string(pool, connection_string)
    if pool is not None:
        async with pool.connection() as conn:
            return await migrate_connection(conn, schema)
    assert conninfo is not None
    async with await _db.connect(conninfo) as conn:
        return await migrate_connection(conn, schema)
