"""Interoperability with real Node graphile-worker: one database, both languages.

Node is driven as upstream's users drive it: the ``graphile-worker`` CLI with a ``tasks/`` folder,
and ``runner.addJob`` from its library. The Node tasks write what they received into
``public.interop_results``, so every comparison happens here, in Python, after ``json.loads``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import kongtask
from kongtask._job import Job
from kongtask._schema import jobs
from kongtask._schema.migrate import migrate_connection
from tests.catalog import describe_schema, describe_v0_18
from tests.cli_support import Background
from tests.cli_support import kongtask as kongtask_cli
from tests.node.fixtures import PY_TASK, PY_TIMES_TASK, NodeEnv, node_url, tasks_folder
from tests.node.fleet import (
    FLEET_JOBS,
    FLEET_QUEUE,
    FLEET_QUEUE_EVERY,
    FLEET_SLEEP_MS,
    FLEET_SLOW_SLEEP_MS,
    create_fleet_runs_table,
    fleet_runs,
    overlaps,
    wait_for_drain,
)
from tests.node.interop import (
    PAYLOADS,
    SCHEMA,
    count_rows,
    create_results_table,
    database_now,
    kongtask_migrate_to,
    kongtask_record,
    kongtask_run_once,
    newest_migration,
    results,
)
from tests.support import url_with_dbname

pytestmark = pytest.mark.node

READER = "kongtask-interop-reader"

NO_PGCRYPTO = (
    "this PostgreSQL ships no pgcrypto, which graphile-worker 0.1.0's own migration needs "
    "(covered by the Debian PostgreSQL 15 pass of .ci/run)"
)

# --- databases -------------------------------------------------------------------------------


@pytest.fixture
def new_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """Makes fresh, empty databases on demand (for tests that compare several); drops them after."""
    created: list[str] = []

    def make() -> str:
        name = f"kt_node_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
        created.append(name)
        return url_with_dbname(pg_server_url, name)

    yield make
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _kongtask_migrate(url: str) -> list[int]:
    async def run() -> list[int]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await migrate_connection(conn, SCHEMA)

    return asyncio.run(run())


def _skip_without_pgcrypto(url: str) -> None:
    with psycopg.connect(url) as conn:
        if conn.execute("select 1 from pg_available_extensions where name = 'pgcrypto'").fetchone() is None:
            pytest.skip(NO_PGCRYPTO)


def _catalog(url: str) -> list[str]:
    """The contract's catalog lines, plus every installed extension (not only the two it names)."""
    with psycopg.connect(url) as conn:
        lines = describe_schema(conn, SCHEMA)
        extensions = conn.execute(
            "select e.extname, n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
        ).fetchall()
    return sorted(lines + [f"extension {name} in {schema}" for name, schema in extensions])


def _catalog_difference(left: list[str], right: list[str]) -> list[str]:
    """Lines only on the left (``-``) or only on the right (``+``); empty when the catalogs agree."""
    return [f"- {line}" for line in left if line not in right] + [f"+ {line}" for line in right if line not in left]


def _node_migrate(node_env: NodeEnv, url: str, cwd: Path) -> None:
    # 0.1.0 has no --schema-only: its CLI migrates on start, and with --once then exits.
    node_env.cli("0.1.0", url, "--once", cwd=tasks_folder(cwd, ["interop_noop"]))


def _node_add_jobs(node_env: NodeEnv, url: str, specs: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, str]]:
    spec_file = tmp_path / "jobs.json"
    spec_file.write_text(json.dumps(specs, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    result = node_env.script("add_jobs.js", node_url(url), str(spec_file))
    added: list[dict[str, str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return added


# --- connection URLs -------------------------------------------------------------------------


def test_node_pg_connects_with_the_url_we_hand_it(node_env: NodeEnv, db_url: str) -> None:
    result = node_env.script("check_connection.js", node_url(db_url))
    seen = json.loads(result.stdout)
    with psycopg.connect(db_url) as conn:
        expected = conn.execute("select current_database(), current_user").fetchone()
    assert (seen["database"], seen["user"]) == expected


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://postgres@/kt_db?host=/tmp/some%20dir/socket",
        "postgresql://postgres@%2Ftmp%2Fsock/kt_db",
        "host=/tmp/sock dbname=kt_db user=postgres port=5433",
        "postgresql://u%40x:p%3Aw%2Fd@127.0.0.1:6543/kt_db?sslmode=disable",
        "host=db.example port=5432 dbname=kt_db user=alice password='s p@ce'",
        "dbname=kt_db port=5433",
    ],
)
def test_node_reads_our_urls_as_libpq_does(node_env: NodeEnv, conninfo: str) -> None:
    parsed = json.loads(node_env.script("parse_url.js", node_url(conninfo)).stdout)
    libpq = psycopg.conninfo.conninfo_to_dict(conninfo)
    assert (parsed.get("host") or None) == libpq.get("host")
    assert parsed["database"] == libpq.get("dbname")
    assert (parsed.get("user") or None) == libpq.get("user")
    assert (parsed.get("password") or None) == libpq.get("password")
    assert (parsed.get("port") or None) == libpq.get("port")


# --- the catalog -----------------------------------------------------------------------------


def test_node_and_kongtask_migrations_produce_the_same_catalog(
    node_env: NodeEnv, new_database: Callable[[], str], tmp_path: Path
) -> None:
    node_db, kongtask_db, altered_db = new_database(), new_database(), new_database()
    _skip_without_pgcrypto(node_db)
    _node_migrate(node_env, node_db, tmp_path)
    assert _kongtask_migrate(kongtask_db) == [1]
    assert _kongtask_migrate(altered_db) == [1]

    node_catalog = _catalog(node_db)
    assert "migrations 1" in node_catalog and "extension pgcrypto in public" in node_catalog
    assert _catalog_difference(node_catalog, _catalog(kongtask_db)) == []

    # The comparison must be able to fail: two small changes in a scratch copy both show up.
    with psycopg.connect(altered_db, autocommit=True) as conn:
        conn.execute("alter table graphile_worker.jobs alter column priority set default 1")
        conn.execute("alter index graphile_worker.jobs_priority_run_at_id_idx rename to jobs_order_idx")
    difference = _catalog_difference(node_catalog, _catalog(altered_db))
    assert "- col jobs.5 priority integer not null default 0" in difference
    assert "+ col jobs.5 priority integer not null default 1" in difference
    assert any(line.startswith("+ idx") and "jobs_order_idx" in line for line in difference)
    assert any(line.startswith("- idx") and "jobs_priority_run_at_id_idx" in line for line in difference)


def test_kongtask_migrate_is_a_no_op_on_a_node_migrated_database(
    node_env: NodeEnv, db_url: str, tmp_path: Path
) -> None:
    _skip_without_pgcrypto(db_url)
    _node_migrate(node_env, db_url, tmp_path)
    before = _catalog(db_url)
    assert _kongtask_migrate(db_url) == []
    assert _catalog(db_url) == before


def test_node_accepts_a_kongtask_migrated_database_and_runs_its_jobs(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    before = _catalog(migrated_url)
    create_results_table(migrated_url)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for task, payload in PAYLOADS.items():
            jobs.add_job_sync(conn, SCHEMA, task, payload)
        conn.execute("""select graphile_worker.add_job('interop_from_sql', '{"from": "sql", "n": [1, 2.5, "3"]}')""")

    node_env.cli("0.1.0", migrated_url, "--once", cwd=tasks_folder(tmp_path, [*PAYLOADS, "interop_from_sql"]))

    assert results(migrated_url) == {**PAYLOADS, "interop_from_sql": {"from": "sql", "n": [1, 2.5, "3"]}}
    assert count_rows(migrated_url, "jobs") == 0
    assert count_rows(migrated_url, "job_queues") == 0
    # Node's migrate step found migration 1 and changed nothing.
    assert _catalog(migrated_url) == before


# --- jobs cross languages unchanged ----------------------------------------------------------


def _check_out_all(url: str) -> list[Job]:
    """Every runnable job, fetched and completed one by one by kongtask, in the order it gives them."""
    seen = []
    with psycopg.connect(url, autocommit=True) as conn:
        while (job := jobs.get_job_sync(conn, SCHEMA, READER)) is not None:
            seen.append(job)
            jobs.complete_job_sync(conn, SCHEMA, READER, job.id)
    return seen


def test_jobs_added_by_node_add_job_reach_kongtask_unchanged(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    specs = [{"identifier": task, "payload": payload} for task, payload in PAYLOADS.items()]
    added = _node_add_jobs(node_env, migrated_url, specs, tmp_path)
    assert [job["task_identifier"] for job in added] == list(PAYLOADS)

    fetched = _check_out_all(migrated_url)

    assert {job.task_identifier: job.payload for job in fetched} == PAYLOADS
    assert [job.id for job in fetched] == [int(job["id"]) for job in added]
    for job in fetched:
        uuid.UUID(job.queue_name)  # Node's addJob leaves each job alone in a random queue
        assert (job.attempts, job.max_attempts, job.priority, job.last_error) == (1, 25, 0, None)


def test_node_add_job_options_are_seen_by_kongtask(node_env: NodeEnv, migrated_url: str, tmp_path: Path) -> None:
    # JavaScript dates carry milliseconds, so these survive exactly.
    past = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=123000)
    queued = [
        {"identifier": "interop_queued", "payload": {"n": n}, "queueName": "interop queue ✓",
         "runAt": past.isoformat(), "maxAttempts": 3}
        for n in range(3)
    ]
    later = {"identifier": "interop_later", "payload": {"later": True}, "runAt": future.isoformat()}
    _node_add_jobs(node_env, migrated_url, [*queued, later], tmp_path)

    fetched = _check_out_all(migrated_url)

    # One named queue: kongtask hands its jobs out in the order Node added them.
    assert [job.payload for job in fetched] == [{"n": 0}, {"n": 1}, {"n": 2}]
    for job in fetched:
        assert (job.queue_name, job.run_at, job.max_attempts) == ("interop queue ✓", past, 3)
    with psycopg.connect(migrated_url) as conn:
        assert jobs.get_job_sync(conn, SCHEMA, READER) is None
        waiting = conn.execute("select task_identifier, run_at, max_attempts from graphile_worker.jobs").fetchall()
    assert waiting == [("interop_later", future, 25)]


def test_jobs_added_by_kongtask_reach_the_node_worker_unchanged(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    create_results_table(migrated_url)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        added = {task: jobs.add_job_sync(conn, SCHEMA, task, p, queue_name="interop") for task, p in PAYLOADS.items()}

    node_env.cli("0.1.0", migrated_url, "--once", cwd=tasks_folder(tmp_path, PAYLOADS))

    assert results(migrated_url) == PAYLOADS
    with psycopg.connect(migrated_url) as conn:
        runs = conn.execute(
            "select task_identifier, job_id, queue_name, attempts from public.interop_results order by seq"
        ).fetchall()
    # One queue, one Node worker: run in the order kongtask added them, each on its first attempt.
    assert runs == [(task, job.id, "interop", 1) for task, job in added.items()]
    assert count_rows(migrated_url, "jobs") == 0


def test_javascript_numbers_lose_what_python_json_can_say(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """Not a kongtask difference but JavaScript's: one number type, a double.

    A Python payload keeps its meaning in Node, but 1.0 comes back as 1, -0.0 as 0 and integers
    beyond 2**53 rounded; a Python task that cares must not rely on int/float or on huge integers.
    """
    create_results_table(migrated_url)
    payload = {"float_one": 1.0, "negative_zero": -0.0, "beyond_2_53": 2**53 + 1, "huge": 10**30}
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        jobs.add_job_sync(conn, SCHEMA, "interop_numbers_js", payload)

    node_env.cli("0.1.0", migrated_url, "--once", cwd=tasks_folder(tmp_path, ["interop_numbers_js"]))

    seen = results(migrated_url)["interop_numbers_js"]
    assert seen == {"float_one": 1, "negative_zero": 0, "beyond_2_53": 2**53, "huge": 1e30}
    assert type(seen["float_one"]) is int and str(seen["negative_zero"]) == "0"


# --- the upgrade path ------------------------------------------------------------------------


def _add_pending_jobs(url: str) -> dict[str, Any]:
    pending = {"interop_upgrade_plain": {"a": 1}, "interop_upgrade_unicode": {"s": "✓ 漢字 🎉"}}
    with psycopg.connect(url, autocommit=True) as conn:
        for task, payload in pending.items():
            jobs.add_job_sync(conn, SCHEMA, task, payload)
        jobs.add_job_sync(conn, SCHEMA, "interop_upgrade_queued", {"q": True}, queue_name="upgrade-queue")
    return {**pending, "interop_upgrade_queued": {"q": True}}


def test_graphile_worker_0_17_3_upgrades_a_kongtask_database_and_runs_its_pending_jobs(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    pending = _add_pending_jobs(migrated_url)
    create_results_table(migrated_url)
    cwd = tasks_folder(tmp_path, pending)

    node_env.cli("0.17.3", migrated_url, "--schema-only", cwd=cwd)
    assert newest_migration(migrated_url) == 19
    assert count_rows(migrated_url, "jobs") == len(pending)

    node_env.cli("0.17.3", migrated_url, "--once", cwd=cwd)
    assert results(migrated_url) == pending
    assert count_rows(migrated_url, "jobs") == 0


def test_kongtask_runs_on_a_database_graphile_worker_0_17_3_upgraded_and_leaves_its_schema_as_it_is(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    pending = _add_pending_jobs(migrated_url)
    create_results_table(migrated_url)
    node_env.cli("0.17.3", migrated_url, "--schema-only", cwd=tasks_folder(tmp_path, []))
    before = _catalog(migrated_url)

    assert _kongtask_migrate(migrated_url) == []  # never downgrades, never upgrades unasked
    kongtask_run_once(migrated_url, {task: kongtask_record for task in pending})

    assert results(migrated_url) == pending
    assert _catalog(migrated_url) == before


# --- graphile-worker 0.18.0 and kongtask's own upgrade (kongtask migrate --to latest) ---------


def _catalog_v0_18(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return describe_v0_18(conn, SCHEMA) + [
            f"migration {number} {breaking}"
            for number, breaking in conn.execute("select id, breaking from graphile_worker.migrations order by id")
        ]


def test_graphile_worker_0_18_finds_nothing_to_do_on_a_database_kongtask_upgraded(
    node_env: NodeEnv, migrated_url: str, new_database: Callable[[], str], tmp_path: Path
) -> None:
    _add_pending_jobs(migrated_url)
    assert kongtask_migrate_to(migrated_url, "latest") == list(range(2, 21))
    ours = _catalog_v0_18(migrated_url)

    node_env.cli("0.18.0", migrated_url, "--schema-only", cwd=tasks_folder(tmp_path / "upgraded", []))
    assert _catalog_v0_18(migrated_url) == ours

    node_db = new_database()
    node_env.cli("0.18.0", node_db, "--schema-only", cwd=tasks_folder(tmp_path / "fresh", []))
    assert _catalog_difference(_catalog_v0_18(node_db), ours) == []


def test_kongtask_migrate_to_latest_is_a_no_op_on_a_database_graphile_worker_0_18_migrated(
    node_env: NodeEnv, db_url: str, tmp_path: Path
) -> None:
    node_env.cli("0.18.0", db_url, "--schema-only", cwd=tasks_folder(tmp_path, []))
    before = _catalog_v0_18(db_url)

    assert kongtask_migrate_to(db_url, "latest") == []
    assert _kongtask_migrate(db_url) == []
    assert _catalog_v0_18(db_url) == before


def test_graphile_worker_0_18_runs_jobs_kongtask_added_on_v0_1_0_then_upgraded(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    pending = _add_pending_jobs(migrated_url)
    create_results_table(migrated_url)
    assert kongtask_migrate_to(migrated_url, "latest") == list(range(2, 21))
    assert count_rows(migrated_url, "_private_jobs") == len(pending)

    node_env.cli("0.18.0", migrated_url, "--once", cwd=tasks_folder(tmp_path, pending))

    assert results(migrated_url) == pending
    assert count_rows(migrated_url, "_private_jobs") == 0


def test_graphile_worker_0_17_3_upgrades_kongtask_and_node_databases_alike(
    node_env: NodeEnv, new_database: Callable[[], str], tmp_path: Path
) -> None:
    node_db, kongtask_db = new_database(), new_database()
    _skip_without_pgcrypto(node_db)
    _node_migrate(node_env, node_db, tmp_path / "node")
    _kongtask_migrate(kongtask_db)
    for url in (node_db, kongtask_db):
        node_env.cli("0.17.3", url, "--schema-only", cwd=tasks_folder(tmp_path / "upgrade", []))

    assert _catalog_difference(_catalog(node_db), _catalog(kongtask_db)) == []


# --- kongtask workers and Node workers on one queue ------------------------------------------


def _assert_failed_once(url: str, message: str, started: datetime, ended: datetime) -> None:
    """The job failed once with ``message``, its queue is free, and its retry waits e^1 seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        job = conn.execute("select attempts, max_attempts, last_error, run_at from graphile_worker.jobs").fetchone()
        queue = conn.execute("select job_count, locked_by, locked_at from graphile_worker.job_queues").fetchone()
        assert job is not None
        attempts, max_attempts, last_error, run_at = job
        assert (attempts, max_attempts, last_error) == (1, 25, message)
        assert started + timedelta(milliseconds=2718) <= run_at <= ended + timedelta(milliseconds=2719)
        assert queue == (1, None, None)
        conn.execute("update graphile_worker.jobs set run_at = now()")  # retry now, as upstream's tests do


def test_a_job_failed_by_kongtask_reaches_node_with_its_attempts_and_error(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    create_results_table(migrated_url)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        failed = jobs.add_job_sync(conn, SCHEMA, "interop_flaky", {"n": 1})

    def fail(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        raise ValueError("kongtask says no")

    started = database_now(migrated_url)
    kongtask_run_once(migrated_url, {"interop_flaky": fail})
    _assert_failed_once(migrated_url, "kongtask says no", started, database_now(migrated_url))

    node_env.cli("0.1.0", migrated_url, "--once", cwd=tasks_folder(tmp_path, ["interop_flaky"]))

    with psycopg.connect(migrated_url) as conn:
        runs = conn.execute("select job_id, attempts, last_error, ran_by from public.interop_results").fetchall()
    assert runs == [(failed.id, 2, "kongtask says no", "node")]
    assert count_rows(migrated_url, "jobs") == 0


def test_a_job_failed_by_node_reaches_kongtask_with_its_attempts_and_error(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    create_results_table(migrated_url)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        failed = jobs.add_job_sync(conn, SCHEMA, "interop_flaky", {"message": "node says no ✗"})

    started = database_now(migrated_url)
    node_env.cli("0.1.0", migrated_url, "--once", cwd=tasks_folder(tmp_path, ["interop_flaky"], "fail_with_message"))
    _assert_failed_once(migrated_url, "node says no ✗", started, database_now(migrated_url))

    kongtask_run_once(migrated_url, {"interop_flaky": kongtask_record})

    with psycopg.connect(migrated_url) as conn:
        runs = conn.execute("select job_id, attempts, last_error, ran_by from public.interop_results").fetchall()
    assert runs == [(failed.id, 2, "node says no ✗", "kongtask")]
    assert count_rows(migrated_url, "jobs") == 0


def test_kongtask_worker_runs_node_added_jobs_on_a_node_migrated_database(
    node_env: NodeEnv, db_url: str, tmp_path: Path
) -> None:
    _skip_without_pgcrypto(db_url)
    _node_migrate(node_env, db_url, tmp_path)
    before = _catalog(db_url)
    create_results_table(db_url)
    _node_add_jobs(node_env, db_url, [{"identifier": t, "payload": p} for t, p in PAYLOADS.items()], tmp_path)

    kongtask_run_once(db_url, dict.fromkeys(PAYLOADS, kongtask_record))

    assert results(db_url) == PAYLOADS
    assert count_rows(db_url, "jobs") == 0
    assert _catalog(db_url) == before


def _add_fleet(url: str) -> dict[int, str]:
    """The fleet's jobs, one statement: their queue names by job id."""
    create_fleet_runs_table(url)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select j.id, j.queue_name from generate_series(1, %s) i,"
            " graphile_worker.add_job('interop_fleet',"
            "  json_build_object('i', i, 'sleep_ms', case when i %% %s = 0 and i > %s then %s else %s end),"
            "  case when i %% %s = 0 then %s else public.gen_random_uuid()::text end) j",
            (FLEET_JOBS, FLEET_QUEUE_EVERY, FLEET_JOBS // 2, FLEET_SLOW_SLEEP_MS, FLEET_SLEEP_MS,
             FLEET_QUEUE_EVERY, FLEET_QUEUE),
        ).fetchall()
    return dict(rows)


def test_a_mixed_fleet_runs_every_job_once_and_the_named_queue_in_order(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """A kongtask worker (--jobs 4) and a Node worker drain 2,000 jobs together, 200 of them in one
    named queue. Every job completes exactly once, and the named queue never has two jobs in flight.

    Both are the real CLIs in continuous mode with their default settings (job expiry included),
    stopped with SIGTERM once the jobs table is empty. Each task records its start and end from the
    database clock, so the two languages' times compare.
    """
    queue_of = _add_fleet(migrated_url)
    py_tasks = tmp_path / "py_tasks"
    py_tasks.mkdir()
    shutil.copyfile(PY_TIMES_TASK, py_tasks / "interop_fleet.py")
    node_cwd = tasks_folder(tmp_path / "node", ["interop_fleet"], "record_times")
    node_log = tmp_path / "node.log"

    with node_log.open("wb") as log:
        node = node_env.start_cli("0.1.0", migrated_url, cwd=node_cwd, log=log)
        worker = Background("worker", "--jobs", "4", "-c", migrated_url, "--tasks", str(py_tasks), cwd=tmp_path)
        try:
            wait_for_drain(migrated_url, worker, node, node_log, jobs_table="jobs", queues_table="job_queues")
            assert worker.stop() == 0, worker.output()
            node.send_signal(signal.SIGTERM)
            # graphile-worker 0.1.0 shuts down, then kills itself with the signal it received.
            assert node.wait(30) == -signal.SIGTERM, node_log.read_text(errors="replace")
        finally:
            worker.kill()
            if node.poll() is None:
                node.kill()
                node.wait(10)

    assert "Graceful shutdown attempted; killing self via SIGTERM" in node_log.read_text(errors="replace")
    runs = fleet_runs(migrated_url)

    # Every job, exactly once, and every run finished.
    times_run = Counter(run.job_id for run in runs)
    assert [job_id for job_id, n in times_run.items() if n > 1] == []
    assert set(times_run) == set(queue_of)
    assert [run for run in runs if run.ended_at is None or run.ended_at < run.started_at] == []
    # Both sides took part.
    by_side = Counter(run.ran_by for run in runs)
    assert set(by_side) == {"node", "kongtask"}, by_side

    # The named queue: one run at a time (each starts after the one before it ended), in id order.
    in_queue = sorted((run for run in runs if run.queue_name == FLEET_QUEUE), key=lambda run: run.started_at)
    overlapping = overlaps(in_queue)
    assert not overlapping, (
        f"{len(overlapping)} runs in {FLEET_QUEUE} started before the one before ended: {overlapping[:3]}"
    )
    assert [run.job_id for run in in_queue] == sorted(job_id for job_id, q in queue_of.items() if q == FLEET_QUEUE)
    assert [run.i for run in in_queue] == list(range(FLEET_QUEUE_EVERY, FLEET_JOBS + 1, FLEET_QUEUE_EVERY))
    assert {run.ran_by for run in in_queue} == {"node", "kongtask"}, "one side ran the whole queue"
    assert count_rows(migrated_url, "job_queues") == 0


# --- the two CLIs, as their users run them ---------------------------------------------------


def test_kongtask_cli_worker_runs_jobs_that_node_added(node_env: NodeEnv, migrated_url: str, tmp_path: Path) -> None:
    create_results_table(migrated_url)
    _node_add_jobs(node_env, migrated_url, [{"identifier": t, "payload": p} for t, p in PAYLOADS.items()], tmp_path)
    tasks = tmp_path / "py_tasks"
    tasks.mkdir()
    for name in PAYLOADS:
        shutil.copyfile(PY_TASK, tasks / f"{name}.py")

    result = kongtask_cli("worker", "--once", "-c", migrated_url, "--tasks", str(tasks), cwd=tmp_path, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert results(migrated_url) == PAYLOADS
    assert count_rows(migrated_url, "jobs") == 0


def test_node_worker_runs_jobs_added_with_the_kongtask_cli(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    create_results_table(migrated_url)
    payload = {"from": "kongtask add-job", "unicode": "漢字 🎉", "n": [1, 2.5, None]}
    for n in range(3):
        added = kongtask_cli(
            "add-job", "interop_cli", json.dumps({**payload, "seq": n}), "--queue", "cli-queue", "-c", migrated_url,
            cwd=tmp_path,
        )
        assert added.returncode == 0, added.stdout + added.stderr

    node_env.cli("0.1.0", migrated_url, "--once", cwd=tasks_folder(tmp_path, ["interop_cli"]))

    with psycopg.connect(migrated_url) as conn:
        runs = conn.execute("select queue_name, payload from public.interop_results order by seq").fetchall()
    assert [(queue, json.loads(seen)) for queue, seen in runs] == [
        ("cli-queue", {**payload, "seq": n}) for n in range(3)
    ]
    assert count_rows(migrated_url, "jobs") == 0
