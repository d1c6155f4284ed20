"""Crash recovery, timeouts and hostile payloads, in-process (the CLI-level faults are in test_faults)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask.errors import ConfigurationError
from tests.support import query_rows, wait_until_async


def test_heartbeat_keeps_a_long_jobs_queue_fresh_so_it_is_never_stolen(migrated_url: str) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def long(payload: Any, helpers: Any) -> None:
            await gate.wait()

        runner = await kongtask.run(
            task_list={"long": long}, connection_string=migrated_url,
            heartbeat_interval=0.2, job_expiry=timedelta(seconds=1),
        )
        try:
            await kongtask.add_job("long", connection_string=migrated_url)
            await wait_until_async(lambda: query_rows(migrated_url, "select 1 from graphile_worker.job_queues where locked_by is not null"), what="job start")
            [(first,)] = query_rows(migrated_url, "select locked_at from graphile_worker.job_queues")
            # Past the expiry, the lock is still fresh, and another worker gets nothing.
            await wait_until_async(
                lambda: query_rows(migrated_url, "select 1 from graphile_worker.job_queues where locked_at > %s + interval '1 second'", (first,)),
                what="heartbeat to move locked_at past the expiry",
            )
            with psycopg.connect(migrated_url, autocommit=True) as conn:
                stolen = conn.execute(
                    "select id from graphile_worker.get_job('worker-thief-00000', null, interval '1 second')"
                ).fetchone()
            assert stolen == (None,)
        finally:
            gate.set()
            await runner.stop()
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]

    asyncio.run(scenario())


def test_queue_locked_by_a_dead_worker_is_taken_over_after_the_expiry(migrated_url: str) -> None:
    ran: list[int] = []

    async def job(payload: Any, helpers: Any) -> None:
        ran.append(helpers.job.attempts)

    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('job')")
        # A worker that checked the job out and died: its lock ages and no heartbeat renews it.
        conn.execute("select graphile_worker.get_job('worker-dead-000000')")
        conn.execute("update graphile_worker.job_queues set locked_at = now() - interval '3 seconds'")
    asyncio.run(kongtask.run_once(task_list={"job": job}, connection_string=migrated_url,
                                  heartbeat_interval=1, job_expiry=timedelta(seconds=10)))
    assert ran == []  # not expired yet
    asyncio.run(kongtask.run_once(task_list={"job": job}, connection_string=migrated_url,
                                  heartbeat_interval=1, job_expiry=timedelta(seconds=2)))
    assert ran == [2]
    assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]


def test_job_expiry_must_outlast_the_heartbeat() -> None:
    with pytest.raises(ConfigurationError, match="must be longer than the heartbeat"):
        asyncio.run(kongtask.run_once(task_list={"t": lambda p, h: None}, connection_string="postgres://x",
                                      heartbeat_interval=30, job_expiry=timedelta(seconds=10)))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_task_past_its_timeout_fails_with_a_clear_error_and_the_worker_goes_on(migrated_url: str, kind: str) -> None:
    release = threading.Event()
    app = kongtask.App(connection_string=migrated_url)
    after: list[str] = []

    if kind == "sync":
        @app.task("slow", timeout=0.2)
        def slow(payload: Any, helpers: Any) -> None:
            release.wait(30)
    else:
        @app.task("slow", timeout=0.2)
        async def slow(payload: Any, helpers: Any) -> None:
            await asyncio.sleep(30)

    @app.task
    def next_one(payload: Any, helpers: Any) -> None:
        after.append("ran")

    async def scenario() -> None:
        await app.add_job("slow")
        await app.add_job("next_one")
        await app.run_once(task_timeout=10)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    assert after == ["ran"]
    assert query_rows(migrated_url, "select task_identifier, last_error from graphile_worker.jobs") == [
        ("slow", "Task timed out after 0.2s")
    ]


def test_worker_wide_task_timeout_applies_to_every_task(migrated_url: str) -> None:
    async def slow(payload: Any, helpers: Any) -> None:
        await asyncio.sleep(30)

    async def scenario() -> None:
        await kongtask.add_job("slow", connection_string=migrated_url)
        await kongtask.run_once(task_list={"slow": slow}, connection_string=migrated_url, task_timeout=0.2)

    asyncio.run(scenario())
    assert query_rows(migrated_url, "select last_error from graphile_worker.jobs") == [("Task timed out after 0.2s",)]


def test_payload_nested_deeper_than_python_decodes_fails_that_job_only(migrated_url: str) -> None:
    seen: list[Any] = []

    async def t(payload: Any, helpers: Any) -> None:
        seen.append(payload)

    depth = 5000
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('t', %s::json)", ("[" * depth + "]" * depth,))
        conn.execute("select graphile_worker.add_job('t', '{\"fine\": true}')")
    asyncio.run(kongtask.run_once(task_list={"t": t}, connection_string=migrated_url))
    assert seen == [{"fine": True}]
    [(last_error,)] = query_rows(migrated_url, "select last_error from graphile_worker.jobs")
    assert last_error.startswith("job payload cannot be decoded (RecursionError")


def test_ten_megabyte_payload_round_trips(migrated_url: str) -> None:
    seen: list[int] = []
    big = {"blob": "x" * (10 * 1024 * 1024), "n": 1}

    async def t(payload: Any, helpers: Any) -> None:
        seen.append(len(payload["blob"]))

    async def scenario() -> None:
        await kongtask.add_job("t", big, connection_string=migrated_url)
        await kongtask.run_once(task_list={"t": t}, connection_string=migrated_url)

    asyncio.run(scenario())
    assert seen == [10 * 1024 * 1024]


def test_moderately_nested_payload_round_trips(migrated_url: str) -> None:
    nested: Any = {"leaf": "🌱"}
    for i in range(300):
        nested = {"level": i, "child": nested}
    seen: list[Any] = []

    async def scenario() -> None:
        await kongtask.add_job("t", nested, connection_string=migrated_url)
        await kongtask.run_once(task_list={"t": lambda p, h: seen.append(p)}, connection_string=migrated_url)

    asyncio.run(scenario())
    assert seen == [nested]


def test_task_returning_an_unserialisable_object_still_completes(migrated_url: str) -> None:
    async def scenario() -> None:
        await kongtask.add_job("t", connection_string=migrated_url)
        await kongtask.run_once(task_list={"t": lambda p, h: object()}, connection_string=migrated_url)

    asyncio.run(scenario())
    assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]


def test_hostile_schema_name_works_end_to_end(db_url: str) -> None:
    schema = 'x"; drop table y; --'
    seen: list[Any] = []

    async def scenario() -> None:
        await kongtask.migrate(connection_string=db_url, schema=schema)
        await kongtask.add_job("t", {"ok": 1}, connection_string=db_url, schema=schema)
        runner = await kongtask.run(task_list={"t": lambda p, h: seen.append(p)}, connection_string=db_url, schema=schema)
        try:
            await wait_until_async(lambda: seen, what="job in hostile schema to run")
            await kongtask.add_job("t", {"ok": 2}, connection_string=db_url, schema=schema)
            await wait_until_async(lambda: len(seen) == 2, what="NOTIFY-woken job in hostile schema to run")
        finally:
            await runner.stop()

    asyncio.run(scenario())
    assert seen == [{"ok": 1}, {"ok": 2}]


def test_heartbeat_refreshes_only_the_queues_of_running_jobs(migrated_url: str) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def long(payload: Any, helpers: Any) -> None:
            await gate.wait()

        runner = await kongtask.run(
            task_list={"long": long}, connection_string=migrated_url, heartbeat_interval=0.2,
            job_expiry=timedelta(seconds=1),
        )
        try:
            [worker_id] = runner.worker_ids
            # A stray lock under this worker's id, as a fetch whose reply was lost would leave.
            with psycopg.connect(migrated_url, autocommit=True) as conn:
                conn.execute("select graphile_worker.add_job('other', queue_name => 'stray')")
                conn.execute(
                    "update graphile_worker.job_queues set locked_by = %s, locked_at = now() - interval '1 hour'"
                    " where queue_name = 'stray'",
                    (worker_id,),
                )
            await kongtask.add_job("long", connection_string=migrated_url, queue_name="running")
            await wait_until_async(
                lambda: query_rows(migrated_url, "select 1 from graphile_worker.job_queues where queue_name = 'running'"
                                            " and locked_at > now() - interval '0.5 seconds' and locked_by is not null"),
                what="the running job's queue to be refreshed",
            )
            stray = query_rows(migrated_url, "select locked_at < now() - interval '50 minutes'"
                                        " from graphile_worker.job_queues where queue_name = 'stray'")
            assert stray == [(True,)], "the stray lock must be left to expire"
        finally:
            gate.set()
            await runner.stop()

    asyncio.run(scenario())


def test_a_callers_pool_with_dict_rows_works(migrated_url: str) -> None:
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    seen: list[Any] = []

    async def scenario() -> None:
        kwargs = {"autocommit": True, "row_factory": dict_row}
        async with AsyncConnectionPool(migrated_url, kwargs=kwargs, min_size=1, max_size=4) as pool:
            job = await kongtask.add_job("t", {"dict": True}, pool=pool)
            assert job.payload == {"dict": True}
            await kongtask.run_once(task_list={"t": lambda p, h: seen.append(p)}, pool=pool)
            async with pool.connection() as conn:  # the caller's connections keep their row factory
                assert await (await conn.execute("select 1 as one")).fetchone() == {"one": 1}

    asyncio.run(scenario())
    assert seen == [{"dict": True}]
