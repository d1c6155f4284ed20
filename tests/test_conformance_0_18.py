"""Python ports of upstream graphile-worker 0.18's own tests of the schema and the worker's semantics,
run against a database migrated to graphile-worker 0.18's schema (``modern_url``: migration 20).

Each test's name carries its upstream twin (file and title), one section per upstream file, as in
tests/test_conformance.py (upstream v0.1.0's tests, on the v0.1.0 schema). Upstream's tests are in
``__tests__/`` of github.com/graphile/worker; the stored snapshot has no v0.18.0 tag, so they were read
at its main branch ("v0.18.0 is pending": 0.17.3 plus the 0.18 changes), checked against the
graphile-worker@0.18.0 npm package (its sql/ and dist/sql/). That main still counts 19 migrations
(``MAX_MIGRATION_NUMBER = 19``); 0.18.0 ships 20, and so does kongtask, so these tests expect 20.

What each upstream file's tests became here:

main.runTaskListOnce.test.ts
  ported: runs jobs; schedules errors for retry; retries job; supports future-scheduled jobs; runs jobs
  asynchronously; runs jobs in parallel; single worker runs jobs in series, purges all before exit;
  jobs added to the same queue will be ran serially (even if multiple workers).
  ported in tests/test_conformance_0_18_features.py (job keys and remove_job): allows update of
  pending jobs; schedules a new job if existing is completed; schedules a new job if existing is
  being processed; schedules a new job if the existing is pending retry; job details are reset if
  not specified in update; pending jobs can be removed; jobs in progress cannot be removed.

main.runTaskList.test.ts
  ported: main will execute jobs as they come up, and exits cleanly (the SIGTERM listener count
  becomes the SIGTERM handler, installed with ``handle_signals=True`` and given back at the stop);
  gracefulShutdown.
  left out: doesn't bail on deprecated `debug` function (Node's deprecated ``helpers.debug``; no
  such helper in kongtask, and nothing of the schema).

runner.runOnce.test.ts
  ported: providing just a DATABASE_URL is possible; providing just a connectionString is possible;
  providing just a pgPool is possible (each also runs a job, rather than only not failing); runs all
  available tasks and then exits; gracefulShutdown (run_once exposes no pool, so the stop comes as
  SIGTERM through ``handle_signals=True``).
  left out: either a list of tasks or a existent task directory must be provided; taskList and
  taskDirectory cannot be provided a the same time; at least a connectionString, a pgPool, the
  DATABASE_URL or PGDATABASE envvars must be provided; connectionString and a pgPool cannot provided
  a the same time (option checks made before any connection, whatever the schema: ported in
  tests/test_conformance.py); providing just PGHOST and PGDATABASE is possible (kongtask takes
  connection_string, pool or DATABASE_URL only).

migrate.test.ts
  ported, with ``to="latest"``: migration installs schema; second migration does no harm; multiple
  concurrent installs of the schema is fine; migration can take over from pre-existing migrations
  table; aborts if database is more up to date than current worker (the worker refuses too); throws
  helpful error message in migration 11 (kongtask's message is its own line, not upstream's text).

jobsView.test.ts
  ported: jobs view renders jobs (with one job in a named queue added, so the queue name is shown).

resetLockedAt.test.ts
  ported: its one test (upstream titled it "main will execute jobs as they come up, and exits
  cleanly"). kongtask's pools keep their locks fresh with a heartbeat, so the expiry is
  ``job_expiry`` (default two minutes, not upstream's four hours) and the sweep runs about twice per
  expiry: the test sets a five-second expiry and locks "recently" at the start rather than five
  minutes ago. kongtask has no event emitter: the sweep is seen in the rows and in its log line.

workerUtils.addJob.test.ts
  ported: runs a job added through the worker utils (kongtask.add_job); runs a job added through the
  addJob shortcut function (kongtask.add_job_sync).
  ported in tests/test_conformance_0_18_features.py: supports the jobKey API; supports the jobKey
  API with jobKeyMode.
  left out: adding job respects useNodeTime (kongtask always uses the database's clock).

workerUtils.addJobs.test.ts
  ported: runs a job added through the worker utils (kongtask.add_jobs); runs a job added through
  the addJob shortcut function (kongtask.add_jobs_sync); adding lots of jobs works.
  ported in tests/test_conformance_0_18_features.py: supports the jobKey API; supports the jobKey
  API with jobKeyMode.
  left out: adding job respects useNodeTime (as above).

Ported elsewhere: batchJobs, forbiddenFlags, workerUtils.completeJobs / forceUnlockWorkers /
permanentlyFailJobs / rescheduleJobs in tests/test_conformance_0_18_features.py; cron, cron-timing,
cronMatcher, crontab in tests/test_cron.py, test_cron_timing.py, test_cron_matcher.py,
test_crontab.py. Not ported: workerUtils.cleanup (no such feature in kongtask yet); nor, being
about Node alone: events, getTasks, nodeTime, runner.helpers.getTaskName.

The last section holds what the 0.18 contract says (shared/spec/graphile-worker-0.18.md) that no
upstream test checks: the SQL add_job and add_jobs, the jobs:insert and worker:migrate notifications,
task registration in _private_tasks, fetch order, max_attempts, the backoff's ceiling, and named
queues kept serial inside one pool's batches (upstream's issue #621).

Deliberate differences from upstream, written to kongtask's documented behaviour: kongtask's worker
id (``locked_by``) is one per pool; named queues stay strictly serial even inside a batch; locks are
kept fresh by a heartbeat and expire after ``job_expiry``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

import kongtask
from kongtask import JobSpec
from kongtask.errors import MigrationError, SchemaChanged
from tests.support import query_rows, wait_until_async

S = "graphile_worker"

#: kongtask's lock id: one per pool (upstream 0.17+: the pool's id too).
POOL_ID = re.compile(r"^worker-[0-9a-f]{20}$")


# --- helpers: upstream's helpers.ts, over the private tables ------------------------------------------


def _db_now(url: str) -> datetime:
    # Times are compared with the server's clock, as the rows are written with it.
    [(now,)] = query_rows(url, "select now()")
    return now  # type: ignore[no-any-return]


def _dict_rows(url: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def _get_jobs(url: str) -> list[dict[str, Any]]:
    """Upstream's getJobs: every private job row with its task identifier and queue name, by id."""
    return _dict_rows(
        url,
        """
        select jobs.*, tasks.identifier as task_identifier, job_queues.queue_name as queue_name
        from graphile_worker._private_jobs as jobs
        left join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id
        left join graphile_worker._private_job_queues as job_queues on job_queues.id = jobs.job_queue_id
        order by jobs.id
        """,
    )


def _get_job_queues(url: str) -> list[dict[str, Any]]:
    """Upstream's getJobQueues: every queue with the number of its jobs."""
    return _dict_rows(
        url,
        """
        select job_queues.id, job_queues.queue_name, job_queues.locked_at, job_queues.locked_by,
          count(jobs.*)::int as job_count
        from graphile_worker._private_job_queues as job_queues
        left join graphile_worker._private_jobs as jobs on jobs.job_queue_id = job_queues.id
        group by job_queues.id
        order by job_queues.queue_name
        """,
    )


def _job_count(url: str) -> int:
    [(count,)] = query_rows(url, "select count(*) from graphile_worker._private_jobs")
    return int(count)


def _sql(url: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


async def _make_selection_of_jobs(url: str) -> dict[str, int]:
    """Upstream's makeSelectionOfJobs: five jobs due in an hour, one locked, one failed for good."""
    future = _db_now(url) + timedelta(hours=1)
    ids = {}
    for name, a in (("failed", 1), ("regular1", 2), ("locked", 3), ("regular2", 4), ("untouched", 5)):
        ids[name] = (await kongtask.add_job("job3", {"a": a}, run_at=future, connection_string=url)).id
    _sql(url, "update graphile_worker._private_jobs set locked_by = 'test', locked_at = now() where id = %s",
         (ids["locked"],))
    _sql(url, "update graphile_worker._private_jobs set attempts = max_attempts, last_error = 'Failed forever' "
              "where id = %s", (ids["failed"],))
    return ids


class Gated:
    """A task that records each payload and waits until the test lets that call finish."""

    def __init__(self) -> None:
        self.payloads: list[Any] = []
        self.gates: list[asyncio.Event] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, payload: Any, helpers: Any) -> None:
        gate = asyncio.Event()
        self.payloads.append(payload)
        self.gates.append(gate)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await gate.wait()
        finally:
            self.running -= 1

    async def started(self, count: int) -> None:
        """Waits until ``count`` calls have started (with a deadline)."""
        await wait_until_async(lambda: len(self.payloads) >= count, what=f"call {count} to start")

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()


def _recorder(calls: list[Any]) -> Any:
    async def task(payload: Any, helpers: Any) -> None:
        calls.append(payload)

    return task


async def _listening(url: str) -> None:
    """Waits until a pool's listener has run LISTEN on this database."""
    await wait_until_async(
        lambda: query_rows(
            url,
            "select count(*) from pg_stat_activity where datname = current_database() and query like 'listen %%'",
        )[0][0] > 0,
        what="the pool to LISTEN",
    )


# --- main.runTaskListOnce.test.ts ----------------------------------------------------------------


def test_runTaskListOnce__runs_jobs(modern_url: str) -> None:
    async def scenario() -> None:
        start = _db_now(modern_url)
        _sql(modern_url, """select graphile_worker.add_job('job3', '{"a": 1}', queue_name := 'myqueue')""")
        [job] = _get_jobs(modern_url)
        assert start <= job["run_at"] <= _db_now(modern_url)
        [queue] = _get_job_queues(modern_url)
        assert (queue["queue_name"], queue["job_count"], queue["locked_at"], queue["locked_by"]) == (
            job["queue_name"], 1, None, None)

        job3_calls: list[Any] = []
        job2_calls: list[Any] = []
        await kongtask.run_once(task_list={"job3": _recorder(job3_calls), "job2": _recorder(job2_calls)},
                                connection_string=modern_url)
        assert job3_calls == [{"a": 1}]
        assert job2_calls == []
        assert _job_count(modern_url) == 0

    asyncio.run(scenario())


def _failing(message: str | None = None) -> tuple[Any, list[Any]]:
    calls: list[Any] = []

    async def task(payload: Any, helpers: Any) -> None:
        calls.append(payload)
        raise RuntimeError(message or f"TEST_ERROR {len(calls)}")

    return task, calls


def test_runTaskListOnce__schedules_errors_for_retry(modern_url: str) -> None:
    async def scenario() -> None:
        start = _db_now(modern_url)
        _sql(modern_url, """select graphile_worker.add_job('job3', '{"a": 1}', queue_name := 'myqueue')""")
        [job] = _get_jobs(modern_url)
        assert (job["task_identifier"], job["payload"]) == ("job3", {"a": 1})
        assert start <= job["run_at"] <= _db_now(modern_url)

        job3, calls = _failing("TEST_ERROR")
        await kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url)
        assert calls == [{"a": 1}]

        [job] = _get_jobs(modern_url)
        assert (job["task_identifier"], job["attempts"], job["max_attempts"], job["last_error"]) == (
            "job3", 1, 25, "TEST_ERROR")
        # The first attempt: the retry waits exp(1) ~= 2.718 seconds.
        assert start + timedelta(milliseconds=2718) <= job["run_at"] <= _db_now(modern_url) + timedelta(
            milliseconds=2719)
        [queue] = _get_job_queues(modern_url)
        assert (queue["queue_name"], queue["job_count"], queue["locked_at"], queue["locked_by"]) == (
            job["queue_name"], 1, None, None)

    asyncio.run(scenario())


def test_runTaskListOnce__retries_job(modern_url: str) -> None:
    async def scenario() -> None:
        _sql(modern_url, """select graphile_worker.add_job('job3', '{"a": 1}', queue_name := 'myqueue')""")
        job3, calls = _failing()
        await kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url)
        assert len(calls) == 1
        # Not due again yet: nothing runs.
        await kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url)
        assert len(calls) == 1

        _sql(modern_url, """
            update graphile_worker._private_jobs as jobs set run_at = now()
            where task_id = (select id from graphile_worker._private_tasks where identifier = 'job3')""")
        start = _db_now(modern_url)
        await kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url)
        assert len(calls) == 2

        [job] = _get_jobs(modern_url)
        assert (job["task_identifier"], job["attempts"], job["max_attempts"], job["last_error"]) == (
            "job3", 2, 25, "TEST_ERROR 2")
        # The second attempt: exp(2) ~= 7.389 seconds.
        assert start + timedelta(milliseconds=7388) <= job["run_at"] <= _db_now(modern_url) + timedelta(
            milliseconds=7389)
        [queue] = _get_job_queues(modern_url)
        assert (queue["queue_name"], queue["job_count"], queue["locked_at"], queue["locked_by"]) == (
            job["queue_name"], 1, None, None)

    asyncio.run(scenario())


def test_runTaskListOnce__supports_future_scheduled_jobs(modern_url: str) -> None:
    async def scenario() -> None:
        _sql(modern_url, "select graphile_worker.add_job('future', run_at := now() + interval '3 seconds')")
        calls: list[Any] = []
        tasks = {"future": _recorder(calls)}
        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == []
        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == []

        _sql(modern_url, """
            update graphile_worker._private_jobs as jobs set run_at = now()
            where task_id = (select id from graphile_worker._private_tasks where identifier = 'future')""")
        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == [{}]
        assert _get_jobs(modern_url) == []
        assert _get_job_queues(modern_url) == []

    asyncio.run(scenario())


def test_runTaskListOnce__runs_jobs_asynchronously(modern_url: str) -> None:
    async def scenario() -> None:
        start = _db_now(modern_url)
        _sql(modern_url, """select graphile_worker.add_job('job3', '{"a": 1}', queue_name := 'myqueue')""")
        job3 = Gated()
        run = asyncio.ensure_future(kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url))
        try:
            await wait_until_async(lambda: job3.payloads, what="the job to start")
            assert not run.done(), "run_once returns only after the task does"

            [job] = _get_jobs(modern_url)
            assert (job["task_identifier"], job["payload"]) == ("job3", {"a": 1})
            assert start <= job["run_at"] <= _db_now(modern_url)
            assert job["attempts"] == 1  # counted when the job is checked out
            [queue] = _get_job_queues(modern_url)
            assert (queue["queue_name"], queue["job_count"]) == (job["queue_name"], 1)
            assert start <= queue["locked_at"] <= _db_now(modern_url)
            # Upstream compares with its worker pool's id; kongtask's lock id is its pool's too.
            assert POOL_ID.match(queue["locked_by"]) and queue["locked_by"] == job["locked_by"]
        finally:
            job3.release_all()
        await asyncio.wait_for(run, 10)
        assert job3.payloads == [{"a": 1}]
        assert _job_count(modern_url) == 0

    asyncio.run(scenario())


def test_runTaskListOnce__runs_jobs_in_parallel(modern_url: str) -> None:
    async def scenario() -> None:
        start = _db_now(modern_url)
        _sql(modern_url, """
            select graphile_worker.add_job('job3', '{"a": 1}', queue_name := 'queue_' || s::text)
            from generate_series(1, 5) s""")
        job3 = Gated()
        runs: list[asyncio.Future[None]] = []
        try:
            # One pool after another: run_once ends when a fetch finds nothing due, and a fetch
            # skips the queues another pool's fetch is locking at that instant, as upstream's does.
            for i in range(5):
                runs.append(asyncio.ensure_future(kongtask.run_once(task_list={"job3": job3},
                                                                    connection_string=modern_url)))
                await job3.started(i + 1)
            assert job3.running == 5
            assert not any(run.done() for run in runs)

            jobs = _get_jobs(modern_url)
            assert len(jobs) == 5
            for job in jobs:
                assert (job["task_identifier"], job["payload"], job["attempts"]) == ("job3", {"a": 1}, 1)
                assert start <= job["run_at"] <= _db_now(modern_url)
            queues = _get_job_queues(modern_url)
            assert sorted(q["queue_name"] for q in queues) == sorted(j["queue_name"] for j in jobs)
            for queue in queues:
                assert queue["job_count"] == 1
                assert start <= queue["locked_at"] <= _db_now(modern_url)
            assert len({q["locked_by"] for q in queues}) == 5, "five pools, five lock ids"
        finally:
            job3.release_all()
        await asyncio.wait_for(asyncio.gather(*runs), 20)
        assert len(job3.payloads) == 5
        assert _job_count(modern_url) == 0

    asyncio.run(scenario())


def test_runTaskListOnce__single_worker_runs_jobs_in_series_purges_all_before_exit(modern_url: str) -> None:
    async def scenario() -> None:
        _sql(modern_url, """select graphile_worker.add_job('job3', '{"a": 1}') from generate_series(1, 5)""")
        job3 = Gated()
        run = asyncio.ensure_future(kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url))
        try:
            for i in range(5):
                await job3.started(i + 1)
                assert len(job3.payloads) == i + 1 and job3.running == 1
                assert not run.done()
                job3.gates[i].set()
        finally:
            job3.release_all()
        await asyncio.wait_for(run, 10)
        assert len(job3.payloads) == 5 and job3.most_running == 1
        assert _job_count(modern_url) == 0

    asyncio.run(scenario())


def test_runTaskListOnce__jobs_added_to_the_same_queue_will_be_ran_serially_even_if_multiple_workers(
    modern_url: str,
) -> None:
    async def scenario() -> None:
        _sql(modern_url, """
            select graphile_worker.add_job('job3', json_build_object('i', s), 'serial')
            from generate_series(1, 5) s""")
        job3 = Gated()
        runs = [
            asyncio.ensure_future(kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url))
            for _ in range(3)
        ]
        try:
            for i in range(5):
                await job3.started(i + 1)
                assert len(job3.payloads) == i + 1 and job3.running == 1
                # Instead of upstream's 50 ms "chance to interfere": the database holds one job of the
                # queue locked, under the pool that holds the queue.
                locked = query_rows(modern_url, "select locked_by from graphile_worker._private_jobs "
                                                "where locked_by is not null")
                [queue] = _get_job_queues(modern_url)
                assert len(locked) == 1 and queue["locked_by"] == locked[0][0]
                assert not all(run.done() for run in runs)
                job3.gates[i].set()
        finally:
            job3.release_all()
        await asyncio.wait_for(asyncio.gather(*runs), 20)
        assert job3.payloads == [{"i": i} for i in range(1, 6)]
        assert job3.most_running == 1
        assert _job_count(modern_url) == 0

    asyncio.run(scenario())


# --- main.runTaskList.test.ts --------------------------------------------------------------------


def test_main_runTaskList__main_will_execute_jobs_as_they_come_up_and_exits_cleanly(modern_url: str) -> None:
    async def scenario() -> None:
        job1 = Gated()
        before = signal.getsignal(signal.SIGTERM)
        runner = await kongtask.run(task_list={"job1": job1}, connection_string=modern_url, concurrency=3,
                                    handle_signals=True)
        finished = asyncio.ensure_future(runner.wait())
        try:
            assert signal.getsignal(signal.SIGTERM) != before, "the runner handles SIGTERM while it runs"
            for i in range(5):
                assert len(job1.payloads) == i
                _sql(modern_url, "select graphile_worker.add_job('job1', json_build_object('id', %s::text), 'serial')",
                     (str(i),))
                await job1.started(i + 1)
                job1.gates[i].set()
            await asyncio.sleep(0)
            assert not finished.done(), "the pool keeps running until stopped"
            await asyncio.wait_for(runner.stop(), 10)
        finally:
            job1.release_all()
            await runner.stop()
        assert finished.done()
        assert job1.payloads == [{"id": str(i)} for i in range(5)]
        assert _job_count(modern_url) == 0
        assert signal.getsignal(signal.SIGTERM) == before, "the stop gives SIGTERM back"

    asyncio.run(scenario())


def test_main_runTaskList__gracefulShutdown(modern_url: str) -> None:
    async def scenario() -> None:
        started = asyncio.Event()

        async def job1(payload: Any, helpers: Any) -> None:
            started.set()
            await asyncio.Event().wait()  # only the forced stop ends it

        runner = await kongtask.run(task_list={"job1": job1}, connection_string=modern_url, concurrency=3,
                                    shutdown_timeout=0.02)
        try:
            _sql(modern_url, "select graphile_worker.add_job('job1', json_build_object('id', 'x'), 'serial')")
            await asyncio.wait_for(started.wait(), 10)
        finally:
            await asyncio.wait_for(runner.stop(), 10)
        [job] = _get_jobs(modern_url)
        assert job["last_error"], "the job cut short is failed, to be retried"
        assert (job["attempts"], job["locked_by"], job["locked_at"]) == (1, None, None)
        [queue] = _get_job_queues(modern_url)
        assert (queue["locked_by"], queue["locked_at"]) == (None, None)

    asyncio.run(scenario())


# --- runner.runOnce.test.ts ----------------------------------------------------------------------


def test_runner_runOnce__providing_just_a_DATABASE_URL_is_possible(
    modern_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    _sql(modern_url, "select graphile_worker.add_job('task', '{\"via\": \"DATABASE_URL\"}')")
    monkeypatch.setenv("DATABASE_URL", modern_url)
    asyncio.run(kongtask.run_once(task_list={"task": _recorder(calls)}))
    assert calls == [{"via": "DATABASE_URL"}]


def test_runner_runOnce__providing_just_a_connectionString_is_possible(
    modern_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    calls: list[Any] = []
    _sql(modern_url, "select graphile_worker.add_job('task', '{\"via\": \"connection_string\"}')")
    asyncio.run(kongtask.run_once(task_list={"task": _recorder(calls)}, connection_string=modern_url))
    assert calls == [{"via": "connection_string"}]


def test_runner_runOnce__providing_just_a_pgPool_is_possible(modern_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    calls: list[Any] = []

    async def scenario() -> None:
        async with AsyncConnectionPool(modern_url, kwargs={"autocommit": True}, min_size=1, max_size=4) as pool:
            await kongtask.add_job("task", {"via": "pool"}, pool=pool)
            await kongtask.run_once(task_list={"task": _recorder(calls)}, pool=pool)
            async with pool.connection() as conn:  # the caller's pool stays open
                assert await (await conn.execute("select 1")).fetchone() == (1,)

    asyncio.run(scenario())
    assert calls == [{"via": "pool"}]


def test_runner_runOnce__runs_all_available_tasks_and_then_exits(modern_url: str) -> None:
    async def scenario() -> None:
        calls: list[Any] = []
        tasks = {name: _recorder(calls) for name in ("job1", "job2", "job3")}
        for n in (1, 2, 3):
            await kongtask.add_job(f"job{n}", {"id": f"PRE_SELECTION_{n}"}, connection_string=modern_url)
        unavailable = await _make_selection_of_jobs(modern_url)
        for n in (1, 2, 3):
            await kongtask.add_job(f"job{n}", {"id": f"POST_SELECTION_{n}"}, connection_string=modern_url)
        assert len(_get_jobs(modern_url)) == len(unavailable) + 6

        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert sorted(p["id"] for p in calls) == sorted(
            [f"PRE_SELECTION_{n}" for n in (1, 2, 3)] + [f"POST_SELECTION_{n}" for n in (1, 2, 3)])
        assert sorted(job["id"] for job in _get_jobs(modern_url)) == sorted(unavailable.values())

    asyncio.run(scenario())


def test_runner_runOnce__gracefulShutdown(modern_url: str) -> None:
    async def scenario() -> None:
        started = asyncio.Event()

        async def job1(payload: Any, helpers: Any) -> None:
            started.set()
            await asyncio.Event().wait()  # only the forced stop ends it

        await kongtask.add_job("job1", {"id": "test sleep"}, connection_string=modern_url)
        run = asyncio.ensure_future(kongtask.run_once(task_list={"job1": job1}, connection_string=modern_url,
                                                      shutdown_timeout=0.02, handle_signals=True))
        await asyncio.wait_for(started.wait(), 10)
        # run_once hands out no pool to stop (upstream reaches for _allWorkerPools): the stop comes as
        # the signal a process supervisor sends, once the runner holds it.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(run, 10)
        [job] = _get_jobs(modern_url)
        assert job["last_error"], "the job cut short is failed, to be retried"
        assert (job["attempts"], job["locked_by"]) == (1, None)

    asyncio.run(scenario())


# --- migrate.test.ts -----------------------------------------------------------------------------

#: graphile-worker 0.18.0's migrations (upstream's main still said 19 when read).
MAX_MIGRATION_NUMBER = 20


def _assert_jobs_work(url: str) -> None:
    _sql(url, "select graphile_worker.add_job('assert_jobs_work')")
    assert [job["task_identifier"] for job in _get_jobs(url)] == ["assert_jobs_work"]


def test_migrate__migration_installs_schema_second_migration_does_no_harm(db_url: str) -> None:
    assert query_rows(db_url, "select 1 from pg_namespace where nspname = %s", (S,)) == []
    applied = asyncio.run(kongtask.migrate(connection_string=db_url, to="latest"))
    assert applied == list(range(1, MAX_MIGRATION_NUMBER + 1))
    rows = query_rows(db_url, "select id from graphile_worker.migrations order by id")
    assert len(rows) == MAX_MIGRATION_NUMBER and rows[0] == (1,)
    _assert_jobs_work(db_url)
    for _ in range(3):
        assert asyncio.run(kongtask.migrate(connection_string=db_url, to="latest")) == []
    assert [job["task_identifier"] for job in _get_jobs(db_url)] == ["assert_jobs_work"]


def test_migrate__multiple_concurrent_installs_of_the_schema_is_fine(db_url: str) -> None:
    async def many() -> list[list[int]]:
        return await asyncio.gather(*(kongtask.migrate(connection_string=db_url, to="latest") for _ in range(20)))

    results = asyncio.run(many())
    assert sorted(n for applied in results for n in applied) == list(range(1, MAX_MIGRATION_NUMBER + 1))
    rows = query_rows(db_url, "select id from graphile_worker.migrations order by id")
    assert len(rows) == MAX_MIGRATION_NUMBER and rows[0] == (1,)
    _assert_jobs_work(db_url)


def test_migrate__migration_can_take_over_from_pre_existing_migrations_table(db_url: str) -> None:
    from kongtask._schema.migrate import load_migrations
    from kongtask._schema.v0_1 import INSTALL_EXTENSIONS

    # A migrations table made by an older graphile-worker (no "breaking" column), migration 1 applied.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            create schema graphile_worker;
            create table graphile_worker.migrations(id int primary key, ts timestamptz default now() not null);
            insert into graphile_worker.migrations (id) values (1);""")
        conn.execute(INSTALL_EXTENSIONS)
        conn.execute(load_migrations()[0].for_schema(S))

    asyncio.run(kongtask.migrate(connection_string=db_url, to="latest"))
    rows = query_rows(db_url, "select id, breaking from graphile_worker.migrations order by id")
    assert len(rows) >= MAX_MIGRATION_NUMBER
    assert rows[1] == (2, False)
    assert rows[10] == (11, True)
    _assert_jobs_work(db_url)
    for _ in range(3):
        assert asyncio.run(kongtask.migrate(connection_string=db_url, to="latest")) == []
    assert [job["task_identifier"] for job in _get_jobs(db_url)] == ["assert_jobs_work"]


def test_migrate__aborts_if_database_is_more_up_to_date_than_current_worker(db_url: str) -> None:
    assert query_rows(db_url, "select 1 from pg_namespace where nspname = %s", (S,)) == []
    asyncio.run(kongtask.migrate(connection_string=db_url, to="latest"))
    _sql(db_url, "insert into graphile_worker.migrations (id, ts, breaking) "
                 "values (999999, '2023-10-19T10:31:00Z', true)")
    with pytest.raises(MigrationError) as refused:
        asyncio.run(kongtask.migrate(connection_string=db_url, to="latest"))
    message = str(refused.value)
    assert "breaking migration 999999" in message and f"({MAX_MIGRATION_NUMBER})" in message
    # The worker migrates when it starts, and so refuses the database too.
    with pytest.raises(MigrationError, match="breaking migration 999999"):
        asyncio.run(kongtask.run_once(task_list={"t": _recorder([])}, connection_string=db_url))


def test_migrate__throws_helpful_error_message_in_migration_11(db_url: str) -> None:
    assert asyncio.run(kongtask.migrate(connection_string=db_url, to=10)) == list(range(1, 11))
    _sql(db_url, "select graphile_worker.add_job('lock_me', '{}')")
    _sql(db_url, "update graphile_worker.jobs set locked_at = now(), locked_by = 'test_runner'")
    with pytest.raises(MigrationError) as refused:
        asyncio.run(kongtask.migrate(connection_string=db_url, to="latest"))
    message = str(refused.value)
    assert "migration 11" in message and "locked" in message and "\n" not in message
    assert query_rows(db_url, "select max(id) from graphile_worker.migrations") == [(10,)]


# --- jobsView.test.ts ----------------------------------------------------------------------------


def test_jobsView__jobs_view_renders_jobs(modern_url: str) -> None:
    async def scenario() -> None:
        await _make_selection_of_jobs(modern_url)
        # Beyond upstream's selection: one job in a named queue, so that the view shows a queue name.
        await kongtask.add_job("job3", {"a": 6}, queue_name="a_queue", connection_string=modern_url)

        view = _dict_rows(modern_url, "select * from graphile_worker.jobs order by id")
        private = _get_jobs(modern_url)
        assert len(view) == len(private) == 6
        hidden = {"payload", "is_available", "job_queue_id", "task_id"}
        for row, job in zip(view, private, strict=True):
            assert row == {name: value for name, value in job.items() if name not in hidden}
        assert [row["queue_name"] for row in view] == [None] * 5 + ["a_queue"]
        assert "payload" not in view[0]

    asyncio.run(scenario())


# --- resetLockedAt.test.ts -----------------------------------------------------------------------

#: kongtask's expiry for this test: its sweep runs about every half expiry.
_TEST_EXPIRY = timedelta(seconds=5)


def test_resetLockedAt__main_will_execute_jobs_as_they_come_up_and_exits_cleanly(
    modern_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        for id_ in ("unlocked", "locked_recently", "locked_ages_ago"):
            _sql(modern_url, "select graphile_worker.add_job('job1', json_build_object('id', %s::text), 'serial')",
                 (id_,))
        _sql(modern_url, """
            update graphile_worker._private_jobs as jobs
            set locked_by = 'some_pool_id',
              locked_at = now() - case payload->>'id' when 'locked_recently' then interval '0'
                                  else %s + interval '1 minute' end
            where task_id = (select id from graphile_worker._private_tasks where identifier = 'job1')
              and payload->>'id' like 'locked_%%'""", (_TEST_EXPIRY,))
        before = _db_now(modern_url)

        def by_id() -> dict[str, dict[str, Any]]:
            return {job["payload"]["id"]: job for job in _get_jobs(modern_url)}

        with caplog.at_level(logging.WARNING, logger="kongtask.pool"):
            runner = await kongtask.run(task_list={"job2": _recorder([])}, connection_string=modern_url,
                                        concurrency=3, job_expiry=_TEST_EXPIRY, heartbeat_interval=1.0)
            try:
                await wait_until_async(lambda: by_id()["locked_ages_ago"]["locked_at"] is None,
                                       timeout=_TEST_EXPIRY.total_seconds() * 2, what="the expired lock to go")
            finally:
                await runner.stop()
        jobs = by_id()
        assert len(jobs) == 3
        assert (jobs["unlocked"]["locked_at"], jobs["unlocked"]["locked_by"]) == (None, None)
        assert jobs["locked_recently"]["locked_at"] is not None
        assert jobs["locked_recently"]["locked_by"] == "some_pool_id"
        assert (jobs["locked_ages_ago"]["locked_at"], jobs["locked_ages_ago"]["locked_by"]) == (None, None)
        assert jobs["locked_ages_ago"]["run_at"] >= before, "a freed job is due from now, not in the past"
        assert "unlocked 1 job(s) and 0 queue(s) locked for more than 5s" in caplog.text

    asyncio.run(scenario())


# --- workerUtils.addJob.test.ts ------------------------------------------------------------------


def test_workerUtils_addJob__runs_a_job_added_through_the_worker_utils(modern_url: str) -> None:
    async def scenario() -> None:
        job = await kongtask.add_job("job3", {"a": 1}, connection_string=modern_url)
        assert (job.task_identifier, job.payload, job.queue_name, job.attempts, job.max_attempts) == (
            "job3", {"a": 1}, None, 0, 25)
        assert (job.key, job.revision, job.flags) == (None, 0, None)
        [row] = _get_jobs(modern_url)
        assert (row["id"], row["task_identifier"], row["payload"]) == (job.id, "job3", {"a": 1})
        calls: list[Any] = []
        await kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url)
        assert calls == [{"a": 1}]
        assert _job_count(modern_url) == 0

    asyncio.run(scenario())


def test_workerUtils_addJob__runs_a_job_added_through_the_addJob_shortcut_function(modern_url: str) -> None:
    job = kongtask.add_job_sync("job3", {"a": 1}, connection_string=modern_url)
    assert (job.task_identifier, job.payload, job.revision) == ("job3", {"a": 1}, 0)
    assert [row["id"] for row in _get_jobs(modern_url)] == [job.id]
    calls: list[Any] = []
    asyncio.run(kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url))
    assert calls == [{"a": 1}]


# --- workerUtils.addJobs.test.ts -----------------------------------------------------------------


def test_workerUtils_addJobs__runs_a_job_added_through_the_worker_utils(modern_url: str) -> None:
    async def scenario() -> None:
        assert await kongtask.add_jobs([JobSpec("job3", {"a": 1})], connection_string=modern_url) == 1
        assert [(row["task_identifier"], row["payload"]) for row in _get_jobs(modern_url)] == [("job3", {"a": 1})]
        calls: list[Any] = []
        await kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url)
        assert calls == [{"a": 1}]

    asyncio.run(scenario())


def test_workerUtils_addJobs__runs_a_job_added_through_the_addJob_shortcut_function(modern_url: str) -> None:
    assert kongtask.add_jobs_sync([{"identifier": "job3", "payload": {"a": 1}}], connection_string=modern_url) == 1
    assert len(_get_jobs(modern_url)) == 1
    calls: list[Any] = []
    asyncio.run(kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url))
    assert calls == [{"a": 1}]


def test_workerUtils_addJobs__adding_lots_of_jobs_works(modern_url: str) -> None:
    specs = [JobSpec("job3", {"a": a}) for a in range(1, 7)]
    assert asyncio.run(kongtask.add_jobs(specs, connection_string=modern_url)) == 6
    jobs = _get_jobs(modern_url)
    assert len(jobs) == 6
    assert sorted(job["payload"]["a"] for job in jobs) == [1, 2, 3, 4, 5, 6]


# --- no upstream test: the 0.18 contract's facts (shared/spec/graphile-worker-0.18.md, 4 and 5) ----


def test_sql_add_job_defaults_and_its_private_row(modern_url: str) -> None:
    with psycopg.connect(modern_url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("select * from graphile_worker.add_job('t1')").fetchone()
        now = conn.execute("select now()").fetchone()
        queued = conn.execute("select * from graphile_worker.add_job('t1', '{\"x\": 1}', 'q1', "
                              "now() + interval '1 hour', 3, priority := 5)").fetchone()
    assert row is not None and now is not None and queued is not None
    assert (row["payload"], row["job_queue_id"], row["max_attempts"], row["priority"], row["attempts"]) == (
        {}, None, 25, 0, 0)
    assert (row["key"], row["revision"], row["flags"], row["locked_at"], row["last_error"]) == (
        None, 0, None, None, None)
    assert row["run_at"] <= now["now"] and row["is_available"] is True
    assert (queued["payload"], queued["max_attempts"], queued["priority"]) == ({"x": 1}, 3, 5)
    assert queued["run_at"] > now["now"] + timedelta(minutes=59)
    assert query_rows(modern_url, "select id, identifier from graphile_worker._private_tasks") == [
        (row["task_id"], "t1")]
    assert query_rows(modern_url, "select id, queue_name from graphile_worker._private_job_queues") == [
        (queued["job_queue_id"], "q1")]


@pytest.mark.parametrize(
    ("call", "constraint"),
    [
        ("add_job(repeat('x', 129))", "tasks_identifier_check"),
        ("add_job('t', queue_name := repeat('q', 129))", "job_queues_queue_name_check"),
        ("add_job('t', max_attempts := 0)", "jobs_max_attempts_check"),
    ],
    ids=["identifier_over_128", "queue_name_over_128", "max_attempts_below_1"],
)
def test_sql_add_job_refuses_what_the_0_18_tables_forbid(modern_url: str, call: str, constraint: str) -> None:
    # 0.18's tables check these themselves (the GWB* codes of earlier add_job bodies are gone).
    with psycopg.connect(modern_url, autocommit=True) as conn, pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(f"select graphile_worker.{call}")
    assert refused.value.diag.constraint_name == constraint
    assert _job_count(modern_url) == 0


def test_sql_add_jobs_adds_many_in_one_call(modern_url: str) -> None:
    rows = _dict_rows(modern_url, """
        select * from graphile_worker.add_jobs(array[
          row('a', '{"n": 1}', null, null, null, null, null, null)::graphile_worker.job_spec,
          row('b', null, 'q', null, 2, null, null, null)::graphile_worker.job_spec,
          row('a', '{"n": 3}', 'q', null, null, null, null, null)::graphile_worker.job_spec])""")
    # One row per spec, in no particular order (as upstream's add_jobs returns them).
    assert sorted((r["payload"].get("n", 0), r["max_attempts"], r["job_queue_id"] is None) for r in rows) == [
        (0, 2, False), (1, 25, True), (3, 25, False)]
    jobs = sorted(_get_jobs(modern_url), key=lambda j: j["payload"].get("n", 0))
    assert [(j["task_identifier"], j["queue_name"]) for j in jobs] == [("b", "q"), ("a", None), ("a", "q")]
    assert sorted(r[0] for r in query_rows(modern_url, "select identifier from graphile_worker._private_tasks")) == [
        "a", "b"]


def test_add_job_and_add_jobs_announce_new_jobs_on_jobs_insert_with_their_count(modern_url: str) -> None:
    with psycopg.connect(modern_url, autocommit=True) as listener:
        listener.execute('listen "jobs:insert"')
        _sql(modern_url, "select graphile_worker.add_job('t')")
        asyncio.run(kongtask.add_job("t", connection_string=modern_url))
        asyncio.run(kongtask.add_jobs([JobSpec("t")] * 3, connection_string=modern_url))
        notices = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=3)]
    assert [n["count"] for n in notices] == [1, 1, 3]
    assert all(set(n) == {"r", "count"} and isinstance(n["r"], float) for n in notices)


def test_a_running_worker_wakes_on_jobs_insert_rather_than_at_its_next_poll(modern_url: str) -> None:
    async def scenario() -> None:
        calls: list[Any] = []
        runner = await kongtask.run(task_list={"t": _recorder(calls)}, connection_string=modern_url,
                                    poll_interval=60.0)
        try:
            await _listening(modern_url)
            await kongtask.add_job("t", {"n": 1}, connection_string=modern_url)
            # Far sooner than the 60 s poll: only the notification can have woken it.
            await wait_until_async(lambda: calls == [{"n": 1}], timeout=10, what="the job to run")
        finally:
            await runner.stop()

    asyncio.run(scenario())


def test_a_breaking_migration_by_another_process_stops_a_running_worker(modern_url: str) -> None:
    async def scenario() -> None:
        calls: list[Any] = []
        runner = await kongtask.run(task_list={"t": _recorder(calls)}, connection_string=modern_url,
                                    poll_interval=60.0)
        finished = asyncio.ensure_future(runner.wait())
        try:
            await _listening(modern_url)
            _sql(modern_url, "select pg_notify('worker:migrate', %s)",
                 (json.dumps({"migrationNumber": 21, "breaking": False}),))
            # A job added after it still runs: a migration that is not breaking leaves the pool running.
            _sql(modern_url, "select graphile_worker.add_job('t')")
            await wait_until_async(lambda: calls == [{}], what="the pool to keep running jobs")
            assert not finished.done()
            _sql(modern_url, "select pg_notify('worker:migrate', %s)",
                 (json.dumps({"migrationNumber": 22, "breaking": True}),))
            with pytest.raises(SchemaChanged, match="breaking migration 22"):
                await asyncio.wait_for(finished, 10)
        finally:
            if not finished.done():
                await runner.stop()

    asyncio.run(scenario())


def test_a_worker_registers_its_tasks_in_private_tasks_without_using_up_ids(modern_url: str) -> None:
    tasks: dict[str, Any] = {"a": _recorder([]), "b": _recorder([])}
    asyncio.run(kongtask.run_once(task_list=tasks, connection_string=modern_url))
    assert query_rows(modern_url, "select id, identifier from graphile_worker._private_tasks order by id") == [
        (1, "a"), (2, "b")]
    # Starting again registers only what is new: ids are not used up on every start (as 0.18.0's
    # worker and add_jobs insert only missing identifiers).
    for _ in range(2):
        asyncio.run(kongtask.run_once(task_list=tasks, connection_string=modern_url))
    asyncio.run(kongtask.run_once(task_list={**tasks, "c": _recorder([])}, connection_string=modern_url))
    assert query_rows(modern_url, "select id, identifier from graphile_worker._private_tasks order by id") == [
        (1, "a"), (2, "b"), (3, "c")]


def test_jobs_are_fetched_by_priority_then_run_at(modern_url: str) -> None:
    _sql(modern_url, """
        select graphile_worker.add_job('t', json_build_object('n', n), run_at := now() - make_interval(secs => s),
          priority := p)
        from (values (1, 5, 1), (2, 0, 1), (3, 0, 3), (4, -1, 0), (5, 5, 9)) as v(n, p, s)""")
    calls: list[Any] = []
    asyncio.run(kongtask.run_once(task_list={"t": _recorder(calls)}, connection_string=modern_url))
    assert [c["n"] for c in calls] == [4, 3, 2, 5, 1]


def test_a_job_is_tried_max_attempts_times_then_stays_failed(modern_url: str) -> None:
    async def scenario() -> None:
        await kongtask.add_job("t", {}, max_attempts=2, connection_string=modern_url)
        task, calls = _failing("nope")
        for _ in range(3):
            await kongtask.run_once(task_list={"t": task}, connection_string=modern_url)
            _sql(modern_url, "update graphile_worker._private_jobs set run_at = now()")
        assert len(calls) == 2
        [job] = _get_jobs(modern_url)
        assert (job["attempts"], job["max_attempts"], job["last_error"], job["is_available"]) == (2, 2, "nope", False)

    asyncio.run(scenario())


def test_the_backoff_stops_growing_after_ten_attempts(modern_url: str) -> None:
    _sql(modern_url, "select graphile_worker.add_job('t')")
    _sql(modern_url, "update graphile_worker._private_jobs set attempts = 14")
    task, _ = _failing()
    start = _db_now(modern_url)
    asyncio.run(kongtask.run_once(task_list={"t": task}, connection_string=modern_url))
    [job] = _get_jobs(modern_url)
    assert job["attempts"] == 15
    delay = timedelta(seconds=22026.465794806718)  # exp(10)
    assert start + delay - timedelta(milliseconds=1) <= job["run_at"] <= _db_now(modern_url) + delay


def test_a_named_queue_stays_serial_inside_one_pools_batches(modern_url: str) -> None:
    # Upstream's issue #621: one batch held several jobs of one queue and ran them at once.
    async def scenario() -> None:
        _sql(modern_url, """
            select graphile_worker.add_job('t', json_build_object('i', s), 'serial') from generate_series(1, 6) s;
            select graphile_worker.add_job('t', json_build_object('i', 100 + s)) from generate_series(1, 4) s""")
        in_queue: list[int] = []
        running = most = 0

        async def t(payload: Any, helpers: Any) -> None:
            nonlocal running, most
            if payload["i"] < 100:
                running += 1
                most = max(most, running)
                in_queue.append(payload["i"])
                await asyncio.sleep(0.01)  # long enough for another worker to start a sibling
                running -= 1

        await kongtask.run_once(task_list={"t": t}, connection_string=modern_url, concurrency=4)
        assert most == 1 and in_queue == [1, 2, 3, 4, 5, 6]
        assert _job_count(modern_url) == 0

    asyncio.run(scenario())
