"""`kongtask jobs`: the admin commands end to end."""

from __future__ import annotations

from pathlib import Path

import psycopg

from kongtask import jobs
from tests.cli_support import kongtask as run

S = "graphile_worker"


def test_jobs_commands_list_unlock_retry_reschedule_and_delete(tmp_path: Path, migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        dead = jobs.add_job_sync(conn, S, "dead", max_attempts=1)
        jobs.get_job_sync(conn, S, "worker-gone-000000", ["dead"])
        jobs.fail_job_sync(conn, S, "worker-gone-000000", dead.id, "it broke")
        stuck = jobs.add_job_sync(conn, S, "stuck")
        jobs.get_job_sync(conn, S, "worker-gone-000000", ["stuck"])
    c = ["-c", migrated_url]

    listed = run("jobs", "list", "--state", "dead", *c, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"{dead.id}\tdead\t" in listed.stdout and "it broke" in listed.stdout and "1/1" in listed.stdout
    locked = run("jobs", "list", "--state", "locked", *c, cwd=tmp_path)
    assert f"{stuck.id}\tstuck\t" in locked.stdout and "worker-gone-000000" in locked.stdout

    assert run("jobs", "unlock", "worker-gone-000000", *c, cwd=tmp_path).stdout.strip() == "unlocked 1 queue(s)"
    assert run("jobs", "retry", str(dead.id), *c, cwd=tmp_path).stdout.strip() == f"job {dead.id} is due now"
    moved = run("jobs", "reschedule", str(stuck.id), "--priority", "-5", "--run-at", "2031-01-01T00:00:00Z", *c, cwd=tmp_path)
    assert moved.returncode == 0 and "priority -5" in moved.stdout and "2031-01-01T00:00:00+00:00" in moved.stdout
    assert run("jobs", "delete", str(stuck.id), *c, cwd=tmp_path).stdout.strip() == f"job {stuck.id} deleted"

    missing = run("jobs", "delete", str(stuck.id), *c, cwd=tmp_path)
    assert missing.returncode == 1 and f"no job {stuck.id}" in missing.stderr
    nothing = run("jobs", "reschedule", str(dead.id), *c, cwd=tmp_path)
    assert nothing.returncode == 2 and "--run-at, --priority" in nothing.stderr
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("select id, attempts, max_attempts from graphile_worker.jobs").fetchall() == [(dead.id, 1, 2)]
