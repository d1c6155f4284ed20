"""Batched fetch, batched release and the local buffer: the same results as one job at a time.

The SQL tests compare kongtask's batched statements with the v0.1.0 functions they stand for, on
the same rows inside one transaction (so ``now()`` is the same for both): ``get_jobs`` against
``get_job`` called N times, ``release_jobs`` against ``complete_job``/``fail_job`` one by one. The
worker tests force jobs into the local buffer and check that no job is lost, run twice, or run
beside another of its named queue, whatever stops the worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask import _checkouts
from kongtask._schema import schema_named
from tests.support import add_job_to, query_rows, wait_until, wait_until_async

QUERIES = schema_named("graphile_worker")
WORKER = "worker-batch-test-0001"
OTHER = "worker-someone-else-01"
EXPIRY = "120 seconds"


def _dump(conn: psycopg.Connection[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    jobs = conn.execute(
        "select id, queue_name, task_identifier, priority, run_at, attempts, max_attempts, last_error, updated_at"
        " from graphile_worker.jobs order by id"
    ).fetchall()
    queues = conn.execute(
        "select queue_name, job_count, locked_at, locked_by from graphile_worker.job_queues order by queue_name"
    ).fetchall()
    return jobs, queues


def _varied_jobs(conn: psycopg.Connection[Any]) -> None:
    """Jobs get_job must tell apart: priorities, run_at, named queues free, held and abandoned,
    a future job, a spent one, and one for a task the worker lacks."""
    add = "select graphile_worker.add_job(%s, '{}', queue_name => %s, run_at => now() - %s::interval)"
    for n in range(8):
        conn.execute(add, ("t", f"anon-{n}", f"{n} minutes"))
    for n in range(3):
        conn.execute(add, ("t", "named-free", f"{10 - n} minutes"))
    for _ in range(2):
        conn.execute(add, ("t", "named-held", "1 hour"))
    conn.execute(add, ("t", "named-abandoned", "1 hour"))
    conn.execute(add, ("t", "future", "-1 hour"))
    conn.execute(add, ("t", "spent", "1 hour"))
    conn.execute(add, ("other-task", "unknown", "2 hours"))
    conn.execute("update graphile_worker.jobs set priority = -5 where queue_name in ('anon-5', 'named-free')")
    conn.execute("update graphile_worker.jobs set priority = 10 where queue_name = 'anon-1'")
    conn.execute("update graphile_worker.jobs set attempts = max_attempts where queue_name = 'spent'")
    conn.execute("update graphile_worker.job_queues set locked_by = %s, locked_at = now() - interval '10 seconds'"
                 " where queue_name = 'named-held'", (OTHER,))
    conn.execute("update graphile_worker.job_queues set locked_by = %s, locked_at = now() - interval '1 hour'"
                 " where queue_name = 'named-abandoned'", (OTHER,))


@pytest.mark.parametrize("limit", [1, 4, 50])
def test_get_jobs_checks_out_what_get_job_called_as_often_would(migrated_url: str, limit: int) -> None:
    """The batch is what the same number of get_job calls check out, in their order, leaving the
    same rows. It may be shorter than asked: the scan reads (and locks) at most ``limit`` rows, as
    many get_job calls would, and a queue's second due job among them is not taken."""
    with psycopg.connect(migrated_url) as conn:
        _varied_jobs(conn)
        conn.execute("savepoint before")
        params = {"worker_id": WORKER, "task_names": ["t"], "job_expiry": EXPIRY, "limit": limit}
        rows = conn.execute(QUERIES.get_jobs, params).fetchall()
        batched = [row[0] for row in sorted(rows, key=lambda row: (row[4], row[5], row[0]))]
        after_batch = _dump(conn)
        conn.execute("rollback to savepoint before")
        one_by_one = []
        for _ in range(len(batched)):
            row = conn.execute("select id from graphile_worker.get_job(%s, %s, %s::interval)",
                               (WORKER, ["t"], EXPIRY)).fetchone()
            assert row is not None
            one_by_one.append(row[0])
        assert batched == one_by_one
        assert after_batch == _dump(conn)
        conn.rollback()
    # 8 anonymous queues, the free named queue's first job, the abandoned queue's: 10 in all; the
    # first four rows by priority are three of one named queue and one other.
    assert len(batched) == {1: 1, 4: 2, 50: 10}[limit]


def _checked_out(conn: psycopg.Connection[Any], count: int) -> list[tuple[Any, ...]]:
    for n in range(count):
        conn.execute("select graphile_worker.add_job('t', queue_name => %s)", ("shared" if n < 3 else f"a{n}",))
    params = {"worker_id": WORKER, "task_names": ["t"], "job_expiry": EXPIRY, "limit": count}
    return conn.execute(QUERIES.get_jobs, params).fetchall()


def _release_params(completed: list[tuple[Any, ...]], failed: list[tuple[Any, ...]]) -> dict[str, Any]:
    return {
        "completed_lock_ids": [WORKER] * len(completed), "completed_ids": [row[0] for row in completed],
        "failed_lock_ids": [WORKER] * len(failed), "failed_ids": [row[0] for row in failed],
        "failed_updated_at": [row[10] for row in failed], "failed_messages": [f"boom {row[0]}" for row in failed],
    }


def test_release_jobs_lands_as_complete_job_and_fail_job_one_by_one_and_only_once(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        # Failed jobs get attempts 1 and 3, so the backoff formula shows.
        fetched = _checked_out(conn, 8)
        assert len(fetched) == 6  # three named queues hand out one job each
        conn.execute("update graphile_worker.jobs set attempts = 3 where id = %s", (fetched[1][0],))
        fetched = [conn.execute("select * from graphile_worker.jobs where id = %s", (row[0],)).fetchone()
                   for row in fetched]
        completed, failed = fetched[::2], fetched[1::2]
        conn.execute("savepoint before")
        for row in completed:
            conn.execute("select graphile_worker.complete_job(%s, %s)", (WORKER, row[0]))
        for row in failed:
            conn.execute("select graphile_worker.fail_job(%s, %s, %s)", (WORKER, row[0], f"boom {row[0]}"))
        expected = _dump(conn)
        conn.execute("rollback to savepoint before")
        counts = conn.execute(QUERIES.release_jobs, _release_params(completed, failed)).fetchone()
        assert counts == (len(completed), len(failed))
        assert _dump(conn) == expected
        # Its reply lost, the same release is sent again: nothing changes, no backoff doubles.
        assert conn.execute(QUERIES.release_jobs, _release_params(completed, failed)).fetchone() == (0, 0)
        assert _dump(conn) == expected
        conn.rollback()


def test_return_jobs_gives_back_the_attempt_and_the_queue_once(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for n in range(4):
            conn.execute("select graphile_worker.add_job('t', queue_name => %s)", (f"q{n}",))
        before = _dump(conn)
        params = {"worker_id": WORKER, "task_names": ["t"], "job_expiry": EXPIRY, "limit": 4}
        fetched = conn.execute(QUERIES.get_jobs, params).fetchall()
        back = {"worker_id": WORKER, "job_ids": [r[0] for r in fetched], "updated_at": [r[10] for r in fetched],
                "channel": "jobs:insert"}
        conn.execute('listen "jobs:insert"')
        assert conn.execute(QUERIES.return_jobs, back).fetchone() == (4, 1)
        assert [n.channel for n in conn.notifies(timeout=1, stop_after=1)] == ["jobs:insert"]
        assert conn.execute(QUERIES.return_jobs, back).fetchone() == (0, 0)
        jobs, queues = _dump(conn)
        assert [row[:8] for row in jobs] == [row[:8] for row in before[0]]
        assert queues == before[1]


# --- the local buffer, in a running worker -------------------------------------------------------


@pytest.fixture
def buffer_of(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Makes the buffer aim at ``n`` jobs from the second fetch on (it refills when half empty)."""

    def force(n: int, from_the_first_fetch: bool = False) -> None:
        monkeypatch.setattr(_checkouts.Checkouts, "_learn", lambda self, fetch_s: setattr(self, "_target", n))
        if from_the_first_fetch:
            init = _checkouts.Checkouts.__init__

            def with_target(self: _checkouts.Checkouts, *args: Any, **kwargs: Any) -> None:
                init(self, *args, **kwargs)
                self._target = n

            monkeypatch.setattr(_checkouts.Checkouts, "__init__", with_target)

    return force


def _locked(url: str) -> list[tuple[Any, ...]]:
    return query_rows(url, "select queue_name, locked_by, locked_at from graphile_worker.job_queues"
                           " where locked_by is not null order by queue_name")


def test_buffered_jobs_are_given_back_at_once_on_a_graceful_stop(migrated_url: str, buffer_of: Any) -> None:
    buffer_of(4)
    gate = asyncio.Event()
    ran: list[int] = []

    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(payload["n"])
        await gate.wait()

    async def scenario() -> None:
        for n in range(5):
            await add_job_to(migrated_url, "t", {"n": n}, queue_name=f"q{n}")
        runner = await kongtask.run(task_list={"t": task}, connection_string=migrated_url, batch_size=10)
        try:
            await wait_until_async(lambda: len(_locked(migrated_url)) == 5 and ran, what="five jobs checked out")
            assert ran == [0] and {row[1] for row in _locked(migrated_url)} == set(runner.worker_ids)
            stopping = asyncio.ensure_future(runner.stop())
            # The four never started go back at once, while the running one still runs.
            await wait_until_async(
                lambda: query_rows(migrated_url, "select count(*) from graphile_worker.jobs where attempts = 0")
                == [(4,)], what="the buffered jobs to be given back",
            )
            assert [row[0] for row in _locked(migrated_url)] == ["q0"]
            gate.set()
            await asyncio.wait_for(stopping, 10)
        finally:
            gate.set()
            await runner.stop()

    asyncio.run(scenario())
    assert ran == [0]
    assert query_rows(migrated_url, "select attempts, last_error from graphile_worker.jobs") == [(0, None)] * 4
    assert _locked(migrated_url) == []
    asyncio.run(kongtask.run_once(task_list={"t": task}, connection_string=migrated_url))
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]


def test_buffered_jobs_keep_their_queues_locked_past_the_expiry(
    migrated_url: str, buffer_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer_of(3)
    monkeypatch.setattr(_checkouts, "BUFFER_TTL_S", 60.0)  # held in the buffer for longer than the expiry
    gate = asyncio.Event()

    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        await gate.wait()

    async def scenario() -> None:
        for n in range(4):
            await add_job_to(migrated_url, "t", queue_name=f"q{n}")
        runner = await kongtask.run(task_list={"t": task}, connection_string=migrated_url, batch_size=10,
                                    heartbeat_interval=0.2, job_expiry=timedelta(seconds=1))
        try:
            await wait_until_async(lambda: len(_locked(migrated_url)) == 4, what="four jobs checked out")
            first = max(row[2] for row in _locked(migrated_url))
            await wait_until_async(
                lambda: min(row[2] for row in _locked(migrated_url)) > first + timedelta(seconds=1),
                what="every held queue's lock to be refreshed past the expiry",
            )
            with psycopg.connect(migrated_url, autocommit=True) as conn:
                stolen = conn.execute("select id from graphile_worker.get_job('worker-thief-00000', null, '1 second')")
                assert stolen.fetchone() == (None,)
        finally:
            gate.set()
            await runner.stop()

    asyncio.run(scenario())
    # The running job completed; the stop gave the three buffered ones back, untouched.
    assert query_rows(migrated_url, "select attempts from graphile_worker.jobs") == [(0,)] * 3
    assert _locked(migrated_url) == []


def _run_until_killed(url: str, buffer: int) -> None:
    # In a forked child: a worker with a buffer of ``buffer``, its one running job stuck.
    _checkouts.Checkouts._learn = lambda self, fetch_s: setattr(self, "_target", buffer)  # type: ignore[method-assign]

    async def stuck(payload: Any, helpers: kongtask.Helpers) -> None:
        await helpers.query("insert into public.runs (n, pid) values (%s, %s)", [payload["n"], os.getpid()])
        await asyncio.sleep(3600)

    async def main() -> None:
        runner = await kongtask.run(task_list={"t": stuck}, connection_string=url, batch_size=10)
        await runner.wait()

    asyncio.run(main())


def test_a_killed_worker_loses_no_buffered_job_and_runs_none_twice(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("create table public.runs (n int, pid int)")
    for n in range(5):
        asyncio.run(add_job_to(migrated_url, "t", {"n": n}, queue_name=f"q{n}"))
    child = multiprocessing.get_context("fork").Process(target=_run_until_killed, args=(migrated_url, 4))
    child.start()
    try:
        wait_until(lambda: len(_locked(migrated_url)) == 5
                   and query_rows(migrated_url, "select count(*) from public.runs") == [(1,)],
                   timeout=20, what="one job running and four buffered")
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
    assert child.exitcode == -signal.SIGKILL
    # Nothing gave them back: their locks expire like any dead worker's, then another worker runs them.
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("update graphile_worker.job_queues set locked_at = locked_at - interval '1 hour'")
    recorded: list[int] = []

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        recorded.append(payload["n"])

    asyncio.run(kongtask.run_once(task_list={"t": record}, connection_string=migrated_url, concurrency=2))
    [(started_in_child,)] = query_rows(migrated_url, "select n from public.runs")
    # The four buffered jobs never started in the child, so they run once; the one that was running
    # when the worker died runs again, as a job in flight does.
    assert sorted(recorded) == list(range(5)) and started_in_child in recorded
    assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]


@pytest.mark.parametrize("schema", ["v0.1.0", "0.18"])
def test_a_named_queue_never_runs_two_jobs_at_once_with_full_buffers(
    request: pytest.FixtureRequest, buffer_of: Any, schema: str
) -> None:
    """Upstream's local queue can hand out a named queue's next job while one runs (graphile/worker
    #621). kongtask's buffer holds a queue's job only with the queue's lock, so it cannot, on either
    schema (on 0.18 the other jobs have no queue at all)."""
    migrated_url = request.getfixturevalue("migrated_url" if schema == "v0.1.0" else "modern_url")
    no_queue = "public.gen_random_uuid()::text" if schema == "v0.1.0" else "null"
    buffer_of(10)
    spans: dict[str | None, list[tuple[int, float, float]]] = {}

    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        started = time.monotonic()
        await asyncio.sleep(0.002 if payload["named"] else 0)
        spans.setdefault(helpers.job.queue_name, []).append((helpers.job.id, started, time.monotonic()))

    async def scenario() -> None:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            conn.execute("select graphile_worker.add_job('t', json_build_object('named', i % 2 = 0), queue_name =>"
                         f" coalesce(case when i % 2 = 0 then 'serial-' || (i % 3) end, {no_queue}))"
                         " from generate_series(1, 300) i")
        runners = [await kongtask.run(task_list={"t": task}, connection_string=migrated_url, concurrency=4,
                                      batch_size=10) for _ in range(2)]
        try:
            await wait_until_async(
                lambda: query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)],
                timeout=60, what="the jobs to drain",
            )
        finally:
            for runner in runners:
                await runner.stop()

    asyncio.run(scenario())
    named = {q: runs for q, runs in spans.items() if q is not None and q.startswith("serial-")}
    assert len(named) == 3 and sum(len(runs) for runs in named.values()) == 150
    for queue, runs in named.items():
        by_start = sorted(runs, key=lambda run: run[1])
        assert [run[0] for run in by_start] == sorted(run[0] for run in runs), f"{queue} ran out of order"
        overlaps = [(a, b) for a, b in itertools.pairwise(by_start) if b[1] < a[2]]
        assert not overlaps, f"{queue}: a job started before the one before it ended: {overlaps[:2]}"
    assert sum(len(runs) for runs in spans.values()) == 300


# --- plain def jobs handed to a busy worker's thread ahead of time --------------------------------


def test_a_def_job_queued_behind_a_slow_one_goes_to_a_worker_that_is_free(migrated_url: str, buffer_of: Any) -> None:
    buffer_of(1, from_the_first_fetch=True)
    slow_may_end = threading.Event()
    hold_may_end = asyncio.Event()
    events: list[str] = []

    async def hold(payload: Any, helpers: kongtask.Helpers) -> None:
        await hold_may_end.wait()

    def slow(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        slow_may_end.wait(30)
        events.append("slow ended")

    def quick(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        events.append("quick ran")

    async def scenario() -> None:
        for name in ("hold", "slow", "quick"):
            await add_job_to(migrated_url, name)
        runner = await kongtask.run(task_list={"hold": hold, "slow": slow, "quick": quick},
                                    connection_string=migrated_url, concurrency=2, batch_size=10)
        try:
            # Worker 1 runs hold, worker 2 runs slow with quick queued behind it in its thread.
            await wait_until_async(lambda: runner._checkouts._lent, what="quick to be queued behind slow")
            hold_may_end.set()
            await wait_until_async(lambda: events, what="quick to run on the worker that became free")
            assert events == ["quick ran"]
            slow_may_end.set()
            await wait_until_async(
                lambda: query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)],
                what="every job to complete",
            )
        finally:
            slow_may_end.set()
            hold_may_end.set()
            await runner.stop()

    asyncio.run(scenario())
    assert events == ["quick ran", "slow ended"]


def test_a_def_job_queued_behind_one_that_times_out_runs_once(migrated_url: str, buffer_of: Any) -> None:
    buffer_of(1, from_the_first_fetch=True)
    never = threading.Event()
    ran: list[str] = []

    def stuck(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        never.wait(30)

    def quick(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        ran.append(threading.current_thread().name)

    try:
        for name in ("stuck", "quick"):
            asyncio.run(add_job_to(migrated_url, name))
        asyncio.run(kongtask.run_once(task_list={"stuck": stuck, "quick": quick}, connection_string=migrated_url,
                                      task_timeout=0.5, batch_size=10))
    finally:
        never.set()
    assert len(ran) == 1
    assert query_rows(migrated_url, "select task_identifier, attempts, last_error from graphile_worker.jobs") == [
        ("stuck", 1, "Task timed out after 0.5s")
    ]


def test_def_jobs_queued_behind_a_running_one_are_given_back_on_a_stop(migrated_url: str, buffer_of: Any) -> None:
    buffer_of(2, from_the_first_fetch=True)
    slow_started = threading.Event()
    slow_may_end = threading.Event()
    ran: list[str] = []

    def slow(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        slow_started.set()
        slow_may_end.wait(30)
        ran.append("slow")

    def quick(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        ran.append("quick")

    async def scenario() -> None:
        for name in ("slow", "quick", "quick"):
            await add_job_to(migrated_url, name)
        runner = await kongtask.run(task_list={"slow": slow, "quick": quick}, connection_string=migrated_url,
                                    batch_size=10)
        try:
            await wait_until_async(lambda: slow_started.is_set() and runner._checkouts._lent,
                                   what="a quick job queued behind slow")
            stopping = asyncio.ensure_future(runner.stop())
            await wait_until_async(
                lambda: query_rows(migrated_url, "select count(*) from graphile_worker.jobs where attempts = 0")
                == [(2,)], what="both quick jobs to be given back",
            )
            slow_may_end.set()
            await asyncio.wait_for(stopping, 10)
        finally:
            slow_may_end.set()
            await runner.stop()

    asyncio.run(scenario())
    assert ran == ["slow"]
    assert query_rows(migrated_url, "select task_identifier, attempts from graphile_worker.jobs") == [("quick", 0)] * 2


@pytest.mark.parametrize("kind", ["async", "def"])
def test_buffered_jobs_that_wait_too_long_go_back_for_other_workers(
    migrated_url: str, buffer_of: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Quick jobs filled the buffer, then a slow one holds the only worker: what waits behind it
    past the buffer's time to live, in the buffer or queued in the worker's thread, is given back,
    for any worker to take."""
    buffer_of(3, from_the_first_fetch=True)
    # Long enough to see the jobs buffered first on a loaded machine, short enough to wait for.
    monkeypatch.setattr(_checkouts, "BUFFER_TTL_S", 1.5)
    gate = threading.Event()

    async def async_slow(payload: Any, helpers: kongtask.Helpers) -> None:
        while not gate.is_set():
            await asyncio.sleep(0.01)

    def def_slow(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        gate.wait(30)

    slow = async_slow if kind == "async" else def_slow

    async def scenario() -> None:
        await add_job_to(migrated_url, "slow")
        for _ in range(3):
            await add_job_to(migrated_url, "quick")
        runner = await kongtask.run(task_list={"slow": slow, "quick": slow}, connection_string=migrated_url,
                                    batch_size=10)
        try:
            await wait_until_async(lambda: len(_locked(migrated_url)) == 4, what="slow running, three buffered")
            if kind == "def":
                # The worker queues them in its thread once its slow job has started.
                await wait_until_async(lambda: len(runner._checkouts._lent) == 3, timeout=1.0,
                                       what="the quick jobs to be queued in the worker's thread")
            await wait_until_async(lambda: len(_locked(migrated_url)) == 1, what="the buffered jobs to go back")
            assert query_rows(migrated_url, "select task_identifier, attempts from graphile_worker.jobs"
                                            " where task_identifier = 'quick'") == [("quick", 0)] * 3
        finally:
            gate.set()
            await runner.stop()

    asyncio.run(scenario())


def test_def_jobs_taken_from_a_worker_that_then_times_out_are_not_failed_by_it(
    migrated_url: str, buffer_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker 2 takes over the quick jobs queued behind worker 1's stuck one; when the stuck one
    times out, worker 1 must not wait for (and fail) jobs it no longer has."""
    buffer_of(6, from_the_first_fetch=True)
    never = threading.Event()
    hold_may_end = threading.Event()
    quick_runs: list[int] = []

    def hold(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        hold_may_end.wait(30)

    def stuck(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        never.wait(30)

    def quick(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        quick_runs.append(helpers.job.id)

    async def scenario() -> None:
        # Worker 1 gets stuck and queues the quick jobs behind it; worker 2 gets hold.
        for name in ("stuck", "hold", "quick", "quick", "quick", "quick"):
            await add_job_to(migrated_url, name)
        runner = await kongtask.run(task_list={"hold": hold, "stuck": stuck, "quick": quick},
                                    connection_string=migrated_url, concurrency=2, batch_size=10, task_timeout=1.5)
        try:
            await wait_until_async(lambda: len(runner._checkouts._lent) == 4, what="quick jobs queued behind stuck")
            hold_may_end.set()  # worker 2 is free: it takes the quick jobs back and runs them
            await wait_until_async(lambda: len(quick_runs) == 4, what="the quick jobs to run on worker 2")
            await wait_until_async(
                lambda: query_rows(migrated_url, "select task_identifier, last_error from graphile_worker.jobs")
                == [("stuck", "Task timed out after 1.5s")],
                what="stuck to time out and every other job to complete",
            )
        finally:
            never.set()
            hold_may_end.set()
            await runner.stop()

    caplog.set_level(logging.INFO, logger="kongtask")
    asyncio.run(scenario())
    assert sorted(set(quick_runs)) == sorted(quick_runs)
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Failed task")]
    assert len(failed) == 1 and "(stuck)" in failed[0], failed
