"""Databases for the benchmark: a fresh, migrated one per measurement, and the jobs in it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from kongtask._schema.migrate import migrate_connection

from .server import Server

SCHEMA = "graphile_worker"

#: The upstream perfTest insert: every job in one statement, so one NOTIFY for all of them.
_INSERT_JOBS = (
    "select graphile_worker.add_job('log_if_999', json_build_object('id', i)) from generate_series(1, %s) i"
)


def url_with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at another database; URLs stay URLs because the Node worker needs one."""
    if "://" in url:
        return urlunsplit(urlsplit(url)._replace(path="/" + dbname))
    return make_conninfo(url, dbname=dbname)


@contextmanager
def fresh_database(server: Server, label: str, to: str | None = None) -> Iterator[str]:
    """A new database migrated by kongtask (to migration ``to``, by default v0.1.0's), dropped
    afterwards; yields its URL.

    kongtask migrates even the databases the Node worker runs on: Node 0.1.0 then sees the schema as
    already migrated, which is what the compatibility contract promises, and its own migration
    would need pgcrypto, which not every server ships.
    """
    name = f"kongtask_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    url = url_with_dbname(server.admin_url, name)
    try:
        asyncio.run(_migrate(url, to))
        yield url
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


async def _migrate(url: str, to: str | None) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate_connection(conn, SCHEMA, to=to)


def insert_jobs(url: str, count: int) -> None:
    """Adds ``count`` ``log_if_999`` jobs, then settles the server so the timed run starts clean."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_INSERT_JOBS, (count,))
        # Fresh statistics and no checkpoint owed: otherwise autovacuum and the checkpointer wake up
        # at random points inside whichever timed run comes next, and the comparison gets noisy.
        conn.execute("analyze graphile_worker.jobs")
        conn.execute("analyze graphile_worker.job_queues")
        # Not a superuser on DATABASE_URL: no checkpoint, and the run is only a little noisier.
        with suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("checkpoint")


def count_jobs(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select count(*) from graphile_worker.jobs").fetchone()
    assert row is not None
    return int(row[0])
