"""`kongtask jobs`: the admin commands end to end."""

from __future__ import annotations

from pathlib import Path

import psycopg

from kongtask._schema import jobs
from tests.cli_support import kongtask as run
from tests.cli_support import one_line, write_task

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


def _listed_ids(output: str) -> list[int]:
    return [int(line.split("\t")[0]) for line in output.splitlines()[1:]]


def test_jobs_list_shows_run_at_times_python_cannot_hold(tmp_path: Path, migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        ids = [
            conn.execute("select id from graphile_worker.add_job('x', run_at => %s::timestamptz)", (when,)).fetchone()[0]  # type: ignore[index]
            for when in ("-infinity", "infinity", "0044-03-15 12:00:00+00 BC", "9999-12-31 23:59:59-05")
        ]
    listed = run("jobs", "list", "-c", migrated_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted(_listed_ids(listed.stdout)) == sorted(ids)
    run_ats = {line.split("\t")[0]: line.split("\t")[4] for line in listed.stdout.splitlines()[1:]}
    assert run_ats[str(ids[0])] == "-infinity" and run_ats[str(ids[1])] == "infinity"
    assert run_ats[str(ids[2])].endswith(" BC")


def test_jobs_list_filters_by_task_queue_and_unknown_task(tmp_path: Path, migrated_url: str) -> None:
    project = tmp_path / "project"
    write_task(project / "tasks", "mail")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        mail = jobs.add_job_sync(conn, S, "mail", queue_name="outbox").id
        other_mail = jobs.add_job_sync(conn, S, "mail").id
        ghost = jobs.add_job_sync(conn, S, "ghost", queue_name="outbox").id
    c = ["-c", migrated_url]

    def listed(*args: str, cwd: Path = project) -> list[int]:
        result = run("jobs", "list", *args, *c, cwd=cwd)
        assert result.returncode == 0, result.stderr
        return sorted(_listed_ids(result.stdout))

    assert listed("--task", "mail") == sorted([mail, other_mail])
    assert listed("--queue", "outbox") == sorted([mail, ghost])
    assert listed("--task", "mail", "--queue", "outbox") == [mail]
    assert listed("--state", "unknown-task") == [ghost]
    write_task(project / "other", "ghost")
    assert listed("--state", "unknown-task", "--tasks", "other") == sorted([mail, other_mail])

    elsewhere = tmp_path / "elsewhere"  # in no project: no tasks folder to compare with
    elsewhere.mkdir()
    missing = run("jobs", "list", "--state", "unknown-task", *c, cwd=elsewhere)
    assert missing.returncode == 2
    line = one_line(missing.stderr)
    assert "tasks" in line and "--tasks" in line and "Traceback" not in missing.stderr


def test_jobs_commands_on_a_database_without_the_schema_say_to_migrate(
    tmp_path: Path, db_url: str, migrated_url: str
) -> None:
    for url, schema in ((db_url, "graphile_worker"), (migrated_url, "graphile_workr")):
        for args in (("jobs", "list"), ("jobs", "retry", "5"), ("jobs", "unlock", "worker-x"), ("jobs", "delete", "5")):
            result = run(*args, "-c", url, "--schema", schema, cwd=tmp_path)
            assert result.returncode == 1, result.stderr
            line = one_line(result.stderr)
            assert f"no kongtask schema named {schema!r}" in line and "kongtask migrate" in line, line
