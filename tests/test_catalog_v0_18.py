"""Catalog conformance for the opt-in schema: kongtask's migrations 2..20 produce exactly the catalog
of graphile-worker 0.18.0, on a fresh database and on a v0.1.0 database holding jobs."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg

from kongtask._schema.migrate import migrate_connection
from tests.catalog import describe_v0_18, expected_v0_18

SCHEMA = "graphile_worker"

#: ``migrations`` after a full migrate: id|breaking, as graphile-worker 0.18.0 leaves it.
MIGRATION_ROWS = "1|t 2|f 3|t 4|f 5|f 6|f 7|f 8|f 9|f 10|f 11|t 12|f 13|t 14|t 15|f 16|t 17|f 18|f 19|t 20|f"


def _migrate(url: str, to: int | str | None = "latest") -> list[int]:
    async def run() -> list[int]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await migrate_connection(conn, SCHEMA, to=to)

    return asyncio.run(run())


def _difference(actual: list[str], expected: list[str]) -> list[str]:
    return [f"- {line}" for line in expected if line not in actual] + [f"+ {line}" for line in actual if line not in expected]


def _migration_rows(conn: psycopg.Connection) -> str:
    rows = conn.execute("select id, breaking from graphile_worker.migrations order by id").fetchall()
    return " ".join(f"{number}|{'t' if breaking else 'f'}" for number, breaking in rows)


def test_fresh_database_migrated_to_latest_has_exactly_the_0_18_catalog(db_url: str) -> None:
    assert _migrate(db_url) == list(range(1, 21))
    with psycopg.connect(db_url) as conn:
        assert _difference(describe_v0_18(conn), expected_v0_18()) == []
        assert _migration_rows(conn) == MIGRATION_ROWS


def test_v0_1_0_database_with_jobs_upgrades_to_the_0_18_catalog_and_every_job_survives(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('pending', '{\"a\": 1}')")
        conn.execute("select graphile_worker.add_job('scheduled', '{\"b\": 2}', run_at => now() + interval '1 hour')")
        conn.execute("select graphile_worker.add_job('named', '{\"n\": 1}', queue_name => 'mail')")
        conn.execute("select graphile_worker.add_job('named', '{\"n\": 2}', queue_name => 'mail')")
        conn.execute("select graphile_worker.add_job('failed', '[1, 2]', max_attempts => 5)")
        conn.execute(
            "update graphile_worker.jobs set attempts = 2, last_error = 'boom', run_at = now() + interval '7 seconds'"
            " where task_identifier = 'failed'"
        )
        conn.execute("select graphile_worker.add_job('dead', max_attempts => 1)")
        conn.execute("update graphile_worker.jobs set attempts = 1, last_error = 'gone' where task_identifier = 'dead'")
        before = conn.execute(
            "select task_identifier, payload::text, queue_name, priority, run_at, attempts, max_attempts, last_error,"
            " created_at from graphile_worker.jobs order by id"
        ).fetchall()

    assert _migrate(migrated_url) == list(range(2, 21))

    with psycopg.connect(migrated_url) as conn:
        assert _difference(describe_v0_18(conn), expected_v0_18()) == []
        assert _migration_rows(conn) == MIGRATION_ROWS
        after = conn.execute(
            "select v.task_identifier, p.payload::text, v.queue_name, v.priority, v.run_at, v.attempts,"
            " v.max_attempts, v.last_error, v.created_at, v.locked_by, p.is_available"
            " from graphile_worker.jobs as v join graphile_worker._private_jobs as p using (id) order by id"
        ).fetchall()
    # Every job, with its payload, queue, schedule and history; in the same order under new ids.
    assert [row[:9] for row in after] == before
    assert [row[9] for row in after] == [None] * len(before)
    assert [row[10] for row in after] == [True, True, True, True, True, False]
    assert before[1][4] - before[0][4] > timedelta(minutes=59)


def test_changing_one_object_fails_the_catalog_comparison(db_url: str) -> None:
    # The comparison can fail: a renamed index or a changed default each show up as a difference.
    _migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("alter index graphile_worker.jobs_main_index rename to jobs_fetch_index")
        conn.execute("alter table graphile_worker._private_jobs alter column max_attempts set default 10")
        difference = _difference(describe_v0_18(conn), expected_v0_18())
    assert any(line.startswith("- idx CREATE INDEX jobs_main_index") for line in difference)
    assert any(line.startswith("+ idx CREATE INDEX jobs_fetch_index") for line in difference)
    assert "+ col _private_jobs.8 max_attempts smallint not null default 10" in difference
    assert "- col _private_jobs.8 max_attempts smallint not null default 25" in difference


def test_migrating_step_by_step_ends_with_the_same_catalog(db_url: str) -> None:
    for target, applied in ((1, [1]), (5, [2, 3, 4, 5]), (10, [6, 7, 8, 9, 10]), (16, list(range(11, 17)))):
        assert _migrate(db_url, target) == applied
    assert _migrate(db_url) == [17, 18, 19, 20]
    with psycopg.connect(db_url) as conn:
        assert _difference(describe_v0_18(conn), expected_v0_18()) == []
        assert _migration_rows(conn) == MIGRATION_ROWS
