"""Admin functions for stuck and failed jobs: on the plain v0.1.0 tables, and on graphile-worker
0.18's schema through its SQL admin functions (upstream's own tests of those are ported in
tests/test_conformance_0_18_features.py)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import kongtask
from kongtask import admin
from kongtask._schema import jobs
from kongtask.errors import ConfigurationError, SchemaTooOld
from tests.support import query_rows

S = "graphile_worker"


def _setup(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        waiting = jobs.add_job_sync(conn, S, "waiting").id
        running = jobs.add_job_sync(conn, S, "running").id
        conn.execute("update graphile_worker.jobs set priority = -1 where id = %s", (running,))
        assert jobs.get_job_sync(conn, S, "worker-stuck-00000", ["running"]) is not None
        failed = jobs.add_job_sync(conn, S, "failed").id
        jobs.get_job_sync(conn, S, "worker-other-00000", ["failed"])
        jobs.fail_job_sync(conn, S, "worker-other-00000", failed, "temporary")
        dead = jobs.add_job_sync(conn, S, "dead", max_attempts=1).id
        jobs.get_job_sync(conn, S, "worker-other-00000", ["dead"])
        jobs.fail_job_sync(conn, S, "worker-other-00000", dead, "permanent")
    return {"waiting": waiting, "running": running, "failed": failed, "dead": dead}


def test_list_jobs_by_state(migrated_url: str) -> None:
    ids = _setup(migrated_url)

    def listed(state: Any) -> list[tuple[int, str | None]]:
        rows = asyncio.run(admin.list_jobs(state, connection_string=migrated_url))
        return [(r.id, r.last_error) for r in rows]

    assert listed("locked") == [(ids["running"], None)]
    assert listed("failed") == [(ids["failed"], "temporary")]
    assert listed("dead") == [(ids["dead"], "permanent")]
    assert {i for i, _ in listed("all")} == set(ids.values())
    with pytest.raises(ConfigurationError, match="unknown job state"):
        asyncio.run(admin.list_jobs("stuck", connection_string=migrated_url))  # type: ignore[arg-type]


def test_unlock_worker_releases_the_queues_it_holds(migrated_url: str) -> None:
    ids = _setup(migrated_url)
    released = asyncio.run(admin.unlock_worker("worker-stuck-00000", connection_string=migrated_url))
    assert len(released) == 1
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        again = jobs.get_job_sync(conn, S, "worker-new-000000", ["running"])
    assert again is not None and again.id == ids["running"] and again.attempts == 2


def test_retry_gives_a_dead_job_one_more_attempt_now(migrated_url: str) -> None:
    ids = _setup(migrated_url)
    job = asyncio.run(admin.retry_job(ids["dead"], connection_string=migrated_url))
    assert job is not None and job.attempts == 1 and job.max_attempts == 2
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        got = jobs.get_job_sync(conn, S, "worker-new-000000", ["dead"])
    assert got is not None and got.id == ids["dead"]


def test_reschedule_changes_run_at_and_priority(migrated_url: str) -> None:
    ids = _setup(migrated_url)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    job = asyncio.run(admin.reschedule_job(ids["waiting"], run_at=later, priority=5, connection_string=migrated_url))
    assert job is not None and job.priority == 5 and abs((job.run_at - later).total_seconds()) < 0.001
    with pytest.raises(ConfigurationError):
        asyncio.run(admin.reschedule_job(ids["waiting"], connection_string=migrated_url))


def test_delete_job_removes_it_and_its_queue(migrated_url: str) -> None:
    ids = _setup(migrated_url)
    deleted = asyncio.run(admin.delete_job(ids["waiting"], connection_string=migrated_url))
    assert deleted is not None and deleted.id == ids["waiting"]
    assert asyncio.run(admin.delete_job(ids["waiting"], connection_string=migrated_url)) is None
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (3,)
        assert conn.execute("select count(*) from graphile_worker.job_queues").fetchone() == (3,)


ODD_RUN_ATS = {
    "-infinity": "-infinity",
    "infinity": "infinity",
    "0044-03-15 12:00:00+00 BC": "0044-03-15 12:00:00+00 BC",
    "9999-12-31 23:59:59-05": "10000-01-01 04:59:59+00",
}


def test_list_jobs_shows_run_at_times_python_cannot_hold(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        odd = {
            conn.execute("select id from graphile_worker.add_job('odd', run_at => %s::timestamptz)", (text,)).fetchone()[0]: shown  # type: ignore[index]
            for text, shown in ODD_RUN_ATS.items()
        }
        plain = jobs.add_job_sync(conn, S, "plain")
    # The server's text follows the session's time zone: UTC here, whatever the server's default.
    in_utc = make_conninfo(migrated_url, options="-c timezone=UTC")
    rows = asyncio.run(admin.list_jobs(connection_string=in_utc))
    by_id = {r.id: r for r in rows}
    assert set(by_id) == {*odd, plain.id}
    for job_id, shown in odd.items():
        assert by_id[job_id].run_at is None
        assert by_id[job_id].run_at_text == shown
    assert by_id[plain.id].run_at == plain.run_at and by_id[plain.id].run_at_text.startswith(str(plain.run_at.year))


def test_jobs_whose_run_at_python_cannot_hold_can_be_retried_rescheduled_and_deleted(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        ids = [
            conn.execute("select id from graphile_worker.add_job('odd', run_at => %s::timestamptz)", (text,)).fetchone()[0]  # type: ignore[index]
            for text in ODD_RUN_ATS
        ]
    later = asyncio.run(admin.reschedule_job(ids[0], priority=5, connection_string=migrated_url))
    assert later is not None and later.priority == 5
    retried = asyncio.run(admin.retry_job(ids[1], connection_string=migrated_url))
    assert retried is not None and retried.run_at.year >= 2026
    deleted = [asyncio.run(admin.delete_job(job_id, connection_string=migrated_url)) for job_id in ids]
    assert [job.id for job in deleted if job is not None] == ids


def test_list_jobs_by_task_queue_and_unknown_task(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        mail = jobs.add_job_sync(conn, S, "mail", queue_name="outbox").id
        other_mail = jobs.add_job_sync(conn, S, "mail").id
        ghost = jobs.add_job_sync(conn, S, "ghost", queue_name="outbox").id

    def listed(state: Any = "all", **filters: Any) -> list[int]:
        return sorted(r.id for r in asyncio.run(admin.list_jobs(state, connection_string=migrated_url, **filters)))

    assert listed(task="mail") == sorted([mail, other_mail])
    assert listed(queue="outbox") == sorted([mail, ghost])
    assert listed(task="mail", queue="outbox") == [mail]
    assert listed("unknown-task", known_tasks={"mail"}) == [ghost]
    assert listed("unknown-task", known_tasks=set()) == sorted([mail, other_mail, ghost])
    assert listed("unknown-task", known_tasks=["mail", "ghost"]) == []
    with pytest.raises(ConfigurationError, match="known_tasks"):
        listed("unknown-task")


# --- complete, fail, reschedule and unlock many jobs, on either schema ------------------------------

BOTH = pytest.mark.parametrize("schema_url", ["migrated_url", "modern_url"])
DEAD_WORKER = "worker-dead-000000"


def _url(request: pytest.FixtureRequest, fixture: str) -> str:
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def _run_sql(url: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def _hold(url: str, job_id: int, worker_id: str = DEAD_WORKER, ago: str = "0 seconds") -> None:
    """Marks the job as running under ``worker_id`` (locked ``ago``), as a worker that took it would."""
    modern = query_rows(url, "select to_regclass('graphile_worker._private_jobs') is not null")[0][0]
    if modern:
        _run_sql(url, "update graphile_worker._private_jobs set locked_by = %s, locked_at = now() - %s::interval"
                      " where id = %s", (worker_id, ago, job_id))
        _run_sql(url, "update graphile_worker._private_job_queues as q"
                      " set locked_by = %s, locked_at = now() - %s::interval"
                      " from graphile_worker._private_jobs as j where j.job_queue_id = q.id and j.id = %s",
                 (worker_id, ago, job_id))
    else:
        _run_sql(url, "update graphile_worker.job_queues as q set locked_by = %s, locked_at = now() - %s::interval"
                      " from graphile_worker.jobs as j where j.queue_name = q.queue_name and j.id = %s",
                 (worker_id, ago, job_id))


def _add(url: str, *tasks: str, **options: Any) -> list[int]:
    return [kongtask.add_job_sync(task, {"task": task}, connection_string=url, **options).id for task in tasks]


@BOTH
def test_complete_jobs_deletes_the_waiting_ones_and_names_those_running_or_missing(
    request: pytest.FixtureRequest, schema_url: str
) -> None:
    url = _url(request, schema_url)
    waiting, running, stale, other = _add(url, "waiting", "running", "stale", "other")
    _hold(url, running)
    _hold(url, stale, ago="5 hours")  # a lock older than 4 hours does not count, as upstream counts
    gone = other + 1000

    changed = asyncio.run(admin.complete_jobs([running, gone, stale, waiting, waiting], connection_string=url))

    assert [(job.id, job.task_identifier, job.payload) for job in changed.jobs] == [
        (waiting, "waiting", {"task": "waiting"}), (stale, "stale", {"task": "stale"})]
    assert (changed.running, changed.missing) == ([running], [gone])
    assert sorted(row.id for row in asyncio.run(admin.list_jobs(connection_string=url))) == [running, other]


@BOTH
def test_permanently_fail_jobs_uses_up_their_attempts_with_the_reason(
    request: pytest.FixtureRequest, schema_url: str
) -> None:
    url = _url(request, schema_url)
    first, second, running = _add(url, "first", "second", "running")
    _hold(url, running)

    failed = asyncio.run(admin.permanently_fail_jobs([first, running], "customer left", connection_string=url))
    assert [(job.id, job.attempts, job.max_attempts, job.last_error) for job in failed.jobs] == [
        (first, 25, 25, "customer left")]
    assert (failed.running, failed.missing) == ([running], [])
    default = asyncio.run(admin.permanently_fail_jobs([second], connection_string=url))
    assert [job.last_error for job in default.jobs] == ["Manually marked as failed"]
    dead = asyncio.run(admin.list_jobs("dead", connection_string=url))
    assert sorted(job.id for job in dead) == [first, second]


@BOTH
def test_reschedule_jobs_changes_only_what_is_given(request: pytest.FixtureRequest, schema_url: str) -> None:
    url = _url(request, schema_url)
    first, second, running = _add(url, "first", "second", "running", max_attempts=3)
    _hold(url, running)
    table = "graphile_worker._private_jobs" if schema_url == "modern_url" else "graphile_worker.jobs"
    _run_sql(url, f"update {table} set attempts = 3, last_error = 'boom' where id = %s", (first,))
    later = datetime(2031, 1, 1, tzinfo=timezone.utc)

    moved = asyncio.run(admin.reschedule_jobs(
        [first, second, running], run_at=later, attempts=0, connection_string=url))
    assert [(j.id, j.run_at, j.attempts, j.max_attempts, j.priority, j.last_error) for j in moved.jobs] == [
        (first, later, 0, 3, 0, "boom"), (second, later, 0, 3, 0, None)]
    assert moved.running == [running]
    ahead = asyncio.run(admin.reschedule_jobs([second], priority=-7, max_attempts=9, connection_string=url))
    assert [(job.run_at, job.priority, job.max_attempts) for job in ahead.jobs] == [(later, -7, 9)]


def test_on_v0_1_every_job_of_a_locked_queue_counts_as_running(migrated_url: str) -> None:
    """v0.1.0 locks queues, not jobs: the jobs waiting behind a running one in its named queue are
    left alone too, and go once the queue is unlocked."""
    ahead, behind = _add(migrated_url, "ahead", "behind", queue_name="serial")
    _hold(migrated_url, ahead)
    left = asyncio.run(admin.complete_jobs([ahead, behind], connection_string=migrated_url))
    assert (left.jobs, left.running, left.missing) == ([], [ahead, behind], [])
    [unlocked] = asyncio.run(admin.force_unlock_workers([DEAD_WORKER], connection_string=migrated_url))
    assert unlocked == admin.Unlocked(DEAD_WORKER, [], ["serial"])
    done = asyncio.run(admin.complete_jobs([ahead, behind], connection_string=migrated_url))
    assert [job.id for job in done.jobs] == [ahead, behind]


@BOTH
def test_force_unlock_workers_releases_what_those_workers_hold_and_nothing_else(
    request: pytest.FixtureRequest, schema_url: str
) -> None:
    url = _url(request, schema_url)
    mine, also_mine, theirs = _add(url, "a", "b", "c")
    _hold(url, mine)
    _hold(url, also_mine)
    _hold(url, theirs, worker_id="worker-alive-00000")

    unlocked = asyncio.run(admin.force_unlock_workers([DEAD_WORKER, "worker-nobody"], connection_string=url))

    modern = schema_url == "modern_url"
    assert [(u.worker_id, u.job_ids) for u in unlocked] == [
        (DEAD_WORKER, [mine, also_mine] if modern else []), ("worker-nobody", [])]
    # On 0.18 these jobs have no queue; on v0.1.0 each has one of its own, which held the lock.
    assert len(unlocked[0].queue_names) == (0 if modern else 2) and unlocked[1].queue_names == []
    locked = asyncio.run(admin.list_jobs("locked", connection_string=url))
    assert [(job.id, job.locked_by) for job in locked] == [(theirs, "worker-alive-00000")]


def test_list_jobs_by_flag_needs_the_0_18_schema(modern_url: str, migrated_url: str) -> None:
    slow, both = (kongtask.add_job_sync("t", flags=flags, job_key=key, connection_string=modern_url).id
                  for flags, key in ((["slow"], None), (["slow", "api"], "k")))
    _add(modern_url, "plain")
    listed = asyncio.run(admin.list_jobs(flag="slow", connection_string=modern_url))
    assert [(job.id, job.flags, job.key) for job in listed] == [
        (slow, {"slow": True}, None), (both, {"slow": True, "api": True}, "k")]
    assert [job.id for job in asyncio.run(admin.list_jobs(flag="api", connection_string=modern_url))] == [both]
    with pytest.raises(SchemaTooOld, match=r"^listing jobs by flag needs graphile-worker's 0\.18 schema"):
        asyncio.run(admin.list_jobs(flag="slow", connection_string=migrated_url))


NOWHERE = "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=1"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: admin.complete_jobs([1, 0], connection_string=NOWHERE), "a job id is a whole number from 1"),
    (lambda: admin.complete_jobs(7, connection_string=NOWHERE), "job_ids must be a list"),  # type: ignore[arg-type]
    (lambda: admin.complete_jobs([True], connection_string=NOWHERE), "a job id is a whole number"),
    (lambda: admin.permanently_fail_jobs([1], "a\x00b", connection_string=NOWHERE), "NUL"),
    (lambda: admin.reschedule_jobs([1], connection_string=NOWHERE), "give run_at, priority, attempts or max_attempts"),
    (lambda: admin.reschedule_jobs([1], run_at=datetime(2030, 1, 1), connection_string=NOWHERE), "no time zone"),
    (lambda: admin.reschedule_jobs([1], priority=40000, connection_string=NOWHERE), "priority must be a whole number"),
    (lambda: admin.reschedule_jobs([1], attempts=-1, connection_string=NOWHERE), "attempts must be a whole number"),
    (lambda: admin.reschedule_jobs([1], max_attempts=0, connection_string=NOWHERE), "max_attempts must be"),
    (lambda: admin.force_unlock_workers("worker-x", connection_string=NOWHERE), "worker_ids must be a list"),
    (lambda: admin.force_unlock_workers([""], connection_string=NOWHERE), "a worker id is a non-empty string"),
])
def test_admin_arguments_are_checked_before_any_connection(call: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        asyncio.run(call())
