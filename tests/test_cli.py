"""The ``kongtask`` command end to end: each test runs the real entry point against a real database."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import kongtask
from kongtask._embedded.server import EmbeddedServer
from tests.cli_support import Background, clean_env, one_line, runs, write_task
from tests.cli_support import kongtask as run
from tests.support import wait_until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with a recording task ``record`` in tasks/."""
    write_task(tmp_path / "tasks", "record")
    return tmp_path


def env_for(project: Path, url: str | None = None, **extra: str) -> dict[str, str]:
    env = clean_env(KT_TEST_OUT=str(project / "out.jsonl"), **extra)
    if url is not None:
        env["DATABASE_URL"] = url
    return env


def jobs_in(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select id, task_identifier, payload, queue_name, run_at, max_attempts, attempts "
            "from graphile_worker.jobs order by id"
        ).fetchall()


# --- basic commands ---------------------------------------------------------------------------------


def test_migrate_add_job_and_worker_once_run_the_job_with_its_payload(project: Path, db_url: str) -> None:
    env = env_for(project, db_url)
    migrated = run("migrate", cwd=project, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 000001" in migrated.stderr

    added = run("add-job", "record", '{"to": "ada@example.com", "n": [1, 2]}', cwd=project, env=env)
    assert added.returncode == 0, added.stderr
    job_id = int(added.stdout.strip())
    assert [row[0] for row in jobs_in(db_url)] == [job_id]

    worked = run("worker", "--once", cwd=project, env=env)
    assert worked.returncode == 0, worked.stderr
    assert f"Completed task {job_id} (record)" in worked.stderr
    [record] = runs(project / "out.jsonl")
    assert record == {"task": "record", "version": "v1", "payload": {"to": "ada@example.com", "n": [1, 2]}}
    assert jobs_in(db_url) == []


def test_add_job_prints_only_the_new_jobs_id(project: Path, migrated_url: str) -> None:
    first = run("add-job", "record", cwd=project, env=env_for(project, migrated_url))
    second = run("add-job", "record", "-", cwd=project, env=env_for(project, migrated_url), input='{"from": "stdin"}')
    assert first.returncode == second.returncode == 0
    assert re.fullmatch(r"\d+\n", first.stdout) and re.fullmatch(r"\d+\n", second.stdout)
    rows = jobs_in(migrated_url)
    assert [r[0] for r in rows] == [int(first.stdout), int(second.stdout)]
    assert [r[2] for r in rows] == [{}, {"from": "stdin"}]


def test_add_job_options_reach_the_job_row(project: Path, migrated_url: str) -> None:
    result = run(
        "add-job", "record", '{"a": 1}', "--queue", "emails", "--run-at", "2031-02-03T04:05:06Z",
        "--max-attempts", "3", cwd=project, env=env_for(project, migrated_url),
    )
    assert result.returncode == 0, result.stderr
    [(job_id, task, payload, queue, run_at, max_attempts, attempts)] = jobs_in(migrated_url)
    assert (job_id, task, payload, queue) == (int(result.stdout), "record", {"a": 1}, "emails")
    assert run_at == datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert (max_attempts, attempts) == (3, 0)


def test_worker_runs_jobs_until_sigterm_then_exits_0(project: Path, migrated_url: str) -> None:
    env = env_for(project, migrated_url)
    worker = Background("worker", "--jobs", "2", "--poll-interval", "60000", cwd=project, env=env)
    try:
        worker.wait_for("worker started")
        for n in range(3):
            assert run("add-job", "record", json.dumps({"n": n}), cwd=project, env=env).returncode == 0
        # A poll interval of a minute: the jobs start because LISTEN/NOTIFY wakes the worker.
        worker.wait_until(lambda: len(runs(project / "out.jsonl")) == 3, "three jobs to run")
        assert sorted(r["payload"]["n"] for r in runs(project / "out.jsonl")) == [0, 1, 2]
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        worker.kill()


def test_example_tasks_run(tmp_path: Path, migrated_url: str) -> None:
    env = env_for(tmp_path, migrated_url)
    env.pop("SMTP_HOST", None)
    tasks = str(REPO / "tasks")
    welcome = run("add-job", "welcome_user", '{"email": "ada@example.com", "name": "Ada"}', cwd=tmp_path, env=env)
    assert welcome.returncode == 0
    assert run("add-job", "send_email", '{"to": ["a@example.com", "b@example.com"], "subject": "Hi"}',
               cwd=tmp_path, env=env).returncode == 0
    result = run("worker", "--once", "--tasks", tasks, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "welcomed ada@example.com" in result.stderr
    for address in ("ada@example.com", "a@example.com", "b@example.com"):
        assert "not sending: " in result.stderr and f"to {address}" in result.stderr
    # What is left is the follow-up email, due in three days.
    [left] = jobs_in(migrated_url)
    assert left[1] == "send_email" and left[2]["subject"] == "A tip for your first week"


def test_version_and_help(tmp_path: Path) -> None:
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"kongtask {kongtask.__version__}"
    top = run("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("worker", "add-job", "migrate"):
        assert command in top.stdout
    expected = {
        "worker": ["--connection", "DATABASE_URL", "KONGTASK_CONNECTION", "--schema", "KONGTASK_SCHEMA",
                   "--jobs", "KONGTASK_JOBS", "--poll-interval", "KONGTASK_POLL_INTERVAL", "--once",
                   "KONGTASK_ONCE", "--watch", "KONGTASK_WATCH", "--tasks", "KONGTASK_TASKS",
                   "--shutdown-timeout", "KONGTASK_SHUTDOWN_TIMEOUT", "--log-level", "KONGTASK_LOG_LEVEL",
                   "--verbose", "--log-format", "KONGTASK_LOG_FORMAT", "--config", "--env-file"],
        "add-job": ["--queue", "KONGTASK_QUEUE", "--run-at", "KONGTASK_RUN_AT", "--max-attempts",
                    "KONGTASK_MAX_ATTEMPTS", "PAYLOAD_JSON", "--connection"],
        "migrate": ["--connection", "--schema", "KONGTASK_SCHEMA"],
    }
    for command, words in expected.items():
        helped = run(command, "--help", cwd=tmp_path)
        assert helped.returncode == 0
        text = " ".join(helped.stdout.split())
        for word in words:
            assert word in text, f"{word} missing from kongtask {command} --help"


def test_json_log_format_writes_one_json_object_per_line(project: Path, migrated_url: str) -> None:
    env = env_for(project, migrated_url)
    write_task(project / "tasks", "boom", body="def task(payload, helpers):\n    raise ValueError('no luck')\n")
    assert run("add-job", "record", cwd=project, env=env).returncode == 0
    assert run("add-job", "boom", "--queue", "q", "--max-attempts", "3", cwd=project, env=env).returncode == 0
    result = run("worker", "--once", "--log-format", "json", cwd=project, env=env)
    assert result.returncode == 0
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(e["message"].startswith("Completed task") and e["level"] == "info" for e in entries)
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    # A job's lines carry its facts as fields, for log search without parsing messages.
    [failed] = [e for e in entries if e["message"].startswith("Failed task")]
    assert {k: failed[k] for k in ("task", "queue", "attempt", "max_attempts", "error")} == {
        "task": "boom", "queue": "q", "attempt": 1, "max_attempts": 3, "error": "no luck"
    }
    assert isinstance(failed["job_id"], int) and isinstance(failed["duration_ms"], float)


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_passwords_never_appear_in_output(project: Path, migrated_url: str) -> None:
    password = urlsplit(migrated_url).password
    url = migrated_url if password else _with_password(migrated_url, password := "hunter2-secret")
    env = env_for(project, url)
    outputs = [
        run("add-job", "record", "-vv", cwd=project, env=env),
        run("worker", "--once", "-vv", cwd=project, env=env),
        run("config", cwd=project, env=env),
        run("worker", "--once", "-c", _with_password("postgresql://someone@127.0.0.1:1/db", password),
            cwd=project, env=env),
    ]
    assert [o.returncode for o in outputs] == [0, 0, 0, 1]
    for output in outputs:
        assert password not in output.stdout + output.stderr


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["worker", "--bogus"], "--bogus"),
        (["worker", "--jobs", "none"], "--jobs"),
        (["worker", "--jobs", "0"], "--jobs"),
        (["worker", "--poll-interval", "-5"], "--poll-interval"),
        (["worker", "--log-format", "xml"], "--log-format"),
        (["add-job"], "TASK"),
        (["add-job", "record", "--run-at", "next tuesday"], "--run-at"),
        (["add-job", "record", "--max-attempts", "0"], "--max-attempts"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_flags_exit_2_with_one_line(project: Path, args: list[str], fragment: str) -> None:
    result = run(*args, cwd=project, env=env_for(project, "postgresql://nobody@127.0.0.1:1/none"))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("kongtask: error:") and fragment in line
    assert "Traceback" not in result.stderr


def test_watch_with_once_is_a_usage_error(project: Path) -> None:
    result = run("worker", "--watch", "--once", cwd=project, env=env_for(project, "postgresql://x@127.0.0.1:1/x"))
    assert result.returncode == 2
    assert "--watch and --once" in one_line(result.stderr)


def test_add_job_with_bad_json_exits_2_and_names_the_problem(project: Path) -> None:
    result = run("add-job", "record", "{to: 1}", cwd=project, env=env_for(project, "postgresql://x@127.0.0.1:1/x"))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "PAYLOAD_JSON" in line and "not valid JSON" in line and "line 1 column 2" in line


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers: a server that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "expected", "code"),
    [
        ("postgresql://app:s3cret-pw@127.0.0.1:1/app", "cannot connect", 1),  # nothing listens there
        ("postgresql://app:s3cret-pw@127.0.0.1:{silent}/app", "cannot connect", 1),  # never answers
        # A value that cannot be a connection string is a usage error, named by its flag.
        ("postgresql://app:s3cret-pw@[not-a-host/app", "invalid value for --connection", 2),
        ("definitely not a url password=s3cret-pw", "invalid value for --connection", 2),
    ],
)
@pytest.mark.parametrize("command", [["worker", "--once"], ["migrate"], ["add-job", "record"]])
def test_unreachable_or_malformed_database_fails_with_one_line_within_10_seconds(
    project: Path, url: str, expected: str, code: int, command: list[str], silent_port: int
) -> None:
    started = time.monotonic()
    result = run(*command, "--connection", url.format(silent=silent_port), cwd=project, env=env_for(project), timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == code
    line = one_line(result.stderr)
    assert line.startswith("kongtask: error:") and expected in line
    assert "s3cret-pw" not in result.stderr
    assert elapsed < 10


@pytest.mark.parametrize(
    "url", ["postgresql://app:s3cret-pw@[not-a-host/app", "postgresql://app:s3cret-pw@no-such-host.invalid/app"]
)
def test_continuous_worker_fails_at_once_on_a_url_that_cannot_work(project: Path, url: str) -> None:
    started = time.monotonic()
    result = run("worker", "--connection", url, cwd=project, env=env_for(project), timeout=30)
    # A usage error when it cannot be read at all, a runtime one when its host does not resolve.
    assert result.returncode == (2 if "[" in url else 1) and time.monotonic() - started < 10
    assert one_line(result.stderr).startswith("kongtask: error:")


def test_continuous_worker_waits_for_a_server_that_is_not_up_yet(project: Path, private_server: EmbeddedServer) -> None:
    # The server's socket path is known before it starts: the worker is pointed at it first.
    worker = Background("worker", "--connection", private_server.url, cwd=project, env=env_for(project))
    try:
        worker.wait_for("cannot connect to PostgreSQL", timeout=30)
        worker.wait_for("waiting for it, retrying with backoff", timeout=30)
        assert worker.alive()
        url = private_server.start()
        worker.wait_for("worker started", timeout=60)
        # The wait is said once (and once a minute), not on every try.
        assert worker.output().count("cannot connect to PostgreSQL") == 1, worker.output()
        assert "PostgreSQL answered after" in worker.output()
        assert run("add-job", "record", '{"late": true}', "--connection", url, cwd=project, env=env_for(project)).returncode == 0
        wait_until(lambda: [r["payload"] for r in runs(project / "out.jsonl")] == [{"late": True}], timeout=30,
                   what="the job added once the server came up")
    finally:
        assert worker.stop() == 0


def test_missing_tasks_folder_is_named(tmp_path: Path) -> None:
    result = run("worker", "--once", cwd=tmp_path, env=env_for(tmp_path, "postgresql://x@127.0.0.1:1/x"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "tasks folder" in line and str(tmp_path / "tasks") in line and "--tasks" in line


def test_tasks_folder_without_tasks_is_named(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "_helpers.py").write_text("X = 1\n")
    result = run("worker", "--once", cwd=tmp_path, env=env_for(tmp_path, "postgresql://x@127.0.0.1:1/x"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "no task files in tasks/" in line and "def task(payload, helpers)" in line


def test_broken_task_file_is_named_with_its_line(project: Path) -> None:
    write_task(project / "tasks", "broken", body="def task(payload, helpers):\n    return (\n")
    result = run("worker", "--once", cwd=project, env=env_for(project, "postgresql://x@127.0.0.1:1/x"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"{project / 'tasks' / 'broken.py'}:2" in line


def test_a_bug_keeps_its_traceback(project: Path, migrated_url: str) -> None:
    # An exception kongtask did not raise on purpose is shown whole (password masked), exit code 1.
    script = (
        "import sys, kongtask.cli as c\n"
        "def boom(*a, **k): raise RuntimeError('postgresql://u:topsecret@h/db exploded')\n"
        "c._load_tasks = boom\n"
        "c.main(['worker', '--once'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=project, env=env_for(project, migrated_url),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError" in result.stderr
    assert "topsecret" not in result.stderr
