"""`kongtask add-jobs`: JSON lines in, every job added in one transaction, `added N jobs` out; a bad
line is one usage error naming its line number (exit 2), and nothing is written."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from kongtask._embedded.project import project_home
from tests.cli_support import clean_env, one_line, write_task
from tests.cli_support import kongtask as run

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"

GOOD_LINES = [
    '{"task": "record", "payload": {"to": "a@example.com"}}',
    "",
    '{"task": "record", "queue": "mail", "run_at": "2030-01-31T09:00:00Z", "max_attempts": 3}',
    "   ",
    '{"task": "record", "payload": [1, "two"], "queue": "mail"}',
]




def _rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select task_identifier, payload, queue_name, run_at, max_attempts from graphile_worker.jobs order by id"
        ).fetchall()


def test_add_jobs_adds_every_line_of_standard_input(project: Path, migrated_url: str) -> None:
    result = run("add-jobs", cwd=project, env=clean_env(DATABASE_URL=migrated_url), input="\n".join(GOOD_LINES))
    assert (result.returncode, result.stdout, result.stderr) == (0, "added 3 jobs\n", "")
    first, second, third = _rows(migrated_url)
    assert first[:2] == ("record", {"to": "a@example.com"}) and first[4] == 25
    assert second == ("record", {}, "mail", datetime(2030, 1, 31, 9, tzinfo=timezone.utc), 3)
    assert third[:3] == ("record", [1, "two"], "mail")
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute(
            "select job_count from graphile_worker.job_queues where queue_name = 'mail'").fetchone() == (2,)


def test_add_jobs_reads_a_file_and_warns_once_of_tasks_without_a_file(project: Path, migrated_url: str) -> None:
    lines = project / "jobs.jsonl"
    lines.write_text("".join(f'{{"task": "{task}"}}\r\n' for task in ("record", "ghost", "ghost", "phantom")))
    result = run("add-jobs", "--file", str(lines), cwd=project, env=clean_env(DATABASE_URL=migrated_url))
    assert (result.returncode, result.stdout) == (0, "added 4 jobs\n")
    assert "no task file in tasks for ghost, phantom" in one_line(result.stderr)
    assert [row[0] for row in _rows(migrated_url)] == ["record", "ghost", "ghost", "phantom"]


# (the bad line, a fragment of the error after "line 4: ")
BAD_LINES = {
    "not JSON": ('{"task": "record"', "not valid JSON"),
    "not an object": ('["record"]', "expected a JSON object, got an array"),
    "an unknown key": ('{"task": "record", "queue_name": "mail"}', "unknown key 'queue_name'; the keys are task,"),
    "no task": ('{"payload": {}}', 'no "task"'),
    "an empty task": ('{"task": ""}', "task identifier must be a non-empty string"),
    "a queue that is not a string": ('{"task": "record", "queue": 7}', '"queue" must be a string, got a number'),
    "a run_at that is not a time": ('{"task": "record", "run_at": "soon"}', "'soon' is not an ISO 8601 time"),
    "a run_at past year 9999": ('{"task": "record", "run_at": "9999-12-31T23:59:59-05:00"}', "outside years 1 to"),
    "max_attempts zero": ('{"task": "record", "max_attempts": 0}', "max_attempts must be a whole number from 1"),
    "max_attempts not whole": ('{"task": "record", "max_attempts": 2.5}', "max_attempts must be a whole number"),
    "a lone surrogate": ('{"task": "record", "payload": "\\ud800"}', "lone surrogate"),
    "a 129-character queue": ('{"task": "record", "queue": "' + "q" * 129 + '"}', "at most 128"),
}


@pytest.mark.parametrize(("bad", "fragment"), BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_bad_line_is_one_error_naming_it_and_nothing_is_written(
    project: Path, migrated_url: str, bad: str, fragment: str
) -> None:
    text = "\n".join(['{"task": "record"}', "", '{"task": "record"}', bad, '{"task": "record"}'])
    result = run("add-jobs", cwd=project, env=clean_env(DATABASE_URL=migrated_url), input=text)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("kongtask: error: line 4: ") and fragment in line, line
    assert "see 'kongtask add-jobs --help'" in line
    assert _rows(migrated_url) == []


def test_a_bad_line_is_found_before_connecting_or_starting_a_server(project: Path) -> None:
    text = '{"task": "record"}\n{"task": "record", "max_attempts": -1}'
    for env in (clean_env(DATABASE_URL=UNREACHABLE), clean_env()):
        result = run("add-jobs", cwd=project, env=env, input=text)
        assert result.returncode == 2 and "line 2: max_attempts" in one_line(result.stderr)
    assert not project_home(project).exists()


def test_a_line_that_is_not_utf8_is_named(project: Path, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b'{"task": "record"}\n{"task": "r\xe9cord"}\n')
    result = run("add-jobs", "--file", str(path), cwd=project, env=clean_env(DATABASE_URL=UNREACHABLE))
    assert result.returncode == 2
    assert "line 2: not UTF-8 text (byte 0xe9 at column 12); save the file as UTF-8" in one_line(result.stderr)


def test_a_file_that_cannot_be_read_is_a_usage_error(project: Path) -> None:
    result = run("add-jobs", "--file", str(project / "missing.jsonl"), cwd=project,
                 env=clean_env(DATABASE_URL=UNREACHABLE))
    assert result.returncode == 2 and "--file: cannot read" in one_line(result.stderr)


def test_empty_input_adds_nothing_and_says_so(project: Path, migrated_url: str) -> None:
    for text in ("", "\n  \n\n"):
        result = run("add-jobs", cwd=project, env=clean_env(DATABASE_URL=migrated_url), input=text)
        assert (result.returncode, result.stdout, result.stderr) == (0, "added 0 jobs\n", "")
    assert _rows(migrated_url) == []


def test_a_failure_in_the_database_writes_nothing(project: Path, migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("alter table graphile_worker.jobs add constraint no_poison check (task_identifier <> 'poison')")
    text = "\n".join(json.dumps({"task": "record", "payload": {"i": i}}) for i in range(12_000))
    result = run("add-jobs", cwd=project, env=clean_env(DATABASE_URL=migrated_url), input=text + '\n{"task": "poison"}')
    assert result.returncode == 1 and "no_poison" in result.stderr
    assert _rows(migrated_url) == []


def test_add_jobs_uses_the_schema_option(project: Path, migrated_url: str) -> None:
    env = clean_env(DATABASE_URL=migrated_url, KONGTASK_SCHEMA="bulk")
    assert run("migrate", cwd=project, env=env).returncode == 0
    result = run("add-jobs", cwd=project, env=env, input='{"task": "record"}\n')
    assert result.stdout == "added 1 job\n"
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("select count(*) from bulk.jobs").fetchone() == (1,)
    assert _rows(migrated_url) == []


def test_help_teaches_by_example(project: Path) -> None:
    result = run("add-jobs", "--help", cwd=project)
    assert result.returncode == 0
    assert "| kongtask add-jobs" in result.stdout and '"task": "send_email"' in result.stdout
    assert "kongtask add-jobs --file jobs.jsonl" in run("--help", cwd=project).stdout


@pytest.mark.parametrize("command", ["add-jobs", "add-job"])
def test_jobs_postgresql_refuses_are_one_line_and_none_is_added(project: Path, migrated_url: str, command: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        # The user's own rule on the table, refusing one of the jobs.
        conn.execute("alter table graphile_worker.jobs add constraint no_spam check (task_identifier <> 'spam')")
    write_task(project / "tasks", "spam")
    lines = '{"task": "record"}\n{"task": "spam"}\n'
    args = ("add-jobs",) if command == "add-jobs" else ("add-job", "spam")
    result = run(*args, cwd=project, env=clean_env(DATABASE_URL=migrated_url), input=lines)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "PostgreSQL refused it" in line and "no_spam" in line and "Traceback" not in result.stderr
    assert _rows(migrated_url) == []


def test_a_file_saved_with_a_byte_order_mark_is_read(project: Path, migrated_url: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"task": "record"}\n')
    result = run("add-jobs", "--file", str(path), cwd=project, env=clean_env(DATABASE_URL=migrated_url))
    assert (result.returncode, result.stdout) == (0, "added 1 job\n"), result.stderr
