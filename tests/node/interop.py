"""What the Node interop test files share: the payloads that cross, the tables the tasks record
into, and kongtask run and migrated as those tests run and migrate it.

The Node tasks (``js/tasks/``) and their kongtask twins (``py/``) write what they saw into
``public.interop_results`` or ``public.fleet_runs``; the tests read those back here, in Python.
"""

from __future__ import annotations

import asyncio
import json
import runpy
import sys
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

import kongtask
from kongtask._schema.migrate import migrate_connection
from kongtask.tasks import Task
from tests.node.fixtures import PY_TASK

SCHEMA = "graphile_worker"

#: Payloads that must cross between the languages unchanged, by the task name that carries each.
PAYLOADS: dict[str, Any] = {
    "interop_nested": {"a": {"b": [1, {"c": [True, False, None]}], "d": "e"}, "deep": [[[[{"x": []}]]]]},
    "interop_unicode": {
        "emoji": "🎉👩‍💻🇳🇿",
        "cjk": "漢字 かな カナ 한국어",
        "rtl": "שלום عليكم",
        "escapes": 'quote " backslash \\ newline \n tab \t bell \u0007 nul \u0000',
        "ключ ✓": "keys may be unicode too",
    },
    "interop_numbers": {
        "sum": 0.1 + 0.2,
        "max": 1e308,
        "largest_double": sys.float_info.max,
        "two_53": 2**53,
        "minus_two_53": -(2**53),
        "smallest_subnormal": 5e-324,
        "smallest_normal": sys.float_info.min,
        "negative": -1.5,
        "int": 42,
        "zero": 0,
    },
    "interop_empty_object": {},
    "interop_empty_things": {"object": {}, "list": [], "string": "", "null": None},
    "interop_top_level_list": [1, "two", None, {"three": 3}],
    "interop_one_mebibyte": {"blob": "0123456789abcdef" * 65536},
}

#: The kongtask twin of js/tasks/record_payload.js, as a task function for kongtask.run_once.
kongtask_record: Task = runpy.run_path(str(PY_TASK))["task"]


def create_results_table(url: str) -> None:
    """``public.interop_results``, where the record_payload tasks of both languages write."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "create table public.interop_results ("
            " seq serial primary key, job_id bigint not null, task_identifier text not null,"
            " queue_name text, attempts int, last_error text, payload text not null, ran_by text not null)"
        )


def results(url: str) -> dict[str, Any]:
    """What the tasks saw, by task identifier, each payload read back with ``json.loads``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("select task_identifier, payload from public.interop_results order by seq").fetchall()
    seen: dict[str, Any] = {}
    for task, payload in rows:
        assert task not in seen, f"{task} ran twice"
        seen[task] = json.loads(payload)
    return seen


def count_rows(url: str, table: str) -> int:
    """The rows of ``table`` in the job schema."""
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(SCHEMA, table))).fetchone()
    assert row is not None
    return int(row[0])


def newest_migration(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("select max(id) from {}").format(sql.Identifier(SCHEMA, "migrations"))).fetchone()
    assert row is not None
    return int(row[0])


def kongtask_migrate_to(url: str, to: int | str) -> list[int]:
    """Migrates as ``kongtask.migrate(to=...)`` does; returns the migrations applied."""

    async def run() -> list[int]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await migrate_connection(conn, SCHEMA, to=to)

    return asyncio.run(run())


def kongtask_run_once(url: str, task_list: dict[str, Task], concurrency: int = 1) -> None:
    # A deadline, so a hang fails the test instead of blocking the suite.
    run = kongtask.run_once(task_list=task_list, connection_string=url, concurrency=concurrency)
    asyncio.run(asyncio.wait_for(run, timeout=120))


def database_now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
