"""Migrations: fresh install, idempotence, concurrency, refusing newer databases, custom schemas."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import sql

from kongtask._schema import jobs
from kongtask.errors import MigrationError
from kongtask._schema.migrate import load_migrations, migrate_connection
from tests.catalog import describe_schema


async def _migrate(url: str, schema: str = "graphile_worker") -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await migrate_connection(conn, schema)


def test_fresh_migration_installs_schema_with_one_migrations_row(db_url: str) -> None:
    assert asyncio.run(_migrate(db_url)) == [1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("select id from graphile_worker.migrations").fetchall() == [(1,)]
        job = jobs.add_job_sync(conn, "graphile_worker", "job1", {"a": 1})
        assert job.task_identifier == "job1" and job.payload == {"a": 1}
        before = describe_schema(conn)
    for _ in range(3):
        assert asyncio.run(_migrate(db_url)) == []
    with psycopg.connect(db_url) as conn:
        assert describe_schema(conn) == before
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (1,)


def test_concurrent_migrations_apply_exactly_once(db_url: str) -> None:
    async def many() -> list[list[int]]:
        return await asyncio.gather(*(_migrate(db_url) for _ in range(10)))

    results = asyncio.run(many())
    assert sorted(results) == [[]] * 9 + [[1]]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select id from graphile_worker.migrations").fetchall() == [(1,)]


def test_database_newer_than_kongtask_is_refused_and_left_untouched(migrated_url: str) -> None:
    newest = load_migrations()[-1].number
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("insert into graphile_worker.migrations (id) values (%s)", (newest + 41,))
        before = describe_schema(conn)
    with pytest.raises(MigrationError) as raised:
        asyncio.run(_migrate(migrated_url))
    message = str(raised.value)
    assert str(newest + 41) in message and f"({newest})" in message
    with psycopg.connect(migrated_url) as conn:
        assert describe_schema(conn) == before


@pytest.mark.parametrize("schema", ["my_jobs", 'Odd "Schema"; drop table x; --'])
def test_custom_schema_holds_every_object(db_url: str, schema: str) -> None:
    assert asyncio.run(_migrate(db_url, schema)) == [1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        tables = conn.execute(
            "select table_name from information_schema.tables where table_schema = %s order by 1", (schema,)
        ).fetchall()
        assert tables == [("job_queues",), ("jobs",), ("migrations",)]
        assert conn.execute(
            "select count(*) from pg_namespace where nspname = 'graphile_worker'"
        ).fetchone() == (0,)
        job = jobs.add_job_sync(conn, schema, "hello", {"x": 1})
        got = jobs.get_job_sync(conn, schema, "worker-abcdefghij")
        assert got is not None and got.id == job.id and got.attempts == 1
        assert jobs.complete_job_sync(conn, schema, "worker-abcdefghij", job.id) is not None
        count = conn.execute(sql.SQL("select count(*) from {}.jobs").format(sql.Identifier(schema))).fetchone()
        assert count == (0,)
    assert asyncio.run(_migrate(db_url, schema)) == []
