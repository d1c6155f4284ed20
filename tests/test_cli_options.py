"""Options the worker and `kongtask config` take: log_success, the job expiry, numbers as TOML."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import kongtask
from tests.cli_support import clean_env, one_line, write_task
from tests.cli_support import kongtask as run

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"


def _completed_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Completed task" in line]


@pytest.mark.parametrize(
    ("args", "env", "logged"),
    [
        ([], {}, True),
        (["--no-log-success"], {}, False),
        ([], {"KONGTASK_LOG_SUCCESS": "false"}, False),
        ([], {"NO_LOG_SUCCESS": "1"}, False),
        (["--log-success"], {"NO_LOG_SUCCESS": "1"}, True),
    ],
)
def test_worker_log_success(tmp_path: Path, migrated_url: str, args: list[str], env: dict[str, str], logged: bool) -> None:
    write_task(tmp_path / "tasks", "record")
    environment = clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(tmp_path / "out.jsonl"), **env)
    assert run("add-job", "record", cwd=tmp_path, env=environment).returncode == 0
    worked = run("worker", "--once", *args, cwd=tmp_path, env=environment)
    assert worked.returncode == 0, worked.stderr
    assert len(_completed_lines(worked.stderr)) == (1 if logged else 0), worked.stderr


def test_library_log_success_argument_wins_over_no_log_success(
    migrated_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ok(payload: object, helpers: object) -> None:
        pass

    async def one_job(**options: object) -> list[str]:
        caplog.clear()
        await kongtask.add_job("ok", connection_string=migrated_url)
        await kongtask.run_once(task_list={"ok": ok}, connection_string=migrated_url, **options)  # type: ignore[arg-type]
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Completed task ")]

    caplog.set_level(logging.INFO)
    assert asyncio.run(one_job(log_success=False)) == []
    monkeypatch.setenv("NO_LOG_SUCCESS", "1")
    assert len(asyncio.run(one_job(log_success=True))) == 1
    assert asyncio.run(one_job()) == []  # not said: upstream's variable decides


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--job-expiry", "30"], {}), (["--job-expiry", "20", "--heartbeat-interval", "25"], {}),
     ([], {"KONGTASK_HEARTBEAT_INTERVAL": "120"})],
)
def test_job_expiry_not_above_the_heartbeat_is_a_usage_error(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    write_task(tmp_path / "tasks", "record")
    result = run("worker", "--once", *args, cwd=tmp_path, env=clean_env(DATABASE_URL=UNREACHABLE, **env))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("kongtask: error:") and "heartbeat interval" in line and "cannot connect" not in line


@pytest.mark.parametrize("mode", ["--once", "--watch"])
def test_tasks_given_as_a_file_is_named_a_file(tmp_path: Path, mode: str) -> None:
    task = write_task(tmp_path / "tasks", "record")
    result = run("worker", mode, "--tasks", str(task), cwd=tmp_path, env=clean_env(DATABASE_URL=UNREACHABLE))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "is a file, not a folder" in line and "does not exist" not in line


def test_config_prints_numbers_bare_as_toml_would(tmp_path: Path) -> None:
    result = run("config", "--job-expiry", "90", cwd=tmp_path, env=clean_env(KONGTASK_SHUTDOWN_TIMEOUT="7"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "job_expiry = 90  # --job-expiry" in lines
    assert "shutdown_timeout = 7.0  # KONGTASK_SHUTDOWN_TIMEOUT" in lines
    assert "heartbeat_interval = 30.0  # default" in lines
    assert "log_success = true  # default" in lines
    assert not [line for line in lines if line.split(" = ")[0] in {"job_expiry", "poll_interval", "jobs"} and '"' in line]
