"""Any legal PostgreSQL identifier works as the schema name, and nothing in it ever runs as SQL.

The schema name reaches the migration as text inside SQL code, comments, string literals and
dollar-quoted function bodies; each name below attacks one of those contexts (or psycopg's
``%`` placeholders). Every test runs on a real, fresh database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import kongtask
from kongtask import admin
from kongtask.errors import ConfigurationError, MigrationError
from kongtask._schema.migrate import Migration, load_migrations
from kongtask._schema.generation import MIGRATION_SCHEMA_TOKEN
from tests.catalog import describe_schema
from tests.cli_support import clean_env, one_line
from tests.cli_support import kongtask as run_cli
from tests.support import wait_until_async
from tests.test_catalog import EXPECTED

HOSTILE_NAMES = {
    "newline_comment_injection": "q\ncreate table public.pwned (x int); --",
    "dollar_quote": "a$$b",
    "dollar_quote_injection": "x$$; create table public.pwned_dollar (x int); --",
    "dollar_tags": "$kt$ $kt_1$ $$ $",
    "comments": "jobs -- not a comment /* nor this */",
    "block_comment_injection": "*/ create table public.pwned_block (x int); /*",
    "single_quote": "it's o'clock",
    "single_quote_injection": "'); create table public.pwned_quote (x int); --",
    "double_quote": 'say "hi"',
    "backslash": "back\\slash\\",
    "semicolons": "semi;colon; select 1;",
    "spaces": "  spaced  name ",
    "unicode": "ジョブ 🐘 ünïcödé",
    "percent": "100% %s %(x)s %%",
    "the_token_itself": MIGRATION_SCHEMA_TOKEN,
    "mixed_case": "MixedCase",
    "longest_ascii": "n" * 63,
    "longest_multibyte": "é" * 31 + "x",
}
NAMES = pytest.mark.parametrize("schema", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))

# Everything in the database outside the schema under test, extension members left out: a
# migration may install pgcrypto (or kongtask's stand-in for it), nothing else.
_OUTSIDE = """
select 'schema ' || n.nspname from pg_namespace n where n.nspname <> %(schema)s
union all
select 'relation ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname not in (%(schema)s, 'pg_toast')
    and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                    and d.deptype = 'e')
union all
select 'function ' || n.nspname || '.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')'
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname <> %(schema)s
    and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                    and d.deptype = 'e')
union all
select 'type ' || n.nspname || '.' || t.typname
  from pg_type t join pg_namespace n on n.oid = t.typnamespace
  where n.nspname not in (%(schema)s, 'pg_toast')
    and not exists (select 1 from pg_depend d where d.classid = 'pg_type'::regclass and d.objid = t.oid
                    and d.deptype = 'e')
union all
select 'trigger ' || t.tgname from pg_trigger t join pg_class c on c.oid = t.tgrelid
  join pg_namespace n on n.oid = c.relnamespace where n.nspname <> %(schema)s
union all
select 'extension ' || extname from pg_extension
union all
select 'event trigger ' || evtname from pg_event_trigger
union all
select 'role ' || rolname from pg_roles
union all
select 'setting ' || array_to_string(setconfig, ',') from pg_db_role_setting
"""
_MAY_BE_INSTALLED = {
    "extension pgcrypto",
    "extension uuid-ossp",
    "function public.gen_random_uuid()",  # kongtask's stand-in where the server lacks pgcrypto
}


def _outside(url: str, schema: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(_OUTSIDE, {"schema": schema}).fetchall()}


def _catalog_as_default(url: str, schema: str) -> list[str]:
    """The schema's catalog, written as if it were graphile_worker (the contract's name)."""
    with psycopg.connect(url) as conn:
        lines = describe_schema(conn, schema)
        row = conn.execute("select quote_ident(%s)", (schema,)).fetchone()
    assert row is not None
    sequence = "'" + row[0].replace("'", "''") + ".jobs_id_seq'"
    return sorted(
        line.replace(sequence, "'graphile_worker.jobs_id_seq'") for line in lines if not line.startswith("ext ")
    )


def _count(url: str, schema: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
    assert row is not None
    return int(row[0])


# --- the migration ----------------------------------------------------------------------------------


@NAMES
def test_migration_creates_the_schema_and_nothing_outside_it(db_url: str, schema: str) -> None:
    before = _outside(db_url, schema)
    assert asyncio.run(kongtask.migrate(connection_string=db_url, schema=schema)) == [1]
    added = _outside(db_url, schema) - before
    assert added <= _MAY_BE_INSTALLED, f"created outside the schema: {sorted(added - _MAY_BE_INSTALLED)}"
    with psycopg.connect(db_url) as conn:
        names = conn.execute("select nspname from pg_namespace where nspname = %s", (schema,)).fetchall()
    assert names == [(schema,)]  # the very name asked for: not truncated, not altered
    contract = sorted(line for line in EXPECTED.strip().splitlines() if not line.startswith("ext "))
    assert _catalog_as_default(db_url, schema) == contract
    assert asyncio.run(kongtask.migrate(connection_string=db_url, schema=schema)) == []


def test_the_injection_example_from_the_report_creates_no_table(db_url: str) -> None:
    schema = HOSTILE_NAMES["newline_comment_injection"]
    asyncio.run(kongtask.migrate(connection_string=db_url, schema=schema))
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select to_regclass('public.pwned')").fetchone() == (None,)
        assert _count(db_url, schema, "jobs") == 0


# --- using the schema ---------------------------------------------------------------------------------


@NAMES
def test_jobs_run_and_are_administered_in_the_schema(db_url: str, schema: str) -> None:
    ran: list[Any] = []

    async def ok(payload: Any, helpers: Any) -> None:
        ran.append(payload)

    async def broken(payload: Any, helpers: Any) -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        await kongtask.migrate(connection_string=db_url, schema=schema)
        good = await kongtask.add_job("ok", {"n": 1}, queue_name="shared", connection_string=db_url, schema=schema)
        bad = await kongtask.add_job("broken", connection_string=db_url, schema=schema)
        listed = await admin.list_jobs(connection_string=db_url, schema=schema)
        assert {j.id for j in listed} == {good.id, bad.id}

        await kongtask.run_once(task_list={"ok": ok, "broken": broken}, connection_string=db_url, schema=schema)
        assert ran == [{"n": 1}]
        failed = await admin.list_jobs("failed", connection_string=db_url, schema=schema)
        assert [(j.id, j.attempts, j.locked_by) for j in failed] == [(bad.id, 1, None)]
        assert failed[0].last_error is not None and "boom" in failed[0].last_error

        retried = await admin.retry_job(bad.id, connection_string=db_url, schema=schema)
        assert retried is not None and retried.id == bad.id
        assert await admin.unlock_worker("worker-nobody-000", connection_string=db_url, schema=schema) == []
        deleted = await admin.delete_job(bad.id, connection_string=db_url, schema=schema)
        assert deleted is not None and deleted.id == bad.id

    asyncio.run(scenario())
    assert _count(db_url, schema, "jobs") == 0
    assert _count(db_url, schema, "job_queues") == 0  # the queue-count triggers ran in this schema


@pytest.mark.parametrize(
    "schema",
    [HOSTILE_NAMES[k] for k in ("newline_comment_injection", "dollar_quote", "percent", "backslash")],
    ids=["newline_comment_injection", "dollar_quote", "percent", "backslash"],
)
def test_notify_listen_and_heartbeat_work_in_the_schema(db_url: str, schema: str) -> None:
    asyncio.run(kongtask.migrate(connection_string=db_url, schema=schema))
    # With parameters, psycopg would read a "%" of the quoted name as a placeholder.
    in_schema = sql.SQL(sql.Identifier(schema).as_string(None).replace("%", "%%"))
    locked_at = sql.SQL("select locked_at from {}.job_queues where queue_name = %s").format(in_schema)
    listening = "select count(*) from pg_stat_activity where datname = current_database() and query ilike 'listen%%'"
    heartbeats_seen = asyncio.Event()
    quick_ran = asyncio.Event()

    async def slow(payload: Any, helpers: Any) -> None:
        # Holds the worker until its runner listens and its heartbeat has moved the lock forward,
        # so the runner's first wake-ups are spent before the NOTIFY check below.
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:

            async def one(statement: Any, params: tuple[Any, ...]) -> Any:
                row = await (await conn.execute(statement, params)).fetchone()
                return row[0] if row else None

            await wait_until_async(lambda: one(listening, ()), timeout=30, what="the runner to LISTEN")
            first = await one(locked_at, ("slow-queue",))

            async def moved() -> bool:
                now = await one(locked_at, ("slow-queue",))
                return first is not None and now is not None and now > first

            await wait_until_async(moved, timeout=30, what="the heartbeat to refresh the queue's lock")
        heartbeats_seen.set()

    async def quick(payload: Any, helpers: Any) -> None:
        quick_ran.set()

    async def scenario() -> None:
        # The trigger in the schema notifies on the channel kongtask listens on.
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
            await listener.execute("listen \"jobs:insert\"")
            await kongtask.add_job("nothing", connection_string=db_url, schema=schema)
            notices = listener.notifies(timeout=10, stop_after=1)
            assert [n.channel async for n in notices] == ["jobs:insert"]
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await conn.execute(sql.SQL("delete from {}.jobs").format(sql.Identifier(schema)))

        # Added before the runner starts, so its first fetch takes it: no wake-up needed.
        await kongtask.add_job("slow", queue_name="slow-queue", connection_string=db_url, schema=schema)
        runner = await kongtask.run(
            task_list={"slow": slow, "quick": quick}, connection_string=db_url, schema=schema,
            concurrency=1, poll_interval=3600, heartbeat_interval=0.05,
        )
        try:
            await wait_until_async(heartbeats_seen.is_set, timeout=60, what="the slow task to see a heartbeat")
            # With an hour between polls, only the NOTIFY can wake the idle worker for this job.
            await wait_until_async(lambda: runner._checkouts.idle_workers == 1, what="the worker to go idle")
            await kongtask.add_job("quick", connection_string=db_url, schema=schema)
            await wait_until_async(quick_ran.is_set, timeout=30, what="the NOTIFY to wake the worker")
        finally:
            await runner.stop()

    asyncio.run(scenario())
    assert _count(db_url, schema, "jobs") == 0


# --- the CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [HOSTILE_NAMES[k] for k in ("newline_comment_injection", "dollar_quote_injection", "percent", "spaces")],
    ids=["newline_comment_injection", "dollar_quote_injection", "percent", "spaces"],
)
def test_cli_migrate_takes_a_hostile_schema_name(db_url: str, schema: str, tmp_path: Path) -> None:
    before = _outside(db_url, schema)
    result = run_cli("migrate", "--schema", schema, "--connection", db_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert _outside(db_url, schema) - before <= _MAY_BE_INSTALLED
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from pg_namespace where nspname = %s", (schema,)).fetchone() == (1,)
    env = clean_env(DATABASE_URL=db_url)
    again = run_cli("migrate", "--schema", schema, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert _count(db_url, schema, "migrations") == 1

    added = run_cli("add-job", "hello", "--schema", schema, cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    listed = run_cli("jobs", "list", "--schema", schema, cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "\thello\t" in listed.stdout
    assert _count(db_url, schema, "jobs") == 1


@pytest.mark.parametrize("schema", ["n" * 64, "é" * 32], ids=["64_ascii_bytes", "64_bytes_in_32_letters"])
def test_cli_refuses_a_name_postgresql_would_truncate(db_url: str, schema: str, tmp_path: Path) -> None:
    before = _outside(db_url, schema)
    result = run_cli("migrate", "--schema", schema, "--connection", db_url, cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "63 bytes" in line and "Traceback" not in result.stderr
    assert _outside(db_url, schema) == before


# --- names PostgreSQL cannot hold ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("n" * 64, "64 bytes"),
        ("é" * 32, "64 bytes"),
        ("", "empty"),
        ("nul\x00byte", "NUL"),
    ],
    ids=["64_ascii_bytes", "64_bytes_in_32_letters", "empty", "nul"],
)
def test_library_refuses_a_name_postgresql_cannot_hold_as_given(db_url: str, schema: str, message: str) -> None:
    with psycopg.connect(db_url) as conn:
        namespaces = conn.execute("select count(*) from pg_namespace").fetchone()
    with pytest.raises(ConfigurationError, match=message) as raised:
        asyncio.run(kongtask.migrate(connection_string=db_url, schema=schema))
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigurationError, match=message):
        asyncio.run(admin.list_jobs(connection_string=db_url, schema=schema))
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from pg_namespace").fetchone() == namespaces


# --- rendering the migration text ---------------------------------------------------------------------

T = MIGRATION_SCHEMA_TOKEN


def test_the_default_schema_renders_as_a_plain_replacement() -> None:
    # The text graphile-worker's own schema gets is unchanged by the context-aware rendering.
    for migration in load_migrations():
        assert migration.for_schema("graphile_worker") == migration.text.replace(T, '"graphile_worker"')


def test_comments_and_quoted_identifiers_are_sent_as_written() -> None:
    text = f"-- {T} here\n/* {T} /* nested {T} */ */ select \"{T}\", x::{T[1:]} from {T}.t;"
    rendered = Migration(1, text).for_schema("s\n")
    assert rendered == f"-- {T} here\n/* {T} /* nested {T} */ */ select \"{T}\", x::{T[1:]} from \"s\n\".t;"


def test_a_string_literal_gets_the_name_escaped_for_a_literal() -> None:
    rendered = Migration(1, f"select '{T}.jobs'::regclass, 'it''s';").for_schema("o'k")
    assert rendered == "select '\"o''k\".jobs'::regclass, 'it''s';"
    # A backslash reads the same whatever standard_conforming_strings says.
    rendered = Migration(1, f"select '{T}.jobs'::regclass;").for_schema("a\\b")
    assert rendered == "select E'\"a\\\\b\".jobs'::regclass;"


def test_a_dollar_quoted_body_gets_a_tag_the_name_cannot_close() -> None:
    text = f"create function {T}.f() returns int as $$ select 1 from {T}.t $$ language sql;"
    rendered = Migration(1, text).for_schema("a$$b $kt$")
    assert rendered == (
        'create function "a$$b $kt$".f() returns int as $kt_1$ select 1 from "a$$b $kt$".t $kt_1$ language sql;'
    )
    # A body without the token is left alone, whatever it holds.
    untouched = "select $x$ it's -- $x$;"
    assert Migration(1, untouched).for_schema("a$$b") == untouched


@pytest.mark.parametrize(
    "text",
    [
        f"select E'{T}.jobs';",  # backslash escapes: refuse rather than guess
        f"select \"x\"{T}.jobs;",  # would merge with the quoted identifier before it
        f"select {T}\"x\";",
        f"select x{T};",
        f"select $$ {T}.t",  # unterminated body
        "select 'unterminated",
    ],
)
def test_a_migration_file_that_misplaces_the_token_is_refused(text: str) -> None:
    with pytest.raises(MigrationError):
        Migration(1, text).for_schema("s")
