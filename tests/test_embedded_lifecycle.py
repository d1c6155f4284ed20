"""The embedded database's life: found from subfolders, stopped when its last user dies, safe as root,
listed and removed with ``kongtask embedded``."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kongtask._embedded.server import EmbeddedServer, private_temporary_home
from kongtask._embedded.project import project_home, server_in
from kongtask.errors import KongtaskError
from kongtask.settings import find_project_root
from tests.cli_support import Background, clean_env, one_line, runs, write_task
from tests.cli_support import kongtask as run
from tests.support import wait_until


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: only root runs the server as another user, who could plant links")


def _remove_embedded(project: Path) -> None:
    home = project_home(project)
    if home.exists():
        server = server_in(home)
        if server.is_running():
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder with a recording task; its embedded server is removed afterwards."""
    write_task(tmp_path / "tasks", "record")
    yield tmp_path
    _remove_embedded(tmp_path)


def env_for(project: Path, **extra: str) -> dict[str, str]:
    return clean_env(KT_TEST_OUT=str(project / "out.jsonl"), **extra)


def add(project: Path, cwd: Path | None = None, *flags: str) -> subprocess.CompletedProcess[str]:
    result = run("add-job", "record", json.dumps({"n": 1}), *flags, cwd=cwd or project, env=env_for(project))
    assert result.returncode == 0, result.stderr
    return result


def watchdogs_of(home: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kongtask._embedded.watchdog" in argv and str(home).encode() in argv:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie waiting for its parent counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


# --- 15: one database per project, whichever subfolder a command runs in ----------------------------


def test_the_project_root_is_found_the_way_git_finds_its_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "me"))
    project = tmp_path / "home" / "me" / "app"
    (project / "tasks" / "sub").mkdir(parents=True)
    (project / "src" / "deep").mkdir(parents=True)
    assert find_project_root(project / "tasks" / "sub") == project
    assert find_project_root(project / "src" / "deep") == project
    for marker in ("kongtask.toml", ".env"):
        (project / "src" / marker).write_text("")
        assert find_project_root(project / "src" / "deep") == project / "src"
        (project / "src" / marker).unlink()
    (project / "src" / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # not ours: keep looking
    assert find_project_root(project / "src" / "deep") == project
    (project / "src" / "pyproject.toml").write_text("[tool.kongtask]\njobs = 2\n")
    assert find_project_root(project / "src" / "deep") == project / "src"
    # Nothing up to the home folder: the working folder itself, and the home's parent is not searched.
    (tmp_path / "home" / "tasks").mkdir()
    lonely = tmp_path / "home" / "me" / "notes" / "x"
    lonely.mkdir(parents=True)
    assert find_project_root(lonely) == lonely


def test_add_job_in_a_subfolder_uses_the_projects_database(project: Path) -> None:
    first = add(project, project / "tasks")
    home = project_home(project)
    assert f"first run: creating the embedded PostgreSQL for {project} in {home}, about 10 s" in first.stderr
    assert not project_home(project / "tasks").exists()
    second = add(project, project / "tasks")
    assert "first run" not in second.stderr  # said once, when it is created

    result = run("worker", "--once", cwd=project, env=env_for(project))
    assert result.returncode == 0, result.stderr
    assert [r["payload"] for r in runs(project / "out.jsonl")] == [{"n": 1}, {"n": 1}]


def test_from_a_subfolder_the_projects_config_and_tasks_are_used_and_typed_paths_stay_relative(
    project: Path,
) -> None:
    (project / "kongtask.toml").write_text('schema = "from_root"\n')
    sub = project / "tasks"
    result = run("config", cwd=sub, env=env_for(project))
    assert result.returncode == 0, result.stderr
    assert f'schema = "from_root"  # schema in {project / "kongtask.toml"}' in result.stdout
    worker = run("worker", "--once", cwd=sub, env=env_for(project, DATABASE_URL="postgresql://u@127.0.0.1:1/x"))
    assert "cannot connect" in worker.stderr  # the project's tasks were found: only the database is missing
    missing = run("worker", "--once", "--tasks", "nowhere", cwd=sub, env=env_for(project))
    assert str(sub / "nowhere") in missing.stderr


def test_add_job_names_the_embedded_database_only_with_v(project: Path) -> None:
    assert "no connection configured" not in add(project).stderr
    assert "no connection configured" in add(project, None, "-v").stderr


# --- 9: a killed kongtask does not leave the server running ------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="looks for the watchdog in /proc")
def test_the_server_stops_by_itself_after_its_last_kongtask_is_killed(project: Path) -> None:
    worker = Background("worker", cwd=project, env=env_for(project))
    try:
        worker.wait_for("worker started", timeout=60)
        server = server_in(project_home(project))
        assert server.is_running()
        worker.process.kill()
        worker.process.wait(10)
        wait_until(lambda: not server.is_running(), timeout=15, what="the server to stop once no kongtask uses it")
        assert not (server.data_dir / "postmaster.pid").exists()
        wait_until(lambda: not watchdogs_of(project_home(project)), timeout=10, what="the watchdog to exit")
    finally:
        worker.kill()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="looks for the watchdog in /proc")
def test_the_watchdog_outlives_the_worker_that_started_it(project: Path) -> None:
    """A worker stops the child processes its tasks left behind when it exits, never the watchdog:
    the server must still stop by itself after the last other kongtask is killed."""
    first = Background("worker", cwd=project, env=env_for(project))
    second: Background | None = None
    try:
        first.wait_for("worker started", timeout=60)
        home = project_home(project)
        started_by_first = watchdogs_of(home)
        assert started_by_first
        second = Background("worker", cwd=project, env=env_for(project))
        second.wait_for("worker started", timeout=60)
        assert first.stop() == 0
        assert watchdogs_of(home) == started_by_first
        server = server_in(home)
        assert server.is_running()
        second.process.kill()
        second.process.wait(10)
        wait_until(lambda: not server.is_running(), timeout=15, what="the server to stop once no kongtask uses it")
    finally:
        first.kill()
        if second is not None:
            second.kill()


# --- `kongtask embedded list` and `remove` ------------------------------------------------------------


def test_embedded_list_and_remove(project: Path) -> None:
    env = env_for(project)
    add(project)
    home = project_home(project)
    listed = run("embedded", "list", cwd=project, env=env)
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split("\t") for line in listed.stdout.splitlines() if line.startswith(f"{project}\t")]
    assert row[1] == str(home / "server" / "data") and row[3] == "stopped"
    assert int(row[2].split()[0]) > 1  # MB

    worker = Background("worker", cwd=project, env=env)
    try:
        worker.wait_for("worker started", timeout=60)
        refused = run("embedded", "remove", cwd=project / "tasks", env=env)
        assert refused.returncode == 1
        assert len(refused.stderr.strip().splitlines()) == 1 and "in use" in refused.stderr, refused.stderr
        assert home.exists()
        listed = run("embedded", "list", cwd=project, env=env)
        assert f"{project}\t{home / 'server' / 'data'}\t" in listed.stdout and "running" in listed.stdout
        assert worker.stop() == 0
    finally:
        worker.kill()

    removed = run("embedded", "remove", str(project), cwd=project.parent, env=env)
    assert removed.returncode == 0, removed.stderr
    assert f"removed the embedded database of {project}" in removed.stdout
    assert not home.exists()
    again = run("embedded", "remove", cwd=project, env=env)
    assert again.returncode == 1 and "no embedded database" in again.stderr


# --- 5: as root, nothing root touches sits where the server's user can redirect it -------------------


def _as_server_user(script: str, *args: str) -> None:
    subprocess.run(["sh", "-c", script, "sh", *args], user="postgres", group="postgres", extra_groups=[],
                   capture_output=True, check=False)


def test_as_root_links_planted_by_the_server_user_are_never_followed(project: Path, tmp_path_factory) -> None:
    _needs_root()
    victim = tmp_path_factory.mktemp("victim")
    victim.chmod(0o755)
    (victim / "precious.lock").write_text("root's own")
    before = sorted(p.name for p in victim.iterdir())
    add(project)  # the home exists, the server has stopped again
    home = project_home(project)
    server_uid = pwd.getpwnam("postgres").pw_uid

    # In every folder of the server's user, the names root uses for its locks and binaries become
    # links to the victim: that user owns those folders, so it can.
    names = ("users", "locks", "binaries", "binaries-copy", "project")
    for folder, dirs, _ in os.walk(home):
        if os.lstat(folder).st_uid != server_uid:
            continue
        for name in names:
            _as_server_user('mv "$1/$2" "$1/.moved-$2" 2>/dev/null; ln -s "$3" "$1/$2"', folder, name, str(victim))

    result = run("add-job", "record", "{}", cwd=project, env=env_for(project))
    assert sorted(p.name for p in victim.iterdir()) == before, result.stderr
    assert (victim / "precious.lock").read_text() == "root's own"
    assert result.returncode == 0, result.stderr
    # Root's part stays root's, and only server/ is the server user's.
    for path in (home, home / "locks", home / "locks" / "users"):
        assert os.lstat(path).st_uid == 0 and stat.S_ISDIR(os.lstat(path).st_mode), path
    assert os.lstat(home / "server").st_uid == server_uid


def test_as_root_the_servers_log_is_not_read_through_a_planted_link(tmp_path_factory) -> None:
    _needs_root()
    secret_folder = tmp_path_factory.mktemp("secret")
    secret = secret_folder / "shadow"
    secret.write_text("TOP-SECRET-LINE")
    secret.chmod(0o600)
    parent = private_temporary_home("kongtask-log-")
    parent.chmod(0o711)
    server = EmbeddedServer(parent / "pg")
    try:
        server._prepare_home()
        _as_server_user('ln -s "$1" "$2"', str(secret), str(server.log_file))
        assert server.log_file.is_symlink()
        with pytest.raises(KongtaskError) as failure:
            server.start()  # the server cannot write its log there: it fails, and its log is shown
        assert "TOP-SECRET-LINE" not in str(failure.value)
        assert "TOP-SECRET-LINE" not in server.log_tail()
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_as_root_a_home_of_the_first_layout_is_taken_back_and_keeps_its_data(project: Path) -> None:
    _needs_root()
    add(project)
    home = project_home(project)
    server_uid, server_gid = pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid
    # The first layout: data, socket and log straight in a home of the server's user.
    shutil.rmtree(home / "locks")
    os.rename(home / "server" / "data", home / "data")
    os.rename(home / "server" / "socket", home / "socket")
    os.rename(home / "server" / "server.log", home / "server.log")
    os.rmdir(home / "server")
    (home / "users").mkdir()
    os.chown(home, server_uid, server_gid)
    os.chmod(home, 0o700)

    result = run("worker", "--once", cwd=project, env=env_for(project))
    assert result.returncode == 0, result.stderr
    assert "Completed task 1 (record)" in result.stderr  # the job added before is still there
    assert os.lstat(home).st_uid == 0 and not (home / "users").exists() and not (home / "data").exists()
    assert (home / "server" / "data" / "PG_VERSION").exists()


# --- 8: under --watch the worker holds the embedded server itself --------------------------------------


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="looks for processes in /proc")
def test_under_watch_the_worker_holds_the_embedded_server_like_any_kongtask(project: Path) -> None:
    from kongtask._embedded.project import _users
    from tests.test_watch import children_of

    home = project_home(project)
    supervisor = Background("worker", "--watch", cwd=project, env=env_for(project))
    try:
        supervisor.wait_for("worker started", timeout=60)
        [child] = children_of(supervisor.process.pid)
        child_env = (Path("/proc") / str(child) / "environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"KONGTASK_CONNECTION=", b"DATABASE_URL=")) for v in child_env)
        assert len(_users(home)) == 2  # the supervisor's hold, and the worker's own

        # The supervisor dies outright: its worker notices, stops cleanly, and lets the server go.
        supervisor.process.kill()
        wait_until(lambda: _gone(child), timeout=30, what="the orphaned worker to stop")
        server = server_in(home)
        wait_until(lambda: not server.is_running(), timeout=15, what="the server to stop")
    finally:
        supervisor.kill()


def test_a_quick_command_in_no_project_makes_no_new_database(tmp_path: Path) -> None:
    """`add-job` in a folder of no project would add its job to a database no worker uses."""
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    env = env_for(nowhere)
    try:
        result = run("add-job", "greet", cwd=nowhere, env=env)
        assert result.returncode == 1, result.stderr
        line = one_line(result.stderr)
        assert "no kongtask project" in line and "DATABASE_URL" in line
        assert not project_home(nowhere).exists()
    finally:
        _remove_embedded(nowhere)
