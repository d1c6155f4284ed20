"""Databases for the benchmark: a fresh, migrated one per measurement, and the jobs in it."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from kongtask._schema.migrate import migrate_connection

from .results import V0_1, V0_18
from .server import Server

SCHEMA = "graphile_worker"

#: The upstream perfTest insert: every job in one statement, so one NOTIFY for all of them. On
#: v0.1.0, add_job puts each job in a queue of its own (a random name), as Node 0.1.0 did.
_INSERT_JOBS = (
    "select graphile_worker.add_job('log_if_999', json_build_object('id', i)) from generate_series(1, %s) i"
)
#: On 0.18, jobs in no queue (add_job's default there), straight into the private table: 0.3 s for
#: 20,000 where add_jobs takes 1 s and add_job row by row minutes (one NOTIFY each, each with a
#: random payload). The defaults are the table's, as add_job's are; the insert is not timed.
_INSERT_JOBS_0_18 = (
    "insert into graphile_worker._private_tasks (identifier) values ('log_if_999') on conflict do nothing",
    "insert into graphile_worker._private_jobs (task_id, payload)"
    " select t.id, json_build_object('id', i) from graphile_worker._private_tasks as t, generate_series(1, %s) i"
    " where t.identifier = 'log_if_999'",
)
#: Fresh planner statistics of the tables the worker's fetch reads.
_ANALYZE = {
    V0_1: ("analyze graphile_worker.jobs", "analyze graphile_worker.job_queues"),
    V0_18: ("analyze graphile_worker._private_jobs, graphile_worker._private_job_queues,"
            " graphile_worker._private_tasks",),
}
#: ``kongtask migrate --to`` for each schema.
_MIGRATE_TO: dict[str, str | None] = {V0_1: None, V0_18: "latest"}


def url_with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at another database; URLs stay URLs because the Node worker needs one."""
    if "://" in url:
        return urlunsplit(urlsplit(url)._replace(path="/" + dbname))
    return make_conninfo(url, dbname=dbname)


@contextmanager
def fresh_database(server: Server, label: str, schema: str = V0_1) -> Iterator[str]:
    """A new database migrated by kongtask to ``schema`` (v0.1.0 or 0.18), dropped afterwards;
    yields its URL.

    kongtask migrates even the databases the Node workers run on: Node 0.1.0 then sees the schema as
    already migrated, which is what the compatibility contract promises (its own migration would
    need pgcrypto, which not every server ships), and Node 0.18 finds every one of its 20
    migrations applied, as kongtask's upgrade promises.
    """
    name = f"kongtask_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    url = url_with_dbname(server.admin_url, name)
    try:
        asyncio.run(_migrate(url, _MIGRATE_TO[schema]))
        yield url
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


async def _migrate(url: str, to: str | None) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        # No `to` for v0.1.0: a build from before 0.18 (timed with this bench) has no such argument.
        await migrate_connection(conn, SCHEMA, **({"to": to} if to else {}))


def missing_schema(schema: str) -> str | None:
    """Why the kongtask this bench imports cannot build ``schema``'s databases; None when it can."""
    if schema == V0_18 and "to" not in inspect.signature(migrate_connection).parameters:
        return "this kongtask cannot migrate to 0.18 (a build from before `migrate --to`)"
    return None


def insert_jobs(url: str, count: int, schema: str = V0_1) -> None:
    """Adds ``count`` ``log_if_999`` jobs, then settles the server so the timed run starts clean."""
    with psycopg.connect(url, autocommit=True) as conn:
        if schema == V0_18:
            with conn.transaction():
                register, insert = _INSERT_JOBS_0_18
                conn.execute(register)
                conn.execute(insert, (count,))
        else:
            conn.execute(_INSERT_JOBS, (count,))
        # Fresh statistics and no checkpoint owed: otherwise autovacuum and the checkpointer wake up
        # at random points inside whichever timed run comes next, and the comparison gets noisy.
        for statement in _ANALYZE[schema]:
            conn.execute(statement)
        # Not a superuser on DATABASE_URL: no checkpoint, and the run is only a little noisier.
        with suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("checkpoint")


def count_jobs(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select count(*) from graphile_worker.jobs").fetchone()
    assert row is not None
    return int(row[0])
