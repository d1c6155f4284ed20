"""Python ports of upstream graphile-worker 0.18's tests of job keys, remove_job, forbidden flags,
batch jobs and the admin functions, on a database migrated to its schema (``modern_url``).

The companion of tests/test_conformance_0_18.py, which ports the schema and worker tests and left
these out; its helpers (upstream's helpers.ts: getJobs, getJobQueues, makeSelectionOfJobs, ...) are
imported from there. Each test's name carries its upstream twin (file and title), one section per
upstream file. Upstream's tests were read in ``__tests__/`` of github.com/graphile/worker at its main
branch (0.17.3 plus the 0.18 changes; no v0.18.0 tag there), checked against the graphile-worker@0.18.0
npm package. Upstream's Node calls become kongtask's: ``runTaskListOnce`` is ``kongtask.run_once``,
``utils.addJob(s)`` is ``kongtask.add_job(s)``, ``utils.completeJobs`` and its siblings are
``kongtask.admin``'s functions of the same names; SQL calls stay SQL.

What each upstream file's tests became here:

main.runTaskListOnce.test.ts (its job key tests; the rest is in tests/test_conformance_0_18.py)
  ported: allows update of pending jobs; schedules a new job if existing is completed; schedules a
  new job if existing is being processed; schedules a new job if the existing is pending retry; job
  details are reset if not specified in update; pending jobs can be removed; jobs in progress cannot
  be removed (which also checks that the running job lost its key and its remaining attempts, as the
  0.18 contract says).

workerUtils.addJob.test.ts, workerUtils.addJobs.test.ts (their job key tests)
  ported: supports the jobKey API; supports the jobKey API with jobKeyMode. ``kongtask.add_jobs``
  returns a count rather than the rows, so the addJobs twins read each job back from the table.
  left out: adding job respects useNodeTime (kongtask always uses the database's clock).

forbiddenFlags.test.ts
  ported: supports the flags API; get_job skips forbidden flags with a list, a function, an async
  function; get_job runs all jobs with forbidden flags = an unknown flag, [], a function returning
  [], an async function returning [], None, a function returning None, an async function returning
  None.

batchJobs.test.ts
  ported: batches jobs up in DB; on success, deletes job; on failure, re-enqueues job; on partial
  fail, re-enqueues job with just failed elements (a plain ``def`` task returning awaitables, as
  upstream's returns promises); on partial fail (promise), the same (an ``async def`` task).

workerUtils.completeJobs.test.ts, workerUtils.permanentlyFailJobs.test.ts,
workerUtils.rescheduleJobs.test.ts, workerUtils.forceUnlockWorkers.test.ts: the admin functions
  ported: their one test each (upstream titles the first three alike: "completes the jobs, leaves
  others unaffected"; here each carries its file's name). Each also checks what kongtask adds: the
  ids it skipped, and why (``JobsChanged.running`` / ``missing``), and what each worker held
  (``Unlocked``). In forceUnlockWorkers, upstream copies each job's lock onto its queue with an
  UPDATE ... FROM that meets several jobs per queue and lets PostgreSQL pick one; here the locked
  job's lock is copied, the outcome upstream expects.

Not ported here: workerUtils.cleanup.test.ts (kongtask has no cleanup of unused queues, task
identifiers or failed jobs yet); cron, cron-timing, cronMatcher, crontab (ported with kongtask's
cron, in tests/test_cron*.py and tests/test_crontab.py); and, being about Node alone, events,
getTasks, nodeTime, runner.helpers.getTaskName.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

import kongtask
from kongtask import JobSpec, admin
from tests.support import query_rows
from tests.test_conformance_0_18 import (
    Gated,
    _db_now,
    _get_job_queues,
    _get_jobs,
    _job_count,
    _make_selection_of_jobs,
    _recorder,
    _sql,
)


def _add_job_sql(url: str, arguments: str, params: Any = None) -> dict[str, Any]:
    """``select * from graphile_worker.add_job(<arguments>)``, as upstream's tests call it; its row."""
    [row] = query_rows(url, f"select id, run_at from graphile_worker.add_job({arguments})", params)
    return {"id": row[0], "run_at": row[1]}


def _failing_unless_succeed() -> tuple[Any, list[Any]]:
    calls: list[Any] = []

    async def job5(payload: Any, helpers: Any) -> None:
        calls.append(payload)
        if not payload["succeed"]:
            raise RuntimeError("TEST_ERROR")

    return job5, calls


# --- main.runTaskListOnce.test.ts: job keys and remove_job ------------------------------------------


def test_runTaskListOnce__allows_update_of_pending_jobs(modern_url: str) -> None:
    async def scenario() -> None:
        calls: list[Any] = []
        tasks = {"job3": _recorder(calls)}
        run_at = _db_now(modern_url) + timedelta(seconds=60)
        job = _add_job_sql(modern_url, """'job3', '{"a": "wrong"}', run_at := %s, job_key := 'abc'""", (run_at,))
        [row] = _get_jobs(modern_url)
        assert (row["id"], row["run_at"]) == (job["id"], run_at)

        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == []  # none is due

        now = _db_now(modern_url)
        _add_job_sql(modern_url, """'job3', '{"a": "right"}', run_at := %s, job_key := 'abc'""", (now,))
        [updated] = _get_jobs(modern_url)
        assert (updated["id"], updated["run_at"]) == (job["id"], now)

        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == [{"a": "right"}]

    asyncio.run(scenario())


def test_runTaskListOnce__schedules_a_new_job_if_existing_is_completed(modern_url: str) -> None:
    async def scenario() -> None:
        calls: list[Any] = []
        tasks = {"job3": _recorder(calls)}
        _add_job_sql(modern_url, """'job3', '{"a": "first"}', job_key := 'abc'""")
        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == [{"a": "first"}]

        # The key's job is gone: this schedules a new one.
        _add_job_sql(modern_url, """'job3', '{"a": "second"}', job_key := 'abc'""")
        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == [{"a": "first"}, {"a": "second"}]

    asyncio.run(scenario())


def test_runTaskListOnce__schedules_a_new_job_if_existing_is_being_processed(modern_url: str) -> None:
    async def scenario() -> None:
        job3 = Gated()
        _add_job_sql(modern_url, """'job3', '{"a": "first"}', job_key := 'abc'""")
        run = asyncio.ensure_future(kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url))
        try:
            await job3.started(1)
            # The key's job is running: this schedules a second job beside it.
            _add_job_sql(modern_url, """'job3', '{"a": "second"}', job_key := 'abc'""")
            assert len(_get_jobs(modern_url)) == 2

            job3.gates[0].set()
            await job3.started(2)  # the same run_once takes the new job once the first is done
            job3.gates[1].set()
            await asyncio.wait_for(run, 10)
        finally:
            job3.release_all()
        assert job3.payloads == [{"a": "first"}, {"a": "second"}]

    asyncio.run(scenario())


def test_runTaskListOnce__schedules_a_new_job_if_the_existing_is_pending_retry(modern_url: str) -> None:
    async def scenario() -> None:
        job5, calls = _failing_unless_succeed()
        tasks = {"job5": job5}
        initial = _add_job_sql(modern_url, """'job5', '{"succeed": false}', job_key := 'abc'""")
        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert calls == [{"succeed": False}]

        [job] = _get_jobs(modern_url)
        assert (job["id"], job["attempts"], job["last_error"]) == (initial["id"], 1, "TEST_ERROR")
        assert job["run_at"] >= initial["run_at"] + timedelta(milliseconds=200)

        await kongtask.run_once(task_list=tasks, connection_string=modern_url)
        assert len(calls) == 1  # its retry is not due yet

        _add_job_sql(modern_url, """'job5', '{"succeed": true}', job_key := 'abc'""")
        [updated] = _get_jobs(modern_url)
        assert (updated["id"], updated["attempts"], updated["last_error"]) == (initial["id"], 0, None)

        await kongtask.run_once(task_list=tasks, connection_string=modern_url)  # due now, by the update
        assert calls == [{"succeed": False}, {"succeed": True}]

    asyncio.run(scenario())


def test_runTaskListOnce__job_details_are_reset_if_not_specified_in_update(modern_url: str) -> None:
    run_at = (_db_now(modern_url) + timedelta(seconds=3)).replace(microsecond=0)
    job = _add_job_sql(
        modern_url,
        """'job3', '{"a": 1}', queue_name := 'queue1', run_at := %s, max_attempts := 10, job_key := 'abc'""",
        (run_at,),
    )
    [original] = _get_jobs(modern_url)
    assert original["id"] == job["id"]
    assert {k: original[k] for k in ("attempts", "key", "last_error", "max_attempts", "payload", "queue_name",
                                     "run_at", "task_identifier")} == {
        "attempts": 0, "key": "abc", "last_error": None, "max_attempts": 10, "payload": {"a": 1},
        "queue_name": "queue1", "run_at": run_at, "task_identifier": "job3",
    }

    # Updated with no details: they go back to the defaults, the queue too.
    _sql(modern_url, "select * from graphile_worker.add_job('job3', job_key := 'abc')")
    [reset] = _get_jobs(modern_url)
    assert {k: reset[k] for k in ("id", "attempts", "key", "last_error", "max_attempts", "payload",
                                  "task_identifier", "queue_name")} == {
        "id": original["id"], "attempts": 0, "key": "abc", "last_error": None, "max_attempts": 25,
        "payload": {}, "task_identifier": "job3", "queue_name": None,
    }

    run_at_2 = run_at + timedelta(seconds=5)
    _add_job_sql(
        modern_url,
        """'job2', '{"a": 2}', queue_name := 'queue2', run_at := %s, max_attempts := 100, job_key := 'abc'""",
        (run_at_2,),
    )
    [changed] = _get_jobs(modern_url)
    assert {k: changed[k] for k in ("id", "attempts", "last_error", "key", "max_attempts", "payload", "queue_name",
                                    "run_at", "task_identifier")} == {
        "id": original["id"], "attempts": 0, "last_error": None, "key": "abc", "max_attempts": 100,
        "payload": {"a": 2}, "queue_name": "queue2", "run_at": run_at_2, "task_identifier": "job2",
    }


def test_runTaskListOnce__pending_jobs_can_be_removed(modern_url: str) -> None:
    _add_job_sql(modern_url, """'job3', '{"a": "1"}', job_key := 'abc'""")
    assert len(_get_jobs(modern_url)) == 1
    _sql(modern_url, "select * from graphile_worker.remove_job('abc')")
    assert _get_jobs(modern_url) == []


def test_runTaskListOnce__jobs_in_progress_cannot_be_removed(modern_url: str) -> None:
    async def scenario() -> None:
        job3 = Gated()
        _add_job_sql(modern_url, """'job3', '{"a": 123}', job_key := 'abc'""")
        assert len(_get_jobs(modern_url)) == 1
        run = asyncio.ensure_future(kongtask.run_once(task_list={"job3": job3}, connection_string=modern_url))
        try:
            await job3.started(1)
            _sql(modern_url, "select * from graphile_worker.remove_job('abc')")
            [job] = _get_jobs(modern_url)  # not removed
            # ... but no longer under the key, and not to be retried (the 0.18 contract).
            assert (job["key"], job["attempts"]) == (None, job["max_attempts"])
        finally:
            job3.release_all()
        await asyncio.wait_for(run, 10)
        assert job3.payloads == [{"a": 123}]

    asyncio.run(scenario())


# --- workerUtils.addJob.test.ts: job keys ------------------------------------------------------------


def test_workerUtils_addJob__supports_the_jobKey_API(modern_url: str) -> None:
    async def scenario() -> None:
        for a in (1, 2, 3, 4):
            await kongtask.add_job("job3", {"a": a}, job_key="UNIQUE", connection_string=modern_url)
        [job] = _get_jobs(modern_url)
        assert (job["payload"]["a"], job["revision"]) == (4, 3)
        calls: list[Any] = []
        await kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url)
        assert calls == [{"a": 4}]

    asyncio.run(scenario())


def test_workerUtils_addJob__supports_the_jobKey_API_with_jobKeyMode(modern_url: str) -> None:
    async def scenario() -> None:
        run_at_1, run_at_2, run_at_3, run_at_4 = (
            _db_now(modern_url).replace(year=year, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
            for year in (2200, 2201, 2202, 2203)
        )
        target = {"job_key": "UNIQUE", "connection_string": modern_url}

        job = await kongtask.add_job("job3", {"a": 1}, run_at=run_at_1, job_key_mode="replace", **target)
        assert (job.revision, job.payload, job.run_at) == (0, {"a": 1}, run_at_1)
        # Updated, but run_at is kept.
        job = await kongtask.add_job("job3", {"a": 2}, run_at=run_at_2, job_key_mode="preserve_run_at", **target)
        assert (job.revision, job.payload, job.run_at) == (1, {"a": 2}, run_at_1)
        # unsafe_dedupe changes nothing but the revision.
        job = await kongtask.add_job("job3", {"a": 3}, run_at=run_at_3, job_key_mode="unsafe_dedupe", **target)
        assert (job.revision, job.payload, job.run_at) == (2, {"a": 2}, run_at_1)
        job = await kongtask.add_job("job3", {"a": 4}, run_at=run_at_4, job_key_mode="replace", **target)
        assert (job.revision, job.payload, job.run_at) == (3, {"a": 4}, run_at_4)

        [row] = _get_jobs(modern_url)
        assert (row["revision"], row["payload"]["a"], row["run_at"]) == (3, 4, run_at_4)
        calls: list[Any] = []
        await kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url)
        assert calls == []  # due in 2203

    asyncio.run(scenario())


# --- workerUtils.addJobs.test.ts: job keys -----------------------------------------------------------


def test_workerUtils_addJobs__supports_the_jobKey_API(modern_url: str) -> None:
    async def scenario() -> None:
        for a in (1, 2, 3, 4):
            added = await kongtask.add_jobs([JobSpec("job3", {"a": a}, job_key="UNIQUE")], connection_string=modern_url)
            assert added == 1
        [job] = _get_jobs(modern_url)
        assert (job["payload"]["a"], job["revision"]) == (4, 3)
        calls: list[Any] = []
        await kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url)
        assert calls == [{"a": 4}]

    asyncio.run(scenario())


def test_workerUtils_addJobs__supports_the_jobKey_API_with_jobKeyMode(modern_url: str) -> None:
    async def scenario() -> None:
        run_at_1, run_at_2, run_at_4 = (
            _db_now(modern_url).replace(year=year, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
            for year in (2200, 2201, 2203)
        )

        async def add(a: int, run_at: Any, preserve_run_at: bool = False) -> dict[str, Any]:
            spec = JobSpec("job3", {"a": a}, job_key="UNIQUE", run_at=run_at)
            assert await kongtask.add_jobs([spec], job_key_preserve_run_at=preserve_run_at,
                                           connection_string=modern_url) == 1
            [row] = _get_jobs(modern_url)  # add_jobs returns a count: the job is read back
            return row

        job = await add(1, run_at_1)
        assert (job["revision"], job["payload"], job["run_at"]) == (0, {"a": 1}, run_at_1)
        job = await add(2, run_at_2, preserve_run_at=True)
        assert (job["revision"], job["payload"], job["run_at"]) == (1, {"a": 2}, run_at_1)
        # No unsafe_dedupe: add_jobs has no such mode (upstream's neither).
        job = await add(4, run_at_4)
        assert (job["revision"], job["payload"], job["run_at"]) == (2, {"a": 4}, run_at_4)

        calls: list[Any] = []
        await kongtask.run_once(task_list={"job3": _recorder(calls)}, connection_string=modern_url)
        assert calls == []  # due in 2203

    asyncio.run(scenario())


# --- forbiddenFlags.test.ts ----------------------------------------------------------------------------

BAD_FLAG = "d"


async def _after_a_moment(value: Any) -> Any:
    await asyncio.sleep(0.005)  # upstream's `await sleep(5)`: an answer that is not immediate
    return value


def test_forbiddenFlags__supports_the_flags_API(modern_url: str) -> None:
    async def scenario() -> None:
        await kongtask.add_job("job3", {"a": 1}, flags=["a", "b"], connection_string=modern_url)
        [job] = _get_jobs(modern_url)
        assert job["flags"] == {"a": True, "b": True}
        calls: list[Any] = []
        await kongtask.run_once(task_list={"task": _recorder(calls)}, connection_string=modern_url)
        assert calls == []  # no task job3 here: it stays
        assert _job_count(modern_url) == 1

    asyncio.run(scenario())


def _flag_test_task() -> tuple[Any, list[bool]]:
    """upstream's flag-test task: records, per job run, whether it carried the bad flag."""
    ran: list[bool] = []

    async def task(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(bool((helpers.job.flags or {}).get(BAD_FLAG)))

    return task, ran


async def _add_the_two_flagged_jobs(url: str) -> None:
    await kongtask.add_job("flag-test", {"a": 1}, flags=["a", "b"], connection_string=url)
    await kongtask.add_job("flag-test", {"a": 1}, flags=["c", BAD_FLAG], connection_string=url)


@pytest.mark.parametrize("forbidden_flags", [
    pytest.param([BAD_FLAG], id="list"),
    pytest.param(lambda: [BAD_FLAG], id="function"),
    pytest.param(lambda: _after_a_moment([BAD_FLAG]), id="async_function"),
])
def test_forbiddenFlags__get_job_skips_forbidden_flags_with_arg(modern_url: str, forbidden_flags: Any) -> None:
    async def scenario() -> None:
        task, ran = _flag_test_task()
        await _add_the_two_flagged_jobs(modern_url)
        await kongtask.run_once(task_list={"flag-test": task}, forbidden_flags=forbidden_flags,
                                connection_string=modern_url)
        [job] = _get_jobs(modern_url)
        assert (job["attempts"], job["flags"]) == (0, {"c": True, "d": True})
        assert ran == [False]

    asyncio.run(scenario())


@pytest.mark.parametrize("forbidden_flags", [
    pytest.param(["z"], id="unknown_flag"),
    pytest.param([], id="empty_list"),
    pytest.param(lambda: [], id="function_of_empty_list"),
    pytest.param(lambda: _after_a_moment([]), id="async_function_of_empty_list"),
    pytest.param(None, id="None"),
    pytest.param(lambda: None, id="function_of_None"),
    pytest.param(lambda: _after_a_moment(None), id="async_function_of_None"),
])
def test_forbiddenFlags__get_job_runs_all_jobs_with_forbidden_flags(modern_url: str, forbidden_flags: Any) -> None:
    async def scenario() -> None:
        task, ran = _flag_test_task()
        await _add_the_two_flagged_jobs(modern_url)
        await kongtask.run_once(task_list={"flag-test": task}, forbidden_flags=forbidden_flags,
                                connection_string=modern_url)
        assert _get_jobs(modern_url) == []
        assert sorted(ran) == [False, True]

    asyncio.run(scenario())


# --- batchJobs.test.ts -------------------------------------------------------------------------------


def _add_batch(url: str, payload: str) -> None:
    _sql(url, "select * from graphile_worker.add_job('job3', %s::json, job_key := 'mykey')", (payload,))


def test_batchJobs__batches_jobs_up_in_DB(modern_url: str) -> None:
    for a in (1, 2, 3):
        _add_batch(modern_url, f'[{{"a": {a}}}]')
    [job] = _get_jobs(modern_url)
    assert (job["task_identifier"], job["payload"], job["attempts"]) == ("job3", [{"a": 1}, {"a": 2}, {"a": 3}], 0)
    assert _get_job_queues(modern_url) == []


def test_batchJobs__on_success_deletes_job(modern_url: str) -> None:
    _add_batch(modern_url, '[{"a": 1}, {"a": 2}, {"a": 3}]')
    job3_calls: list[Any] = []
    job4_calls: list[Any] = []
    asyncio.run(kongtask.run_once(task_list={"job3": _recorder(job3_calls), "job4": _recorder(job4_calls)},
                                  connection_string=modern_url))
    assert job3_calls == [[{"a": 1}, {"a": 2}, {"a": 3}]]
    assert job4_calls == []
    assert _get_jobs(modern_url) == []
    assert _get_job_queues(modern_url) == []


def test_batchJobs__on_failure_re_enqueues_job(modern_url: str) -> None:
    _add_batch(modern_url, '[{"a": 1}, {"a": 2}, {"a": 3}]')

    async def job3(payload: Any, helpers: Any) -> None:
        raise RuntimeError("RETRY")

    asyncio.run(kongtask.run_once(task_list={"job3": job3, "job4": _recorder([])}, connection_string=modern_url))
    [job] = _get_jobs(modern_url)
    assert (job["task_identifier"], job["payload"], job["attempts"]) == ("job3", [{"a": 1}, {"a": 2}, {"a": 3}], 1)
    assert _get_job_queues(modern_url) == []


async def _reject(error: Exception) -> None:
    raise error


def _odd_items_fail(payload: Any) -> list[Any]:
    """One result per item: an awaitable that raises for each odd ``a`` (upstream's Promise.reject)."""
    return [_reject(RuntimeError(str(item["a"]))) if item["a"] % 2 == 1 else None for item in payload]


def test_batchJobs__on_partial_fail_re_enqueues_job_with_just_failed_elements(modern_url: str) -> None:
    _add_batch(modern_url, '[{"a": 1}, {"a": 2}, {"a": 3}]')

    def job3(payload: Any, helpers: Any) -> list[Any]:  # a plain def that returns awaitables
        return _odd_items_fail(payload)

    asyncio.run(kongtask.run_once(task_list={"job3": job3, "job4": _recorder([])}, connection_string=modern_url))
    [job] = _get_jobs(modern_url)
    assert (job["task_identifier"], job["payload"], job["attempts"]) == ("job3", [{"a": 1}, {"a": 3}], 1)
    assert _get_job_queues(modern_url) == []


def test_batchJobs__on_partial_fail_promise_re_enqueues_job_with_just_failed_elements(modern_url: str) -> None:
    _add_batch(modern_url, '[{"a": 1}, {"a": 2}, {"a": 3}]')

    async def job3(payload: Any, helpers: Any) -> list[Any]:
        return _odd_items_fail(payload)

    asyncio.run(kongtask.run_once(task_list={"job3": job3, "job4": _recorder([])}, connection_string=modern_url))
    [job] = _get_jobs(modern_url)
    assert (job["task_identifier"], job["payload"], job["attempts"]) == ("job3", [{"a": 1}, {"a": 3}], 1)
    assert _get_job_queues(modern_url) == []


# --- workerUtils.completeJobs / permanentlyFailJobs / rescheduleJobs / forceUnlockWorkers ---------------

GIVEN = ("failed", "regular1", "locked", "regular2")
CHANGED = ("failed", "regular1", "regular2")


def _selection(url: str) -> tuple[dict[str, int], dict[int, dict[str, Any]]]:
    """makeSelectionOfJobs, with every row as it was before the admin call."""
    ids = asyncio.run(_make_selection_of_jobs(url))
    return ids, {row["id"]: row for row in _get_jobs(url)}


def _others_unaffected(url: str, ids: dict[str, int], before: dict[int, dict[str, Any]], changed: list[int]) -> None:
    remaining = [row for row in _get_jobs(url) if row["id"] not in changed]
    assert remaining == [before[ids["locked"]], before[ids["untouched"]]]


def test_workerUtils_completeJobs__completes_the_jobs_leaves_others_unaffected(modern_url: str) -> None:
    ids, before = _selection(modern_url)
    completed = asyncio.run(admin.complete_jobs(sorted(ids[n] for n in GIVEN), connection_string=modern_url))
    assert [job.id for job in completed.jobs] == sorted(ids[n] for n in CHANGED)
    assert (completed.running, completed.missing) == ([ids["locked"]], [])
    assert _get_jobs(modern_url) == [before[ids["locked"]], before[ids["untouched"]]]


def test_workerUtils_permanentlyFailJobs__completes_the_jobs_leaves_others_unaffected(modern_url: str) -> None:
    ids, before = _selection(modern_url)
    failed = asyncio.run(admin.permanently_fail_jobs(sorted(ids[n] for n in GIVEN), "TESTING!",
                                                     connection_string=modern_url))
    assert [job.id for job in failed.jobs] == sorted(ids[n] for n in CHANGED)
    for job in failed.jobs:
        assert job.last_error == "TESTING!"
        assert job.attempts == job.max_attempts > 0
    assert (failed.running, failed.missing) == ([ids["locked"]], [])
    _others_unaffected(modern_url, ids, before, [job.id for job in failed.jobs])


def test_workerUtils_rescheduleJobs__completes_the_jobs_leaves_others_unaffected(modern_url: str) -> None:
    ids, before = _selection(modern_url)
    nowish = _db_now(modern_url) + timedelta(seconds=60)
    rescheduled = asyncio.run(admin.reschedule_jobs([ids[n] for n in GIVEN], run_at=nowish, attempts=1,
                                                    connection_string=modern_url))
    assert [job.id for job in rescheduled.jobs] == sorted(ids[n] for n in CHANGED)
    for job in rescheduled.jobs:
        assert job.last_error == ("Failed forever" if job.id == ids["failed"] else None)
        assert (job.attempts, job.run_at) == (1, nowish)
    assert (rescheduled.running, rescheduled.missing) == ([ids["locked"]], [])
    _others_unaffected(modern_url, ids, before, [job.id for job in rescheduled.jobs])


def test_workerUtils_forceUnlockWorkers__unlocks_jobs_for_the_given_workers_leaves_others_unaffected(
    modern_url: str,
) -> None:
    async def scenario() -> None:
        pool_1, pool_2, pool_3 = "pool-1", "pool-2", "pool-3"
        specs = [
            (pool_1, None), (pool_1, "test"), (pool_2, None), (pool_2, "test2"), (pool_2, "test3"),
            (pool_3, None), (None, None), (None, "test"), (None, "test2"), (None, "test3"),
        ]
        date = _db_now(modern_url)
        added = []
        for a, (pool, queue) in enumerate(specs, start=1):
            date -= timedelta(minutes=1)
            job = await kongtask.add_job("job3", {"a": a}, queue_name=queue, connection_string=modern_url)
            _sql(modern_url, "update graphile_worker._private_jobs as jobs set locked_at = %s, locked_by = %s"
                             " where id = %s", (date if pool else None, pool, job.id))
            added.append(job)
        _sql(modern_url, """
            update graphile_worker._private_job_queues as job_queues
            set locked_at = jobs.locked_at, locked_by = jobs.locked_by
            from graphile_worker._private_jobs as jobs
            where jobs.job_queue_id = job_queues.id and jobs.locked_by is not null""")

        unlocked = await admin.force_unlock_workers([pool_2, pool_3], connection_string=modern_url)
        assert unlocked == [
            admin.Unlocked(pool_2, [added[2].id, added[3].id, added[4].id], ["test2", "test3"]),
            admin.Unlocked(pool_3, [added[5].id], []),
        ]

        remaining = sorted(_get_jobs(modern_url), key=lambda row: row["id"])
        assert len(remaining) == len(specs)
        for (pool, _), job, row in zip(specs, added, remaining, strict=True):
            assert row["id"] == job.id
            if pool in (pool_2, pool_3) or pool is None:
                assert (row["locked_by"], row["locked_at"]) == (None, None)
            else:
                assert row["locked_by"] == pool and row["locked_at"] is not None
        locked_queues = query_rows(
            modern_url,
            "select queue_name, locked_by from graphile_worker._private_job_queues"
            " where locked_at is not null order by id",
        )
        assert locked_queues == [("test", pool_1)]

    asyncio.run(scenario())

