"""`kongtask add-job`: every bad value is a usage error (one line, exit 2) found before anything is
written or any server is started; a job for a task this project has no file for is added, with a
warning."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from kongtask._embedded.project import project_home
from tests.cli_support import clean_env, one_line, write_task
from tests.cli_support import kongtask as run

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"

# (arguments after `add-job`, standard input, a fragment of the one error line)
BAD_ADD_JOBS = {
    "a payload number past Python's 4300-digit limit": (["record", '{"n": ' + "7" * 5000 + "}"], None, "PAYLOAD_JSON"),
    "a lone surrogate in the payload": (["record", '{"text": "\\ud800"}'], None, "surrogate"),
    "a payload nested 100,000 levels deep": (["record", "-"], "[" * 100_000 + "]" * 100_000, "PAYLOAD_JSON"),
    "max_attempts beyond int4": (["record", "--max-attempts", "99999999999"], None, "--max-attempts"),
    "a 10,000-character queue name": (["record", "--queue", "q" * 10_000], None, "128"),
    "a 129-character task identifier": (["t" * 129], None, "128"),
    "an empty task identifier": ([""], None, "TASK"),
    "run_at in year 10000 in UTC": (["record", "--run-at", "9999-12-31T23:59:59-05:00"], None, "--run-at"),
    "run_at BC in UTC": (["record", "--run-at", "0001-01-01T00:00:00+01:00"], None, "--run-at"),
    "run_at infinity": (["record", "--run-at", "infinity"], None, "--run-at"),
    "run_at -infinity": (["record", "--run-at", "-infinity"], None, "--run-at"),
}




def _usage_error(result: object, fragment: str) -> str:
    assert result.returncode == 2, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    line = one_line(result.stderr)  # type: ignore[attr-defined]
    assert line.startswith("kongtask: error:") and fragment in line, line
    return line


@pytest.mark.parametrize(("args", "stdin", "fragment"), BAD_ADD_JOBS.values(), ids=BAD_ADD_JOBS.keys())
def test_bad_add_job_values_are_usage_errors_found_before_connecting(
    project: Path, args: list[str], stdin: str | None, fragment: str
) -> None:
    result = run("add-job", *args, cwd=project, env=clean_env(DATABASE_URL=UNREACHABLE), input=stdin)
    line = _usage_error(result, fragment)
    assert "cannot connect" not in line


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [BAD_ADD_JOBS[k] for k in ("a lone surrogate in the payload", "run_at in year 10000 in UTC", "run_at BC in UTC")],
)
def test_bad_add_job_values_write_nothing(
    project: Path, migrated_url: str, args: list[str], stdin: str | None, fragment: str
) -> None:
    _usage_error(run("add-job", *args, cwd=project, env=clean_env(DATABASE_URL=migrated_url), input=stdin), fragment)
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (0,)


def test_a_bad_value_does_not_start_the_embedded_server(project: Path) -> None:
    result = run("add-job", "record", "--max-attempts", "99999999999", cwd=project, env=clean_env())
    _usage_error(result, "--max-attempts")
    assert not project_home(project).exists()


def test_max_attempts_at_the_int4_limit_is_accepted(project: Path, migrated_url: str) -> None:
    result = run("add-job", "record", "--max-attempts", "2147483647", "--queue", "q" * 128, cwd=project,
                 env=clean_env(DATABASE_URL=migrated_url))
    assert result.returncode == 0, result.stderr
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("select max_attempts, queue_name from graphile_worker.jobs").fetchall() == [
            (2147483647, "q" * 128)
        ]


# --- jobs for tasks this project has no file for ------------------------------------------------------


def _task_identifiers(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("select task_identifier from graphile_worker.jobs order by id")]


def test_add_job_for_a_task_without_a_file_warns_but_adds_it(project: Path, migrated_url: str) -> None:
    result = run("add-job", "ghost", cwd=project, env=clean_env(DATABASE_URL=migrated_url))
    assert result.returncode == 0, result.stderr
    assert int(result.stdout)
    line = one_line(result.stderr)
    assert "no task file tasks/ghost.py here" in line
    assert "a worker without a task named 'ghost' will never run this job" in line
    assert _task_identifiers(migrated_url) == ["ghost"]


def test_add_job_for_a_task_with_a_file_does_not_warn(project: Path, migrated_url: str) -> None:
    write_task(project / "tasks", "report.v2")
    env = clean_env(DATABASE_URL=migrated_url)
    for task in ("record", "report.v2"):
        result = run("add-job", task, json.dumps({"for": task}), cwd=project, env=env)
        assert result.returncode == 0 and result.stderr == "", result.stderr
    assert _task_identifiers(migrated_url) == ["record", "report.v2"]


def test_add_job_without_a_tasks_folder_does_not_warn(tmp_path: Path, migrated_url: str) -> None:
    result = run("add-job", "ghost", cwd=tmp_path, env=clean_env(DATABASE_URL=migrated_url))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_add_job_looks_in_the_configured_tasks_folder(project: Path, migrated_url: str) -> None:
    write_task(project / "elsewhere", "ghost")
    env = clean_env(DATABASE_URL=migrated_url)
    assert run("add-job", "ghost", "--tasks", "elsewhere", cwd=project, env=env).stderr == ""
    warned = run("add-job", "record", cwd=project, env=clean_env(DATABASE_URL=migrated_url, KONGTASK_TASKS="elsewhere"))
    assert "no task file elsewhere/record.py here" in one_line(warned.stderr)
