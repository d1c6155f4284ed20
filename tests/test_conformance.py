"""Python ports of upstream graphile-worker v0.1.0's own tests, one for one.

Each test's name carries its upstream twin (file and title) so the two suites can be compared.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

import kongtask
from kongtask.errors import ConfigurationError
from kongtask.tasks import load_task_directory, load_task_module
from tests.support import add_job_to, query_rows, wait_until_async

S = "graphile_worker"


# --- getTasks.test.ts -----------------------------------------------------------------------------


def test_getTasks__gets_tasks_from_folder(tmp_path: Path) -> None:
    (tmp_path / "wouldyoulike.py").write_text("def task(payload, helpers):\n    return 'some sausages'\n")
    (tmp_path / "wouldyoulike_more.py").write_text("async def task(payload, helpers):\n    return 'more'\n")
    (tmp_path / "_private.py").write_text("VALUE = 1\n")
    (tmp_path / "notes.txt").write_text("not a task")
    tasks = load_task_directory(tmp_path)
    assert sorted(tasks) == ["wouldyoulike", "wouldyoulike_more"]
    assert tasks["wouldyoulike"]({}, None) == "some sausages"


def test_getTasks__get_tasks_from_file_vanilla(tmp_path: Path) -> None:
    path = tmp_path / "many.py"
    path.write_text(
        textwrap.dedent(
            """
            def task1(payload, helpers):
                return "hi"

            async def task2(payload, helpers):
                return "there"

            def _not_a_task():
                pass
            """
        )
    )
    tasks = load_task_module(str(path))
    assert sorted(tasks) == ["task1", "task2"]
    assert tasks["task1"]({}, None) == "hi"


def test_getTasks__get_tasks_from_file_default(tmp_path: Path) -> None:
    path = tmp_path / "grouped.py"
    path.write_text(
        textwrap.dedent(
            """
            def _one(payload, helpers):
                return "one"

            def helper_not_a_task():
                pass

            tasks = {"task1": _one, "task2": lambda payload, helpers: "two"}
            """
        )
    )
    tasks = load_task_module(str(path))
    assert sorted(tasks) == ["task1", "task2"]
    assert tasks["task2"]({}, None) == "two"


# --- main.runTaskList.test.ts ----------------------------------------------------------------------


def test_main_runTaskList__main_will_execute_jobs_as_they_come_up_and_exits_cleanly(migrated_url: str) -> None:
    async def scenario() -> None:
        started: list[int] = []
        gates: dict[int, asyncio.Event] = {}

        async def job1(payload: Any, helpers: Any) -> None:
            started.append(payload["id"])
            gates.setdefault(payload["id"], asyncio.Event())
            await gates[payload["id"]].wait()

        runner = await kongtask.run(task_list={"job1": job1}, connection_string=migrated_url, concurrency=3)
        try:
            for i in range(5):
                gates[i] = asyncio.Event()
                await add_job_to(migrated_url, "job1", {"id": i}, queue_name="myqueue")
                await wait_until_async(lambda: len(started) == i + 1, what=f"job {i} to start")
                gates[i].set()
            await wait_until_async(
                lambda: not query_rows(migrated_url, "select 1 from graphile_worker.jobs"),
                what="jobs table to empty",
            )
            assert not runner._done.done(), "the pool keeps running until released"
        finally:
            await runner.stop()
        assert started == [0, 1, 2, 3, 4]
        assert query_rows(migrated_url, "select count(*) from graphile_worker.job_queues") == [(0,)]

    asyncio.run(scenario())


# --- main.runTaskListOnce.test.ts ------------------------------------------------------------------


def test_runTaskListOnce__runs_jobs(migrated_url: str) -> None:
    async def scenario() -> None:
        start = datetime.now(timezone.utc)
        calls: dict[str, list[Any]] = {"job1": [], "job2": []}
        job = await add_job_to(migrated_url, "job1", {"a": 1})
        assert start - timedelta(seconds=1) <= job.run_at <= datetime.now(timezone.utc)
        assert query_rows(migrated_url, "select job_count, locked_at, locked_by from graphile_worker.job_queues") == [
            (1, None, None)
        ]

        async def job1(payload: Any, helpers: Any) -> None:
            calls["job1"].append(payload)

        def job2(payload: Any, helpers: Any) -> None:
            calls["job2"].append(payload)

        await kongtask.run_once(task_list={"job1": job1, "job2": job2}, connection_string=migrated_url)
        assert calls == {"job1": [{"a": 1}], "job2": []}
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]

    asyncio.run(scenario())


def _fail_with(message: str) -> Any:
    async def job1(payload: Any, helpers: Any) -> None:
        raise RuntimeError(message)

    return job1


def test_runTaskListOnce__schedules_errors(migrated_url: str) -> None:
    async def scenario() -> None:
        start = datetime.now(timezone.utc)
        await add_job_to(migrated_url, "job1", {"a": 1})
        await kongtask.run_once(task_list={"job1": _fail_with("TEST_ERROR")}, connection_string=migrated_url)
        [(attempts, max_attempts, last_error, run_at)] = query_rows(
            migrated_url, "select attempts, max_attempts, last_error, run_at from graphile_worker.jobs"
        )
        assert (attempts, max_attempts, last_error) == (1, 25, "TEST_ERROR")
        now = datetime.now(timezone.utc)
        assert start + timedelta(milliseconds=2718) <= run_at <= now + timedelta(milliseconds=2719)
        assert query_rows(migrated_url, "select job_count, locked_at, locked_by from graphile_worker.job_queues") == [
            (1, None, None)
        ]

    asyncio.run(scenario())


def test_runTaskListOnce__retries_job(migrated_url: str) -> None:
    async def scenario() -> None:
        await add_job_to(migrated_url, "job1", {"a": 1})
        await kongtask.run_once(task_list={"job1": _fail_with("TEST_ERROR")}, connection_string=migrated_url)
        calls: list[Any] = []

        async def job1(payload: Any, helpers: Any) -> None:
            calls.append(payload)
            raise RuntimeError("TEST_ERROR 2")

        # Not due yet: nothing runs.
        await kongtask.run_once(task_list={"job1": job1}, connection_string=migrated_url)
        assert calls == []
        query_rows(migrated_url, "update graphile_worker.jobs set run_at = now() returning 1")
        start = datetime.now(timezone.utc)
        await kongtask.run_once(task_list={"job1": job1}, connection_string=migrated_url)
        assert calls == [{"a": 1}]
        [(attempts, last_error, run_at)] = query_rows(migrated_url, "select attempts, last_error, run_at from graphile_worker.jobs")
        assert (attempts, last_error) == (2, "TEST_ERROR 2")
        delay = timedelta(milliseconds=7389)  # e^2 seconds
        assert start + delay - timedelta(milliseconds=1) <= run_at <= datetime.now(timezone.utc) + delay

    asyncio.run(scenario())


def test_runTaskListOnce__supports_future_scheduled_jobs(migrated_url: str) -> None:
    async def scenario() -> None:
        calls: list[Any] = []

        async def future(payload: Any, helpers: Any) -> None:
            calls.append(payload)

        run_at = datetime.now(timezone.utc) + timedelta(seconds=3)
        await add_job_to(migrated_url, "future", {"f": 1}, run_at=run_at)
        await kongtask.run_once(task_list={"future": future}, connection_string=migrated_url)
        assert calls == []
        # Rather than wait 3 s, move the job (as upstream's test moves the clock) and run again.
        query_rows(migrated_url, "update graphile_worker.jobs set run_at = now() returning 1")
        await kongtask.run_once(task_list={"future": future}, connection_string=migrated_url)
        assert calls == [{"f": 1}]
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]
        assert query_rows(migrated_url, "select count(*) from graphile_worker.job_queues") == [(0,)]

    asyncio.run(scenario())


def test_runTaskListOnce__runs_jobs_asynchronously(migrated_url: str) -> None:
    async def scenario() -> None:
        start = datetime.now(timezone.utc)
        gate = asyncio.Event()
        started = asyncio.Event()

        async def job1(payload: Any, helpers: Any) -> None:
            started.set()
            await gate.wait()

        await add_job_to(migrated_url, "job1", {"a": 1})
        run = asyncio.ensure_future(kongtask.run_once(task_list={"job1": job1}, connection_string=migrated_url))
        await asyncio.wait_for(started.wait(), 10)
        [(attempts,)] = query_rows(migrated_url, "select attempts from graphile_worker.jobs")
        assert attempts == 1
        [(locked_by, locked_at)] = query_rows(migrated_url, "select locked_by, locked_at from graphile_worker.job_queues")
        assert locked_by is not None and locked_by.startswith("worker-") and len(locked_by) >= 17
        assert start <= locked_at <= datetime.now(timezone.utc)
        assert not run.done(), "the run finishes only after the task does"
        gate.set()
        await asyncio.wait_for(run, 10)
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]

    asyncio.run(scenario())


def test_runTaskListOnce__runs_jobs_in_parallel(migrated_url: str) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        running: list[int] = []

        async def job1(payload: Any, helpers: Any) -> None:
            running.append(payload["i"])
            await gate.wait()

        for i in range(5):
            await add_job_to(migrated_url, "job1", {"i": i})
        runs = [
            asyncio.ensure_future(kongtask.run_once(task_list={"job1": job1}, connection_string=migrated_url))
            for _ in range(5)
        ]
        await wait_until_async(lambda: len(running) == 5, what="all five jobs to start together")
        lockers = query_rows(migrated_url, "select locked_by from graphile_worker.job_queues where locked_by is not null")
        assert len({row[0] for row in lockers}) == 5
        gate.set()
        await asyncio.wait_for(asyncio.gather(*runs), 20)
        assert sorted(running) == [0, 1, 2, 3, 4]

    asyncio.run(scenario())


def test_runTaskListOnce__single_worker_runs_jobs_in_series_purges_all_before_exit(migrated_url: str) -> None:
    async def scenario() -> None:
        in_flight = 0
        order: list[int] = []

        async def job1(payload: Any, helpers: Any) -> None:
            nonlocal in_flight
            in_flight += 1
            assert in_flight == 1
            await asyncio.sleep(0.01)
            order.append(payload["i"])
            in_flight -= 1

        for i in range(5):
            await add_job_to(migrated_url, "job1", {"i": i})
        await kongtask.run_once(task_list={"job1": job1}, connection_string=migrated_url)
        assert order == [0, 1, 2, 3, 4]
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]

    asyncio.run(scenario())


def test_runTaskListOnce__jobs_added_to_the_same_queue_will_be_ran_serially_even_if_multiple_workers(
    migrated_url: str,
) -> None:
    async def scenario() -> None:
        in_flight = 0
        most = 0
        order: list[int] = []

        async def job1(payload: Any, helpers: Any) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.02)
            order.append(payload["i"])
            in_flight -= 1

        for i in range(5):
            await add_job_to(migrated_url, "job1", {"i": i}, queue_name="serial")
        await asyncio.gather(
            *(kongtask.run_once(task_list={"job1": job1}, connection_string=migrated_url) for _ in range(3))
        )
        assert most == 1
        assert order == [0, 1, 2, 3, 4]

    asyncio.run(scenario())


# --- runner.runOnce.test.ts (options) -------------------------------------------------------------


def _noop(payload: Any, helpers: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task_list": {"t": _noop}}, "no database given"),
        ({"task_list": {"t": _noop}, "task_directory": "tasks", "connection_string": "x"}, "not both"),
        ({"connection_string": "postgres://x"}, "no tasks given"),
        ({"task_list": {"t": _noop}, "connection_string": "postgres://x", "pool": object()}, "pool or a connection string"),
    ],
    ids=[
        "at_least_a_connection_string_a_pool_or_DATABASE_URL_must_be_supplied",
        "task_directory_and_task_list_cannot_both_be_provided",
        "task_directory_or_task_list_must_be_provided",
        "connection_string_and_pool_cannot_both_be_provided",
    ],
)
def test_runner_runOnce__invalid_options(monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], message: str) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match=message):
        asyncio.run(kongtask.run_once(**options))


def _count_runs() -> tuple[dict[str, Any], list[Any]]:
    seen: list[Any] = []

    async def t(payload: Any, helpers: Any) -> None:
        seen.append(payload)

    return {"t": t}, seen


def test_runner_runOnce__connection_string_and_DATABASE_URL(migrated_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks, seen = _count_runs()
    asyncio.run(add_job_to(migrated_url, "t", {"via": "DATABASE_URL"}))
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    asyncio.run(kongtask.run_once(task_list=tasks))
    asyncio.run(add_job_to(migrated_url, "t", {"via": "connection_string"}))
    monkeypatch.delenv("DATABASE_URL")
    asyncio.run(kongtask.run_once(task_list=tasks, connection_string=migrated_url))
    assert seen == [{"via": "DATABASE_URL"}, {"via": "connection_string"}]


def test_runner_runOnce__pool(migrated_url: str) -> None:
    tasks, seen = _count_runs()

    async def scenario() -> None:
        async with AsyncConnectionPool(migrated_url, kwargs={"autocommit": True}, min_size=1, max_size=4) as pool:
            await kongtask.add_job("t", {"via": "pool"}, pool=pool)
            await kongtask.run_once(task_list=tasks, pool=pool)
            # The caller's pool stays open: the runner did not own it.
            async with pool.connection() as conn:
                assert await (await conn.execute("select 1")).fetchone() == (1,)

    asyncio.run(scenario())
    assert seen == [{"via": "pool"}]


def test_migrate__migration_installs_schema_second_migration_does_no_harm(db_url: str) -> None:
    assert asyncio.run(kongtask.migrate(connection_string=db_url)) == [1]
    asyncio.run(add_job_to(db_url, "job1", {"a": 1}))
    assert asyncio.run(kongtask.migrate(connection_string=db_url)) == []
    assert query_rows(db_url, "select id from graphile_worker.migrations") == [(1,)]
    assert json.loads(json.dumps(query_rows(db_url, "select payload from graphile_worker.jobs")[0][0])) == {"a": 1}
