"""kongtask's worker on upstream's 0.18 schema: its statements, and a running worker.

The SQL tests run the statements of ``v0_18.sql`` on rows made for them and read the private
tables back; the worker tests run ``kongtask.run`` on a database migrated with ``--to latest`` and
check what reaches the database: every job once, named queues strictly serial, locks kept by the
heartbeat and swept when their pool is gone, a breaking migration stopping the worker.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask import _checkouts, admin
from kongtask._schema import v0_18
from kongtask._schema.jobs import text_array_literal
from tests.support import query_rows, wait_until, wait_until_async

QUERIES = v0_18.schema_named("graphile_worker")
POOL = "worker-pool-test-00001"
OTHER = "worker-someone-else-01"


def _execute(url: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def _add(conn: psycopg.Connection[Any], task: str, *, queue: str | None = None, ago: str = "1 minute",
         priority: int = 0) -> int:
    row = conn.execute(
        "select id from graphile_worker.add_job(%s, '{}', queue_name => %s, run_at => now() - %s::interval,"
        " priority => %s)", (task, queue, ago, priority),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _fetch(conn: psycopg.Connection[Any], limit: int, tasks: list[str] | None = None) -> list[tuple[Any, ...]]:
    params = {"worker_id": POOL, "task_names": text_array_literal(tasks or ["t"]), "limit": limit,
              "forbidden_flags": None}
    return conn.execute(QUERIES.get_jobs, params).fetchall()


def _locks(conn: psycopg.Connection[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    jobs = conn.execute("select id, locked_by, attempts from graphile_worker._private_jobs"
                        " where locked_by is not null order by id").fetchall()
    queues = conn.execute("select queue_name, locked_by from graphile_worker._private_job_queues"
                          " where locked_by is not null order by queue_name").fetchall()
    return jobs, queues


# --- the statements ---------------------------------------------------------------------------------


def test_get_jobs_takes_every_due_job_but_one_per_named_queue_in_priority_order(modern_url: str) -> None:
    with psycopg.connect(modern_url, autocommit=True) as conn:
        free = [_add(conn, "t", ago=f"{n} minutes") for n in range(1, 5)]
        serial = [_add(conn, "t", queue="serial", ago=f"{10 - n} minutes") for n in range(3)]
        held = _add(conn, "t", queue="held")
        urgent = _add(conn, "t", priority=-5)
        later = _add(conn, "t", ago="-1 hour")
        spent = _add(conn, "t")
        other = _add(conn, "other-task")
        conn.execute("update graphile_worker._private_jobs set attempts = max_attempts where id = %s", (spent,))
        conn.execute("update graphile_worker._private_job_queues set locked_by = %s, locked_at = now()"
                     " where queue_name = 'held'", (OTHER,))

        rows = _fetch(conn, 50)

        taken = [row[0] for row in rows]
        # priority first, then run_at: the urgent job, then by age, the first of "serial" among them
        assert taken == [urgent, serial[0], *reversed(free)]
        assert {held, later, spent, other, serial[1], serial[2]}.isdisjoint(taken)
        assert {row[-1] for row in rows} == {8}  # the scan found 8; two of "serial" were not kept
        first = rows[0]
        assert first[1:3] == (None, "t") and first[6] == 1  # no queue, its task, attempt 1
        assert [row[1] for row in rows if row[0] == serial[0]] == ["serial"]
        jobs, queues = _locks(conn)
        assert sorted(job[0] for job in jobs if job[1] == POOL) == sorted(taken)
        assert queues == [("held", OTHER), ("serial", POOL)]
        assert _fetch(conn, 50) == []  # nothing else is due while "serial" is locked


def test_release_jobs_completes_and_fails_once_and_unlocks_their_queues(modern_url: str) -> None:
    with psycopg.connect(modern_url, autocommit=True) as conn:
        done, failed = _add(conn, "t", queue="a"), _add(conn, "t", queue="b")
        _fetch(conn, 10)
        params = {"worker_id": POOL, "completed_ids": [done], "failed_ids": [failed], "failed_messages": ["boom"],
                  "failed_payloads": [None]}
        for attempt in range(2):  # a lost reply: the same release again changes nothing
            counts = conn.execute(QUERIES.release_jobs, params).fetchone()
            assert counts == ((1, 1) if attempt == 0 else (0, 0))
        row = conn.execute("select attempts, last_error, locked_by, run_at - now() from graphile_worker._private_jobs"
                           " where id = %s", (failed,)).fetchone()
        assert row is not None and row[:3] == (1, "boom", None)
        assert timedelta(seconds=1) < row[3] <= timedelta(seconds=3)  # exp(1) seconds, as upstream
        assert query_rows(modern_url, "select count(*) from graphile_worker._private_jobs where id = %s",
                          (done,)) == [(0,)]
        assert _locks(conn) == ([], [])


def test_return_jobs_gives_back_the_attempt_unlocks_and_wakes_node_pools(modern_url: str) -> None:
    with psycopg.connect(modern_url, autocommit=True) as conn, \
            psycopg.connect(modern_url, autocommit=True) as listener:
        ids = [_add(conn, "t", queue="q"), _add(conn, "t")]
        _fetch(conn, 10)
        listener.execute('listen "jobs:insert"')
        params = {"worker_id": POOL, "job_ids": ids, "updated_at": [None, None], "keys": [None, None],
                  "channel": "jobs:insert"}
        assert conn.execute(QUERIES.return_jobs, params).fetchone() == (2, 1)
        assert conn.execute(QUERIES.return_jobs, params).fetchone() == (0, 0)
        assert _locks(conn) == ([], [])
        assert query_rows(modern_url, "select attempts from graphile_worker._private_jobs") == [(0,), (0,)]
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
        assert notes[0]["count"] == 2 and isinstance(notes[0]["r"], float)


def test_stray_checkouts_are_given_back_but_held_jobs_kept(modern_url: str) -> None:
    with psycopg.connect(modern_url, autocommit=True) as conn:
        held, stray, stray_queued = _add(conn, "t", queue="mine"), _add(conn, "t"), _add(conn, "t", queue="lost")
        _fetch(conn, 10)
        params = {"worker_id": POOL, "held_ids": [held]}
        assert conn.execute(QUERIES.return_stray_checkouts, params).fetchone() == (1, 2)
        jobs, queues = _locks(conn)
        assert jobs == [(held, POOL, 1)] and queues == [("mine", POOL)]
        assert sorted(query_rows(modern_url, "select id, attempts from graphile_worker._private_jobs"
                                             " where locked_by is null")) == [(stray, 0), (stray_queued, 0)]


def test_expire_locks_frees_only_locks_older_than_the_expiry(modern_url: str) -> None:
    with psycopg.connect(modern_url, autocommit=True) as conn:
        old, fresh = _add(conn, "t", queue="old"), _add(conn, "t", queue="fresh")
        _fetch(conn, 10)
        for table, key in (("_private_jobs", "id"), ("_private_job_queues", "id")):
            conn.execute(f"update graphile_worker.{table} set locked_at = now() - interval '10 minutes'"  # noqa: S608
                         f" where {key} = (select {'id' if table == '_private_jobs' else 'job_queue_id'}"
                         " from graphile_worker._private_jobs where id = %s)", (old,))
        assert conn.execute(QUERIES.expire_locks, {"job_expiry": "120 seconds"}).fetchone() == (1, 1)
        jobs, queues = _locks(conn)
        assert [job[0] for job in jobs] == [fresh] and queues == [("fresh", POOL)]


# --- a running worker ---------------------------------------------------------------------------------


def test_the_worker_registers_its_tasks_and_drains_jobs_added_every_way(modern_url: str) -> None:
    seen: list[tuple[str, Any, str | None]] = []

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        seen.append((helpers.job.task_identifier, payload, helpers.job.queue_name))

    async def scenario() -> None:
        await kongtask.add_job("a", {"via": "add_job"}, connection_string=modern_url)
        added = await kongtask.add_job("a", {"via": "queued"}, queue_name="q", connection_string=modern_url)
        assert added.queue_name == "q" and added.task_identifier == "a" and added.attempts == 0
        assert await kongtask.add_jobs([{"identifier": "b", "payload": {"via": "add_jobs"}}] * 3,
                                       connection_string=modern_url) == 3
        query_rows(modern_url, "select graphile_worker.add_job('b', '{\"via\": \"sql\"}')")
        await kongtask.run_once(task_list={"a": record, "b": record, "never": record}, connection_string=modern_url)

    asyncio.run(scenario())
    assert sorted(seen, key=str) == sorted([
        ("a", {"via": "add_job"}, None), ("a", {"via": "queued"}, "q"),
        *[("b", {"via": "add_jobs"}, None)] * 3, ("b", {"via": "sql"}, None),
    ], key=str)
    assert query_rows(modern_url, "select identifier from graphile_worker._private_tasks order by identifier") == [
        ("a",), ("b",), ("never",),
    ]
    assert query_rows(modern_url, "select count(*) from graphile_worker._private_jobs") == [(0,)]


def test_buffered_jobs_are_given_back_at_once_on_a_graceful_stop(
    modern_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_checkouts.Checkouts, "_learn", lambda self, fetch_s: setattr(self, "_target", 4))
    gate = asyncio.Event()
    ran: list[int] = []

    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(payload["n"])
        await gate.wait()

    def locked() -> list[tuple[Any, ...]]:
        return query_rows(modern_url, "select id from graphile_worker._private_jobs where locked_by is not null")

    async def scenario() -> None:
        await kongtask.add_jobs([{"identifier": "t", "payload": {"n": n}} for n in range(5)],
                                connection_string=modern_url)
        runner = await kongtask.run(task_list={"t": task}, connection_string=modern_url, batch_size=10)
        try:
            await wait_until_async(lambda: len(locked()) == 5 and ran, what="five jobs checked out")
            stopping = asyncio.ensure_future(runner.stop())
            await wait_until_async(lambda: len(locked()) == 1, what="the buffered jobs to be given back")
            gate.set()
            await asyncio.wait_for(stopping, 10)
        finally:
            gate.set()
            await runner.stop()

    asyncio.run(scenario())
    assert len(ran) == 1
    assert query_rows(modern_url, "select attempts, locked_by from graphile_worker._private_jobs") == [(0, None)] * 4


def test_a_buffered_job_removed_or_replaced_by_its_key_is_not_given_its_attempt_back(
    modern_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job fetched into the buffer counts as running (it is locked), so remove_job, or adding a job
    with its key, takes its key and its remaining attempts rather than deleting it. Given back unrun
    (here by a stop), it must stay so: with its attempt back it would run after all, beside the job
    that replaced it (a debounce that runs both) or though it was removed."""
    monkeypatch.setattr(_checkouts.Checkouts, "_learn", lambda self, fetch_s: setattr(self, "_target", 4))
    gate = asyncio.Event()
    ran: list[int] = []

    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(payload["n"])
        await gate.wait()

    def locked() -> int:
        return int(query_rows(modern_url, "select count(*) from graphile_worker._private_jobs"
                                          " where locked_by is not null")[0][0])

    async def scenario() -> None:
        target = {"connection_string": modern_url}
        await kongtask.add_job("t", {"n": 0}, **target)
        removed = await kongtask.add_job("t", {"n": 1}, job_key="removed", **target)
        replaced = await kongtask.add_job("t", {"n": 2}, job_key="replaced", **target)
        unchanged = await kongtask.add_job("t", {"n": 3}, job_key="unchanged", **target)
        runner = await kongtask.run(task_list={"t": task}, batch_size=10, **target)
        try:
            await wait_until_async(lambda: locked() == 4 and ran, what="one job running and three buffered")
            assert await kongtask.remove_job("removed", **target) is not None
            await kongtask.add_job("t", {"n": 4}, job_key="replaced", **target)
            await kongtask.add_job("t", {"n": 5}, job_key="unchanged", job_key_mode="unsafe_dedupe", **target)
            stopping = asyncio.ensure_future(runner.stop())
            await wait_until_async(lambda: locked() == 1, what="the buffered jobs to be given back")
            gate.set()
            await asyncio.wait_for(stopping, 10)
        finally:
            gate.set()
            await runner.stop()
        rows = query_rows(modern_url, "select id, key, attempts, max_attempts, locked_by"
                                      " from graphile_worker._private_jobs where id = any(%s) order by id",
                          ([removed.id, replaced.id, unchanged.id],))
        # The two whose key was taken keep their attempts used up; the one only deduplicated gets
        # its attempt back.
        assert rows == [(removed.id, None, 25, 25, None), (replaced.id, None, 25, 25, None),
                        (unchanged.id, "unchanged", 0, 25, None)]
        await kongtask.run_once(task_list={"t": task}, **target)

    asyncio.run(scenario())
    assert sorted(ran) == [0, 3, 4]


def _run_until_killed(url: str) -> None:
    # In a forked child: one job running for ever, so its locks stay until the process dies.
    async def stuck(payload: Any, helpers: kongtask.Helpers) -> None:
        await helpers.query("insert into public.runs (n) values (%s)", [payload["n"]])
        await asyncio.sleep(3600)

    async def main() -> None:
        runner = await kongtask.run(task_list={"t": stuck}, connection_string=url)
        await runner.wait()

    asyncio.run(main())


def test_locks_are_kept_by_the_heartbeat_and_swept_once_their_pool_is_gone(modern_url: str) -> None:
    _execute(modern_url, "create table public.runs (n int)")
    asyncio.run(kongtask.add_job("t", {"n": 1}, queue_name="q", connection_string=modern_url))
    child = multiprocessing.get_context("fork").Process(target=_run_until_killed, args=(modern_url,))
    child.start()
    try:
        wait_until(lambda: query_rows(modern_url, "select count(*) from public.runs") == [(1,)], timeout=20,
                   what="the job to start in the child")
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
    ran: list[int] = []

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(payload["n"])

    async def scenario() -> None:
        # A live pool's locks are refreshed by its heartbeat; the dead one's are not, and the
        # sweep of a live pool frees them after the expiry.
        runner = await kongtask.run(task_list={"t": record}, connection_string=modern_url,
                                    heartbeat_interval=0.2, job_expiry=timedelta(seconds=1))
        try:
            await wait_until_async(lambda: ran == [1], timeout=20, what="the dead pool's job to run again")
        finally:
            await runner.stop()

    asyncio.run(scenario())
    assert query_rows(modern_url, "select count(*) from graphile_worker._private_jobs") == [(0,)]


def test_a_live_pool_keeps_its_locks_past_the_expiry(modern_url: str) -> None:
    gate = asyncio.Event()

    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        await gate.wait()

    def lock_times() -> list[tuple[Any, ...]]:
        return query_rows(modern_url, "select j.locked_at, q.locked_at from graphile_worker._private_jobs j"
                                      " join graphile_worker._private_job_queues q on q.id = j.job_queue_id")

    async def scenario() -> None:
        await kongtask.add_job("t", queue_name="q", connection_string=modern_url)
        options: dict[str, Any] = {"heartbeat_interval": 0.2, "job_expiry": timedelta(seconds=1)}
        runner = await kongtask.run(task_list={"t": task}, connection_string=modern_url, **options)
        sweeper = await kongtask.run(task_list={"other": task}, connection_string=modern_url, **options)
        try:
            await wait_until_async(lambda: lock_times() and lock_times()[0][0] is not None, what="the job to start")
            [(job_first, queue_first)] = lock_times()
            await wait_until_async(
                lambda: min(lock_times()[0]) > max(job_first, queue_first) + timedelta(seconds=1.5),
                timeout=10, what="both locks to be refreshed past the expiry",
            )
        finally:
            gate.set()
            await runner.stop()
            await sweeper.stop()

    asyncio.run(scenario())
    assert query_rows(modern_url, "select count(*) from graphile_worker._private_jobs") == [(0,)]


@pytest.mark.parametrize("breaking", [True, False])
def test_a_migration_by_another_process_stops_the_worker_only_when_breaking(modern_url: str, breaking: bool) -> None:
    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        pass

    async def scenario() -> None:
        runner = await kongtask.run(task_list={"t": task}, connection_string=modern_url)
        try:
            await wait_until_async(
                lambda: query_rows(modern_url, "select count(*) from pg_stat_activity where query like 'listen%%'"
                                               " and datname = current_database()") != [(0,)],
                what="the worker to listen",
            )
            note = json.dumps({"migrationNumber": 21, "breaking": breaking})
            query_rows(modern_url, "select pg_notify('worker:migrate', %s)", (note,))
            if breaking:
                with pytest.raises(kongtask.SchemaChanged, match="another process applied breaking migration 21"):
                    await asyncio.wait_for(runner.wait(), 10)
            else:
                await kongtask.add_job("t", connection_string=modern_url)
                await wait_until_async(
                    lambda: query_rows(modern_url, "select count(*) from graphile_worker._private_jobs") == [(0,)],
                    what="the worker to go on running jobs",
                )
        finally:
            await runner.stop() if not breaking else None

    asyncio.run(scenario())


# --- admin and the command line -----------------------------------------------------------------------


def test_admin_calls_work_through_the_sql_admin_functions(modern_url: str) -> None:
    async def scenario() -> None:
        target = {"connection_string": modern_url}
        failed = await kongtask.add_job("t", queue_name="q", max_attempts=1, **target)
        waiting = await kongtask.add_job("t", **target)
        _execute(modern_url, "update graphile_worker._private_jobs set attempts = 1, last_error = 'boom'"
                             " where id = %s", (failed.id,))
        dead = await admin.list_jobs("dead", **target)
        assert [(j.id, j.queue_name, j.last_error) for j in dead] == [(failed.id, "q", "boom")]
        retried = await admin.retry_job(failed.id, **target)
        assert retried is not None and retried.max_attempts == 2 and retried.queue_name == "q"
        assert await admin.list_jobs("dead", **target) == []
        moved = await admin.reschedule_job(waiting.id, priority=3, **target)
        assert moved is not None and moved.priority == 3 and moved.queue_name is None
        deleted = await admin.delete_job(waiting.id, **target)
        assert deleted is not None and deleted.id == waiting.id
        assert [j.id for j in await admin.list_jobs(**target)] == [failed.id]
        _execute(modern_url, "update graphile_worker._private_jobs set locked_by = %s, locked_at = now()", (OTHER,))
        _execute(modern_url, "update graphile_worker._private_job_queues set locked_by = %s, locked_at = now()",
                 (OTHER,))
        assert [j.locked_by for j in await admin.list_jobs("locked", **target)] == [OTHER]
        assert await admin.unlock_worker(OTHER, **target) == ["q"]
        assert await admin.list_jobs("locked", **target) == []

    asyncio.run(scenario())
