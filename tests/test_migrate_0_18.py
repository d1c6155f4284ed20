"""Migrating to graphile-worker 0.18's schema: only when asked, never back, safely under concurrency,
with graphile-worker's bookkeeping (breaking flags, worker:migrate notifications) and refusals."""

from __future__ import annotations

import asyncio
import json
import logging

import psycopg
import pytest

import kongtask
from kongtask._schema.migrate import migrate_connection
from kongtask.errors import ConfigurationError, MigrationError
from tests.catalog import describe_schema, describe_v0_18

SCHEMA = "graphile_worker"


async def _migrate_async(url: str, to: int | str | None) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await migrate_connection(conn, SCHEMA, to=to)


def _migrate(url: str, to: int | str | None = None) -> list[int]:
    return asyncio.run(_migrate_async(url, to))


def _latest(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select max(id) from graphile_worker.migrations").fetchone()
    assert row is not None
    return int(row[0])


def test_default_migrate_never_upgrades_a_v0_1_0_database(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        before = describe_schema(conn)
    assert _migrate(migrated_url) == []
    assert asyncio.run(kongtask.migrate(connection_string=migrated_url)) == []
    with psycopg.connect(migrated_url) as conn:
        assert describe_schema(conn) == before


def test_default_migrate_on_a_modern_database_is_a_no_op_that_says_where_it_is(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _migrate(db_url, "latest")
    with psycopg.connect(db_url) as conn:
        before = describe_v0_18(conn)
    with caplog.at_level(logging.INFO, logger="kongtask.migrate"):
        assert _migrate(db_url) == []
        assert _migrate(db_url, 5) == []
    assert "at migration 20 (graphile-worker's 0.18 schema)" in caplog.text
    with psycopg.connect(db_url) as conn:
        assert describe_v0_18(conn) == before


def test_the_library_migrates_to_latest_when_asked(db_url: str) -> None:
    assert asyncio.run(kongtask.migrate(connection_string=db_url, to="latest")) == list(range(1, 21))
    assert asyncio.run(kongtask.migrate(connection_string=db_url, to=20)) == []


@pytest.mark.parametrize("to", [0, 21, "newest", "2.5", True])
def test_an_unknown_target_is_refused_before_connecting(to: object) -> None:
    with pytest.raises(ConfigurationError, match="give 'latest' or a migration number from 1 to 20"):
        asyncio.run(kongtask.migrate(connection_string="postgresql://nobody@127.0.0.1:1/none", to=to))  # type: ignore[arg-type]


def test_concurrent_migrators_apply_each_migration_exactly_once(db_url: str) -> None:
    async def many() -> list[list[int]]:
        return await asyncio.gather(*(_migrate_async(db_url, "latest") for _ in range(8)))

    results = asyncio.run(many())
    applied = sorted(number for result in results for number in result)
    assert applied == list(range(1, 21))
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select id from graphile_worker.migrations order by id").fetchall()
    assert [row[0] for row in rows] == list(range(1, 21))


def test_each_migration_notifies_worker_migrate_with_its_number_and_breaking_flag(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as listener:
        listener.execute('listen "worker:migrate"')
        _migrate(migrated_url, "latest")
        notices = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=19)]
    breaking = {3, 11, 13, 14, 16, 19}
    assert notices == [{"migrationNumber": n, "breaking": n in breaking} for n in range(2, 21)]


def test_migration_11_refuses_in_one_line_while_a_job_is_locked(migrated_url: str) -> None:
    _migrate(migrated_url, 10)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('running')")
        conn.execute("select graphile_worker.get_job('worker-0123456789')")
    with pytest.raises(MigrationError) as refused:
        _migrate(migrated_url, "latest")
    message = str(refused.value)
    assert "\n" not in message and "migration 11" in message and "locked" in message and "unlock" in message
    assert _latest(migrated_url) == 10
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (1,)
        # A lock older than 4 hours is a dead worker's: the upgrade then goes ahead.
        conn.execute("update graphile_worker.jobs set locked_at = now() - interval '5 hours'")
    assert _migrate(migrated_url, "latest") == list(range(11, 21))


def test_a_newer_breaking_migration_is_refused_and_a_newer_non_breaking_one_only_warned(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _migrate(db_url, "latest")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("insert into graphile_worker.migrations (id, breaking) values (21, false)")
    with caplog.at_level(logging.WARNING, logger="kongtask.migrate"):
        assert _migrate(db_url, "latest") == []
    assert "migration 21" in caplog.text and "not breaking" in caplog.text

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("insert into graphile_worker.migrations (id, breaking) values (22, true)")
    with pytest.raises(MigrationError, match="breaking migration 22, newer than the newest this kongtask knows"):
        _migrate(db_url, "latest")


def test_the_worker_refuses_a_database_part_way_between_the_schemas_in_one_line(db_url: str) -> None:
    _migrate(db_url, 5)
    with pytest.raises(MigrationError) as refused:
        asyncio.run(kongtask.run_once(task_list={"x": lambda payload, helpers: None}, connection_string=db_url))
    assert str(refused.value) == (
        "this database holds a schema between graphile-worker v0.1.0's and 0.18's (migration 5) in schema "
        "'graphile_worker', part way between the two schemas kongtask runs on; finish the upgrade with "
        "`kongtask migrate --to latest`"
    )


def test_the_0_18_statements_file_and_its_declarations_agree() -> None:
    from kongtask._schema import v0_18
    from kongtask._schema.v0_1 import read_named_blocks

    assert set(read_named_blocks("v0_18.sql")) == v0_18.statement_names()
    rendered = v0_18.schema_named('odd "name"')
    assert '"odd ""name"""' in rendered.applied_migrations


def test_the_admin_functions_refuse_a_database_part_way_between_the_schemas(db_url: str) -> None:
    from kongtask import admin

    _migrate(db_url, 12)
    for call in (admin.list_jobs, lambda **target: admin.retry_job(1, **target)):
        with pytest.raises(MigrationError, match=r"\(migration 12\) .* finish the upgrade with `kongtask migrate --to latest`$"):
            asyncio.run(call(connection_string=db_url))
