"""Admin functions for stuck and failed jobs, on the plain v0.1.0 tables."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from kongtask import admin
from kongtask._schema import jobs
from kongtask.errors import ConfigurationError

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
