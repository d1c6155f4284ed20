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

    running = run("jobs", "delete", str(stuck.id), *c, cwd=tmp_path)
    assert running.returncode == 1
    assert running.stdout.strip() == (
        f"job {stuck.id} skipped: a worker is running it (see `kongtask jobs list --state locked`)")
    assert one_line(running.stderr) == "kongtask: error: 1 of 1 job(s) skipped, as listed above"

    unlocked = run("jobs", "unlock", "worker-gone-000000", *c, cwd=tmp_path)
    assert unlocked.stdout.startswith("worker-gone-000000: unlocked 1 queue(s) (") and unlocked.returncode == 0
    assert run("jobs", "retry", str(dead.id), *c, cwd=tmp_path).stdout.strip() == f"job {dead.id} is due now"
    moved = run("jobs", "reschedule", str(stuck.id), "--priority", "-5", "--run-at", "2031-01-01T00:00:00Z", *c,
                cwd=tmp_path)
    assert moved.returncode == 0 and moved.stdout.strip() == (
        f"job {stuck.id} runs at 2031-01-01T00:00:00+00:00 with priority -5, attempts 1/25")
    assert run("jobs", "delete", str(stuck.id), *c, cwd=tmp_path).stdout.strip() == f"job {stuck.id} deleted"

    missing = run("jobs", "delete", str(stuck.id), *c, cwd=tmp_path)
    assert missing.returncode == 1 and missing.stdout.strip() == f"job {stuck.id} skipped: no such job"
    nothing = run("jobs", "reschedule", str(dead.id), *c, cwd=tmp_path)
    assert nothing.returncode == 2 and "give --run-at, --priority, --attempts or --max-attempts" in nothing.stderr
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("select id, attempts, max_attempts from graphile_worker.jobs").fetchall() == [(dead.id, 1, 2)]


def test_jobs_complete_fail_reschedule_and_unlock_many_on_the_0_18_schema(tmp_path: Path, modern_url: str) -> None:
    """Through upstream's admin functions: one line per job given, in that order; the jobs a worker
    is running, and ids of no job, skipped and said so, with exit 1."""
    with psycopg.connect(modern_url, autocommit=True) as conn:
        a, b, running, d = (jobs.add_job_sync(conn, S, task).id for task in ("a", "b", "running", "d"))
        conn.execute("update graphile_worker._private_jobs set locked_by = 'worker-gone', locked_at = now()"
                     " where id = %s", (running,))
    c = ["-c", modern_url]

    failed = run("jobs", "fail", str(a), str(running), str(b), "--reason", "customer left", *c, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stdout.splitlines() == [
        f"job {a} failed for good: customer left",
        f"job {running} skipped: a worker is running it (see `kongtask jobs list --state locked`)",
        f"job {b} failed for good: customer left",
    ]
    assert one_line(failed.stderr) == "kongtask: error: 1 of 3 job(s) skipped, as listed above"

    again = run("jobs", "reschedule", str(b), str(a), "--attempts", "0", "--max-attempts", "3", "--priority", "2",
                "--run-at", "2031-01-01T00:00:00Z", *c, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"job {b} runs at 2031-01-01T00:00:00+00:00 with priority 2, attempts 0/3",
        f"job {a} runs at 2031-01-01T00:00:00+00:00 with priority 2, attempts 0/3",
    ]

    unlocked = run("jobs", "unlock", "worker-gone", "worker-never", *c, cwd=tmp_path)
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout.splitlines() == [f"worker-gone: unlocked 1 job(s) ({running})", "worker-never: held nothing"]

    done = run("jobs", "complete", str(running), str(d), str(d + 100), *c, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"job {running} completed", f"job {d} completed", f"job {d + 100} skipped: no such job"]
    with psycopg.connect(modern_url) as conn:
        rows = conn.execute("select id, attempts, max_attempts, priority, last_error from graphile_worker.jobs"
                            " order by id").fetchall()
    assert rows == [(a, 0, 3, 2, "customer left"), (b, 0, 3, 2, "customer left")]


def test_jobs_list_by_flag_on_the_0_18_schema_and_one_line_on_v0_1(
    tmp_path: Path, modern_url: str, migrated_url: str
) -> None:
    with psycopg.connect(modern_url, autocommit=True) as conn:
        flagged = jobs.add_job_sync(conn, S, "api", job_key="call:1", flags=["external-api", "slow"]).id
        jobs.add_job_sync(conn, S, "api")
    listed = run("jobs", "list", "--flag", "slow", "-c", modern_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t")[6:9] == ["locked_by", "key", "flags"]
    assert [line.split("\t")[:2] + line.split("\t")[7:9] for line in lines] == [
        [str(flagged), "api", "call:1", "external-api,slow"]]

    refused = run("jobs", "list", "--flag", "slow", "-c", migrated_url, cwd=tmp_path)
    assert refused.returncode == 1 and refused.stdout == ""
    line = one_line(refused.stderr)
    assert "listing jobs by flag needs graphile-worker's 0.18 schema" in line and "kongtask migrate --to latest" in line


def test_jobs_help_teaches_each_command(tmp_path: Path) -> None:
    group = run("jobs", "--help", cwd=tmp_path)
    assert group.returncode == 0
    for command in ("list", "complete", "fail", "reschedule", "unlock", "retry", "delete"):
        assert f"  {command} " in group.stdout, command
    assert "kongtask jobs reschedule 12 13 --run-at" in group.stdout and "force_unlock_workers" in group.stdout
    fail = run("jobs", "fail", "--help", cwd=tmp_path)
    assert "--reason TEXT" in fail.stdout and "Manually marked as failed" in " ".join(fail.stdout.split())
    assert "--max-attempts" in run("jobs", "reschedule", "--help", cwd=tmp_path).stdout
    missing = run("jobs", "complete", cwd=tmp_path)
    assert missing.returncode == 2 and "Missing argument 'JOB_ID...'" in one_line(missing.stderr)


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
        for args in (("jobs", "list"), ("jobs", "retry", "5"), ("jobs", "unlock", "worker-x"), ("jobs", "delete", "5"),
                     ("jobs", "complete", "5"), ("jobs", "fail", "5"), ("jobs", "reschedule", "5", "--priority", "1")):
            result = run(*args, "-c", url, "--schema", schema, cwd=tmp_path)
            assert result.returncode == 1, result.stderr
            line = one_line(result.stderr)
            assert f"no kongtask schema named {schema!r}" in line and "kongtask migrate" in line, line
