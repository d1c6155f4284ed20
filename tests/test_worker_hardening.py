"""What a task, a row or the database may do to a worker, and how the worker keeps going.

Each test names one way a worker used to freeze, crash or be fooled, and shows that now only the
job concerned is affected, and that no job is lost, run twice or left locked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask import _connections, _outages
from kongtask._schema import jobs
from kongtask import _checkouts, _worker
from kongtask._embedded.server import EmbeddedServer
from kongtask._schema.jobs import DISTANT_PAST
from tests.support import add_job_to, query_rows, wait_until_async


def _locked_queues(url: str) -> int:
    return int(query_rows(url, "select count(*) from graphile_worker.job_queues where locked_by is not null")[0][0])


# --- a task's error message ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_huge_error_message_is_cut_to_the_limit_in_last_error_and_in_the_log(
    migrated_url: str, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    huge = "start-" + "x" * 5_000_000 + "-end"

    def sync_task(payload: Any, helpers: Any) -> None:
        raise ValueError(huge)

    async def async_task(payload: Any, helpers: Any) -> None:
        raise ValueError(huge)

    caplog.set_level(logging.ERROR, logger="kongtask.worker")
    asyncio.run(add_job_to(migrated_url, "loud"))
    asyncio.run(kongtask.run_once(task_list={"loud": sync_task if kind == "sync" else async_task},
                                  connection_string=migrated_url))
    [(last_error,)] = query_rows(migrated_url, "select last_error from graphile_worker.jobs")
    assert len(last_error) <= _worker.ERROR_MESSAGE_LIMIT
    # Both ends survive: the start says what happened, the end often says where.
    assert last_error.startswith("start-x") and last_error.endswith("x-end")
    assert "characters cut" in last_error
    [record] = [r for r in caplog.records if r.getMessage().startswith("Failed task ")]
    assert len(record.getMessage()) <= _worker.ERROR_MESSAGE_LIMIT + _worker.STACK_LIMIT + 500
    assert _locked_queues(migrated_url) == 0


# --- values PostgreSQL holds that Python cannot ----------------------------------------------------


@pytest.mark.parametrize("run_at", ["-infinity", "0044-03-15 12:00:00+00 BC", "0001-01-01 00:00:00+01"])
@pytest.mark.parametrize("own_pool", [False, True], ids=["kongtask-pool", "callers-pool"])
def test_a_due_job_whose_run_at_python_cannot_hold_runs_and_the_worker_goes_on(
    migrated_url: str, run_at: str, own_pool: bool
) -> None:
    seen: list[tuple[str, datetime]] = []

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        seen.append((helpers.job.task_identifier, helpers.job.run_at))

    async def fails(payload: Any, helpers: kongtask.Helpers) -> None:
        raise RuntimeError("no")

    query_rows(migrated_url, "select graphile_worker.add_job('record', run_at => %s::timestamptz)", (run_at,))
    query_rows(migrated_url, "select graphile_worker.add_job('fails', run_at => %s::timestamptz)", (run_at,))
    query_rows(migrated_url, "select graphile_worker.add_job('record')")

    async def scenario() -> None:
        tasks = {"record": record, "fails": fails}
        if own_pool:
            from psycopg_pool import AsyncConnectionPool

            async with AsyncConnectionPool(migrated_url, kwargs={"autocommit": True}, open=False) as pool:
                await kongtask.run_once(task_list=tasks, pool=pool)
        else:
            await kongtask.run_once(task_list=tasks, connection_string=migrated_url)

    asyncio.run(scenario())
    assert sorted(name for name, _ in seen) == ["record", "record"]
    assert DISTANT_PAST in [when for _, when in seen]
    # The failed one is rescheduled from now, like any other failure, and holds no lock.
    [(attempts, last_error, due_in)] = query_rows(
        migrated_url, "select attempts, last_error, extract(epoch from run_at - now()) from graphile_worker.jobs"
    )
    assert (attempts, last_error) == (1, "no") and 0 < float(due_in) <= math.e + 1
    assert _locked_queues(migrated_url) == 0


def test_a_future_run_at_python_cannot_hold_leaves_the_worker_running(migrated_url: str) -> None:
    ran: list[int] = []

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(payload["n"])

    query_rows(migrated_url, "select graphile_worker.add_job('record', run_at => 'infinity')")
    query_rows(migrated_url, "select graphile_worker.add_job('record', '{\"n\": 1}')")
    asyncio.run(kongtask.run_once(task_list={"record": record}, connection_string=migrated_url))
    assert ran == [1]
    assert query_rows(migrated_url, "select run_at::text from graphile_worker.jobs") == [("infinity",)]


# --- cancellation: the task's own, the worker's, and from outside ------------------------------------


def test_a_task_raising_cancelled_error_fails_only_its_job_on_every_python(migrated_url: str) -> None:
    ran: list[str] = []

    async def cancels(payload: Any, helpers: Any) -> None:
        raise asyncio.CancelledError()

    async def fine(payload: Any, helpers: Any) -> None:
        ran.append("fine")

    async def scenario() -> None:
        await add_job_to(migrated_url, "cancels")
        await add_job_to(migrated_url, "fine")
        await kongtask.run_once(task_list={"cancels": cancels, "fine": fine}, connection_string=migrated_url)

    asyncio.run(scenario())
    assert ran == ["fine"]
    assert query_rows(migrated_url, "select task_identifier, attempts, last_error from graphile_worker.jobs") == [
        ("cancels", 1, "CancelledError")
    ]
    assert _locked_queues(migrated_url) == 0


def test_timeouts_inside_a_task_are_the_tasks_own_business(migrated_url: str) -> None:
    ran: list[str] = []

    async def waits(payload: Any, helpers: Any) -> None:
        try:
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        except asyncio.TimeoutError:
            pass
        if sys.version_info >= (3, 11):
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(10)
            except TimeoutError:
                pass
        ran.append("waits")

    async def cancels(payload: Any, helpers: Any) -> None:
        raise asyncio.CancelledError()

    async def scenario() -> None:
        await add_job_to(migrated_url, "waits", queue_name="q")
        await add_job_to(migrated_url, "cancels", queue_name="q")
        await add_job_to(migrated_url, "waits", queue_name="q")
        await kongtask.run_once(task_list={"waits": waits, "cancels": cancels}, connection_string=migrated_url)

    asyncio.run(scenario())
    # The task's own timeouts cancelled the worker's asyncio task and took it back: the later
    # CancelledError is still the task's, and the pool went on to the third job.
    assert ran == ["waits", "waits"]
    assert query_rows(migrated_url, "select task_identifier, last_error from graphile_worker.jobs") == [
        ("cancels", "CancelledError")
    ]


def test_a_worker_cancelled_from_outside_fails_its_job_and_the_pool_reports_it(migrated_url: str) -> None:
    started: list[int] = []

    async def slow(payload: Any, helpers: Any) -> None:
        started.append(1)
        await asyncio.sleep(60)

    async def scenario() -> None:
        await add_job_to(migrated_url, "slow")
        runner = await kongtask.run(task_list={"slow": slow}, connection_string=migrated_url)
        await wait_until_async(lambda: started, what="the task to start")
        for task in runner._worker_tasks:  # nothing in kongtask does this; a bug or a caller might
            task.cancel()
        with pytest.raises(RuntimeError, match="cancelled from outside"):
            await runner.wait()

    asyncio.run(scenario())
    assert query_rows(migrated_url, "select attempts, last_error from graphile_worker.jobs") == [
        (1, "Worker cancelled before the task finished")
    ]
    assert _locked_queues(migrated_url) == 0


# --- a release or checkout whose reply is lost -------------------------------------------------------


def _lose_reply_once(monkeypatch: pytest.MonkeyPatch, marker: str) -> list[str]:
    """Makes the first statement containing ``marker`` commit, then kills its connection before the
    worker reads the reply: the worker cannot know whether it landed."""
    real = jobs.fetch_rows
    lost: list[str] = []

    async def fetch_rows(conn: psycopg.AsyncConnection[Any], query: str, params: Any, **kwargs: Any) -> Any:
        result = await real(conn, query, params, **kwargs)
        if marker in query and not lost:
            lost.append(query)
            await conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(jobs, "fetch_rows", fetch_rows)
    return lost


@pytest.mark.parametrize("first_outcome", ["fails", "succeeds"])
def test_a_release_whose_reply_is_lost_lands_once(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, first_outcome: str
) -> None:
    attempts_seen: list[int] = []

    async def first(payload: Any, helpers: kongtask.Helpers) -> None:
        if first_outcome == "fails":
            raise RuntimeError("first failed")

    async def second(payload: Any, helpers: kongtask.Helpers) -> None:
        attempts_seen.append(helpers.job.attempts)

    async def scenario() -> None:
        await add_job_to(migrated_url, "first", queue_name="qa")
        await add_job_to(migrated_url, "second", queue_name="qb")
        # batch_size 1: the first job is released alone, before the second is fetched.
        lost = _lose_reply_once(monkeypatch, "still_unreleased")
        await kongtask.run_once(task_list={"first": first, "second": second}, connection_string=migrated_url,
                                batch_size=1)
        assert lost, "the release statement never ran"

    asyncio.run(scenario())
    assert attempts_seen == [1]
    if first_outcome == "fails":
        [(attempts, last_error, due_in)] = query_rows(
            migrated_url, "select attempts, last_error, extract(epoch from run_at - now()) from graphile_worker.jobs"
        )
        # Failed once, so retried after e^1 s, not twice (which would be after e^1 + e^1 s).
        assert (attempts, last_error) == (1, "first failed") and float(due_in) <= math.e + 0.5
    else:
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]
    assert _locked_queues(migrated_url) == 0


def test_a_checkout_whose_reply_is_lost_is_given_back_not_left_locked(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts_seen: list[int] = []

    async def only(payload: Any, helpers: kongtask.Helpers) -> None:
        attempts_seen.append(helpers.job.attempts)

    async def scenario() -> None:
        await add_job_to(migrated_url, "only", queue_name="q")
        lost = _lose_reply_once(monkeypatch, "with scanned as materialized")
        await kongtask.run_once(task_list={"only": only}, connection_string=migrated_url)
        assert lost

    asyncio.run(scenario())
    assert attempts_seen == [1]
    assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]
    assert _locked_queues(migrated_url) == 0


# --- the database refusing, timing out, or the pool running dry --------------------------------------


@pytest.mark.parametrize(
    "reply, transient",
    [
        ('connection failed: FATAL:  the database system is starting up', True),
        ('connection failed: FATAL:  the database system is shutting down', True),
        ('connection failed: FATAL:  sorry, too many clients already', True),
        ('FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute', True),
        ('connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or directory', True),
        ('connection failed: Connection refused', True),
        ('connection failed: FATAL:  password authentication failed for user "u"', False),
        ('connection failed: FATAL:  database "nope" does not exist', False),
        ('connection failed: FATAL:  role "nobody" does not exist', False),
        ('failed to resolve host "nohost": [Errno -2] Name or service not known', False),
    ],
)
def test_refusals_that_end_by_themselves_are_waited_for(reply: str, transient: bool) -> None:
    assert _connections.refusal_is_transient(reply) is transient


def test_a_worker_started_while_every_connection_slot_is_taken_waits_for_one(
    private_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    private_server.settings.update(max_connections="6", superuser_reserved_connections="0")
    url = private_server.start()
    asyncio.run(kongtask.migrate(connection_string=url))
    asyncio.run(add_job_to(url, "job"))
    ran: list[int] = []

    async def job(payload: Any, helpers: Any) -> None:
        ran.append(1)

    caplog.set_level(logging.WARNING, logger="kongtask")
    hogs: list[psycopg.Connection[Any]] = []
    try:
        while True:
            try:
                hogs.append(psycopg.connect(url))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc)
                break

        async def scenario() -> None:
            start = asyncio.ensure_future(kongtask.run(task_list={"job": job}, connection_string=url))
            await wait_until_async(lambda: any("too many clients" in r.getMessage() for r in caplog.records),
                                   timeout=30, what="the worker to say it waits")
            assert not start.done()
            for hog in hogs:
                hog.close()
            runner = await asyncio.wait_for(start, 60)
            try:
                await wait_until_async(lambda: ran == [1], timeout=30, what="the job to run")
            finally:
                await runner.stop()

        asyncio.run(scenario())
    finally:
        for hog in hogs:
            hog.close()


def test_a_busy_pool_deadlocks_and_timeouts_are_not_called_outages(migrated_url: str) -> None:
    from psycopg_pool import PoolTimeout

    kind, line = _outages.describe_trouble(PoolTimeout("couldn't get a connection after 5.00 sec"), pool_size=3)
    assert kind == "pool" and "all 3 pooled connections" in line and "lost the connection" not in line
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("set statement_timeout = 10")
        with pytest.raises(psycopg.OperationalError) as cancelled:
            conn.execute("select pg_sleep(5)")
    kind, line = _outages.describe_trouble(cancelled.value)
    assert kind == "timeout" and "statement_timeout" in line
    assert _outages.describe_trouble(psycopg.errors.DeadlockDetected("deadlock detected"))[0] == "deadlock"
    assert _outages.describe_trouble(psycopg.OperationalError("server closed the connection unexpectedly"))[0] == "outage"


def test_tasks_holding_every_pooled_connection_are_named_in_the_log(
    migrated_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_checkouts, "CHECKOUT_TIMEOUT_S", 0.2)
    release = asyncio.Event()
    held: list[int] = []

    async def hog(payload: Any, helpers: kongtask.Helpers) -> None:
        # One worker's task takes every connection the pool has (concurrency 2, so 4).
        async with helpers.with_pg_client(), helpers.with_pg_client(), helpers.with_pg_client(), \
                helpers.with_pg_client():
            held.append(1)
            await release.wait()

    async def quick(payload: Any, helpers: kongtask.Helpers) -> None:
        pass

    caplog.set_level(logging.WARNING, logger="kongtask")

    async def scenario() -> None:
        await add_job_to(migrated_url, "hog")
        runner = await kongtask.run(task_list={"hog": hog, "quick": quick}, connection_string=migrated_url,
                                    concurrency=2)
        try:
            await wait_until_async(lambda: held, what="the hog to hold the pool")
            await add_job_to(migrated_url, "quick")
            await wait_until_async(lambda: any("pooled connections" in r.getMessage() for r in caplog.records),
                                   what="the busy pool to be reported")
            release.set()
            await wait_until_async(
                lambda: query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)],
                what="both jobs to complete",
            )
        finally:
            await runner.stop()

    asyncio.run(scenario())
    assert not [r for r in caplog.records if "lost the connection" in r.getMessage()]


def test_a_tasks_query_on_a_pooled_connection_that_died_gets_a_fresh_one(migrated_url: str) -> None:
    go = asyncio.Event()
    results: list[Any] = []

    async def queries(payload: Any, helpers: kongtask.Helpers) -> None:
        await go.wait()
        results.append((helpers.job.attempts, await helpers.query("select 42")))

    async def scenario() -> None:
        await add_job_to(migrated_url, "queries")
        runner = await kongtask.run(task_list={"queries": queries}, connection_string=migrated_url)
        try:
            await wait_until_async(lambda: query_rows(migrated_url, "select attempts from graphile_worker.jobs") == [(1,)],
                                   what="the job to start")
            # Every connection the worker's pool holds dies, as in a server restart.
            killed = query_rows(migrated_url, "select pg_terminate_backend(pid) from pg_stat_activity "
                                         "where datname = current_database() and pid <> pg_backend_pid() "
                                         "and backend_type = 'client backend'")
            assert killed
            go.set()
            await wait_until_async(
                lambda: query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)],
                what="the job to complete",
            )
        finally:
            await runner.stop()

    asyncio.run(scenario())
    assert results == [(1, [(42,)])]  # on its first attempt: the dead connection failed nothing


# --- jobs nobody can run, and what -v shows --------------------------------------------------------


def test_a_worker_says_which_due_jobs_wait_for_tasks_it_does_not_have(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def real(payload: Any, helpers: Any) -> None:
        pass

    caplog.set_level(logging.INFO, logger="kongtask")

    async def scenario() -> None:
        await add_job_to(migrated_url, "ghost")
        await add_job_to(migrated_url, "ghost")
        await add_job_to(migrated_url, "phantom", run_at=datetime.now(timezone.utc) + timedelta(hours=1))  # not due
        runner = await kongtask.run(task_list={"real": real}, connection_string=migrated_url)
        try:
            await wait_until_async(lambda: any("wait for tasks" in r.getMessage() for r in caplog.records),
                                   what="the report of jobs without a task")
        finally:
            await runner.stop()

    asyncio.run(scenario())
    [line] = [r.getMessage() for r in caplog.records if "wait for tasks" in r.getMessage()]
    assert line.startswith("2 due job(s) wait for tasks this worker does not have: ghost (2);")
    assert "phantom" not in line


def test_debug_logs_show_each_fetch_and_release(migrated_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async def job(payload: Any, helpers: Any) -> None:
        pass

    caplog.set_level(logging.DEBUG, logger="kongtask")
    added = asyncio.run(add_job_to(migrated_url, "job"))
    asyncio.run(kongtask.run_once(task_list={"job": job}, connection_string=migrated_url))
    messages = [r.getMessage() for r in caplog.records]
    assert f"fetched job {added.id} (job), attempt 1 of 25" in messages
    assert f"released job {added.id} (completed)" in messages


def test_a_job_notified_while_every_worker_is_fetching_is_not_left_to_the_next_poll(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The NOTIFY of a job added just after a worker's fetch took its snapshot arrives while that
    worker is busy: it must not be dropped, or the job waits a whole poll interval."""
    real = jobs.fetch_rows
    added: list[int] = []
    ran: list[int] = []

    def notifications() -> int:
        return sum(r.getMessage() == "new job notified" for r in caplog.records)

    async def fetch_rows(conn: psycopg.AsyncConnection[Any], query: str, params: Any, **kwargs: Any) -> Any:
        found = await real(conn, query, params, **kwargs)
        if not found and not added and "with scanned as materialized" in query:
            before = notifications()
            added.append((await add_job_to(migrated_url, "job")).id)
            await wait_until_async(lambda: notifications() > before, what="the NOTIFY to reach the fetching pool")
        return found

    async def job(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(helpers.job.id)

    caplog.set_level(logging.DEBUG, logger="kongtask.pool")

    async def scenario() -> None:
        runner = await kongtask.run(task_list={"job": job}, connection_string=migrated_url, poll_interval=600)
        try:
            # Only a pool that listens hears the NOTIFY at all: wait for its LISTEN first.
            await wait_until_async(
                lambda: query_rows(migrated_url, "select count(*) from pg_stat_activity where datname = "
                                                 "current_database() and query ilike 'listen %'") != [(0,)],
                what="the pool to listen",
            )
            monkeypatch.setattr(jobs, "fetch_rows", fetch_rows)
            await add_job_to(migrated_url, "other")  # wakes the idle worker into the patched fetch
            await wait_until_async(lambda: added and ran == added, timeout=20, what="the notified job to run")
        finally:
            await runner.stop()

    asyncio.run(scenario())
