"""The library's entry points: ``run``, ``run_once`` and ``migrate``, and how their options combine.

Options mirror upstream's: exactly one of ``task_directory`` or ``task_list``; at most one of
``pool`` or ``connection_string``, else ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import _connections, _defaults
from ._cron_scheduler import CronScheduler
from ._job import Unpack
from ._observer import NO_OBSERVER
from ._options import ResolvedOptions, RunOptions
from ._outages import Backoff
from ._schema import held_by, schema_named, v0_18
from ._schema.jobs import register_tolerant_loaders, schema_too_old
from ._schema.migrate import load_migrations, migrate_connection, resolve_target
from ._worker import WorkerConfig
from ._worker_pool import Runner
from .errors import ConfigurationError, ConnectionFailed
from .tasks import Task, a_type_name, load_task_directory

if TYPE_CHECKING:
    from ._probes import MetricsServer

log = logging.getLogger("kongtask.runner")

#: Connections beyond one per worker, for what tasks run through their helpers.
_EXTRA_POOL_CONNECTIONS = 2


def resolve_connection_string(pool: AsyncConnectionPool | None, connection_string: str | None) -> str | None:
    """The connection string to open a pool with, or ``None`` when ``pool`` is given."""
    if pool is not None and connection_string is not None:
        raise ConfigurationError("give either a pool or a connection string, not both")
    if pool is not None:
        return None
    return _connections.conninfo_or_environment(connection_string)


def _resolve_tasks(task_directory: str | Path | None, task_list: Mapping[str, Task] | None) -> dict[str, Task]:
    if task_directory is not None and task_list is not None:
        raise ConfigurationError("give either task_directory or task_list, not both")
    if task_list is not None:
        tasks = dict(task_list)
    elif task_directory is not None:
        tasks = load_task_directory(task_directory)
    else:
        raise ConfigurationError("no tasks given: pass task_directory= (a folder of task files) or task_list=")
    if not tasks:
        where = f"task folder {task_directory} has no task files" if task_list is None else "task_list is empty"
        raise ConfigurationError(f"no runnable tasks: {where}; a worker needs at least one task")
    for name, fn in tasks.items():
        if not callable(fn):
            raise ConfigurationError(f"task {name!r} is {a_type_name(fn)}, not a function")
    return tasks


async def _configure_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    # Once per connection of a pool kongtask owns; on a caller's pool the worker sets this per
    # statement instead, leaving the caller's connections as they were.
    register_tolerant_loaders(conn.adapters)


#: While a worker waits for the database at start, how often it says it still waits (seconds).
_STILL_WAITING_EVERY_S = 60.0


async def _migrate_with_retry(conninfo: str, schema: str, *, retry: bool) -> None:
    """Migrates before any worker starts; a continuous run waits for the database to come up.

    The wait is said once, then at most once a minute, not on every try.
    """
    backoff = Backoff(ceiling=10.0)
    waiting_since: float | None = None
    last_said = 0.0
    while True:
        try:
            conn = await _connections.connect(conninfo)
        except ConnectionFailed as exc:
            if not (retry and exc.transient):
                raise
            delay = backoff.next()
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = last_said = now
                log.warning("%s; waiting for it, retrying with backoff", exc)
            elif now - last_said >= _STILL_WAITING_EVERY_S:
                last_said = now
                log.warning("still waiting for PostgreSQL after %.0fs: %s", now - waiting_since, exc)
            else:
                log.debug("%s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            continue
        if waiting_since is not None:
            log.warning("PostgreSQL answered after %.1fs", time.monotonic() - waiting_since)
        async with conn:
            await migrate_connection(conn, schema)
        return


def _log_success(given: bool | None) -> bool:
    # Upstream's NO_LOG_SUCCESS is honoured only when the caller has not said.
    return given if given is not None else not os.environ.get("NO_LOG_SUCCESS")


async def start(options: ResolvedOptions, *, once: bool) -> Runner:
    """Checks the options, migrates, and starts the workers."""
    options.check()
    schema_named(options.schema)  # a schema name PostgreSQL cannot hold fails before any connection
    tasks = _resolve_tasks(options.task_directory, options.task_list)
    conninfo = resolve_connection_string(options.pool, options.connection_string)
    server = None
    if options.metrics_port is not None:
        from ._probes import MetricsServer  # prometheus_client, only when metrics are on

        # Before any connection: a port in use fails at once, and /healthz answers while we wait.
        server = MetricsServer.start(options.metrics_host, options.metrics_port)
    try:
        return await _start_pool(options, tasks, conninfo, once=once, server=server)
    except BaseException:
        if server is not None:
            await server.close()
        raise


async def _start_pool(
    options: ResolvedOptions, tasks: dict[str, Task], conninfo: str | None, *, once: bool, server: MetricsServer | None
) -> Runner:
    pool = options.pool
    if pool is None:
        assert conninfo is not None
        _connections.connection_kwargs(conninfo)  # a malformed string fails here, in one line
        await _migrate_with_retry(conninfo, options.schema, retry=not once)
        pool = AsyncConnectionPool(
            conninfo,
            kwargs=_connections.connection_kwargs(conninfo),
            min_size=1,
            max_size=options.concurrency + _EXTRA_POOL_CONNECTIONS,
            open=False,
            name="kongtask",
            configure=_configure_connection,
        )
        await pool.open()
    else:
        _connections.pool_conninfo(pool)  # fail now, not in the listener, if kongtask cannot open its own
        async with pool.connection() as conn:
            await migrate_connection(conn, options.schema)
    try:
        async with pool.connection() as conn:
            database = await held_by(conn, options.schema)
            if options.forbidden_flags is not None and not database.capabilities.flags:
                raise schema_too_old(options.schema, "forbidden_flags")
            if database.register_tasks is not None:
                await conn.execute(database.register_tasks, {"task_names": sorted(tasks)})
        cron = None
        if options.cron_items and not once:  # upstream's run_once does not run cron either
            if not database.capabilities.cron:
                raise schema_too_old(options.schema, "cron")
            cron = CronScheduler(pool, v0_18.schema_named(options.schema), options.cron_items)
        config = WorkerConfig(
            tasks=tasks,
            decode_per_statement=options.pool is not None,
            database=database,
            poll_interval=options.poll_interval,
            job_expiry=options.job_expiry,
            log_success=_log_success(options.log_success),
            task_timeout=options.task_timeout,
            batch_size=options.batch_size,
            forbidden_flags=options.forbidden_flags,
            observer=NO_OBSERVER if server is None else server.metrics,
        )
        runner = Runner(
            config,
            pool,
            concurrency=options.concurrency,
            once=once,
            shutdown_timeout=options.shutdown_timeout,
            heartbeat_interval=options.heartbeat_interval,
            owns_pool=options.pool is None,
            handle_signals=options.handle_signals,
            cron=cron,
        )
        if server is not None:
            server.watch(runner, pool, database, concurrency=options.concurrency, task_names=config.task_names)
        return runner
    except BaseException:
        if options.pool is None:
            await pool.close()
        raise


async def run(**options: Unpack[RunOptions]) -> Runner:
    """Migrates, then runs ``concurrency`` workers until stopped; returns the running :class:`Runner`.

    The options (all keyword) are declared, and documented, once: :class:`kongtask._options.RunOptions`
    (tasks: ``task_directory`` or ``task_list``; database: ``pool``, ``connection_string`` or
    ``DATABASE_URL``) and the worker options of :class:`kongtask._options.WorkerOptions`.
    """
    return await start(ResolvedOptions(**options), once=False)


async def run_once(**options: Unpack[RunOptions]) -> None:
    """Migrates, then runs every runnable job with ``concurrency`` workers and returns.

    The options are those of :func:`run`.
    """
    runner = await start(ResolvedOptions(**options), once=True)
    await runner.wait()


async def migrate(
    *,
    connection_string: str | None = None,
    pool: AsyncConnectionPool | None = None,
    schema: str = _defaults.SCHEMA,
    to: int | str | None = None,
) -> list[int]:
    """Brings the database to migration ``to``; returns the numbers of the migrations applied.

    By default (``None``) that is graphile-worker v0.1.0's schema (migration 1), the one kongtask's
    worker runs on. ``"latest"`` (or 20) is graphile-worker 0.18's schema: opt in only when every
    worker sharing the database can run on it (see the README). A database past ``to`` is left as it
    is; kongtask never downgrades.
    """
    resolve_connection_string(pool, connection_string)
    schema_named(schema)  # a bad schema name fails before any connection
    resolve_target(to, load_migrations()[-1].number)  # and a bad target too
    async with _connections.borrow(connection_string, pool) as conn:
        return await migrate_connection(conn, schema, to=to)
