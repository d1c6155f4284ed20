"""``kongtask worker --watch`` end to end: edits take effect for the next job, and the command stays up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli_support import Background, clean_env, runs, write_task
from tests.cli_support import kongtask as run


def add(project: Path, env: dict[str, str], task: str, payload: dict) -> int:
    result = run("add-job", task, json.dumps(payload), cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def run_of(worker: Background, out: Path, n: int) -> dict:
    """Waits for the run of the job whose payload has ``n``, and returns it."""
    return worker.wait_until(lambda: next((r for r in runs(out) if r["payload"].get("n") == n), None), f"job n={n}")


def last_line_with(text: str, output: str) -> str:
    return [line for line in output.splitlines() if text in line][-1]


def children_of(supervisor: int) -> list[int]:
    """Processes started by the --watch supervisor with this pid (Linux /proc)."""
    marker = f"_KONGTASK_WATCH_SUPERVISOR={supervisor}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def watched(tmp_path: Path, migrated_url: str):
    """A project with an empty tasks folder, and a running `kongtask worker --watch` on it."""
    (tmp_path / "tasks").mkdir()
    env = clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(tmp_path / "out.jsonl"))
    worker = Background("worker", "--watch", cwd=tmp_path, env=env)
    try:
        yield tmp_path, env, worker
    finally:
        worker.kill()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="looks for child processes in /proc")
def test_watch_end_to_end(watched: tuple[Path, dict[str, str], Background]) -> None:
    project, env, worker = watched
    tasks, out = project / "tasks", project / "out.jsonl"

    # An empty folder: the worker cannot start, the command waits for a change.
    worker.wait_for("no task files in tasks/")
    worker.wait_for("a change in tasks/ starts it again")
    assert worker.alive()

    # Adding a task file starts a worker; its job runs.
    write_task(tasks, "record", "v1")
    worker.wait_for("worker started", 1)
    add(project, env, "record", {"n": 1})
    assert run_of(worker, out, 1)["version"] == "v1"

    # Editing the file: the next job runs the new code.
    write_task(tasks, "record", "v2")
    worker.wait_for("worker started", 2)
    add(project, env, "record", {"n": 2})
    assert run_of(worker, out, 2)["version"] == "v2"

    # A helper module in the folder counts too.
    write_task(tasks, "_version", body='VERSION = "h1"\n')
    worker.wait_for("worker started", 3)
    write_task(tasks, "record", body="""
        import json, os
        from ._version import VERSION

        def task(payload, helpers):
            with open(os.environ["KT_TEST_OUT"], "a") as out:
                out.write(json.dumps({"task": "record", "version": VERSION, "payload": payload}) + "\\n")
    """)
    worker.wait_for("worker started", 4)
    write_task(tasks, "_version", body='VERSION = "h2"\n')
    worker.wait_for("worker started", 5)
    add(project, env, "record", {"n": 3})
    assert run_of(worker, out, 3)["version"] == "h2"

    # Breaking the file: the error names file and line; the command stays up.
    write_task(tasks, "record", body="def task(payload, helpers):\n    return 1\n  oops = (\n")
    worker.wait_for(f"{tasks / 'record.py'}:3")
    worker.wait_for("the worker stopped (exit code 1)", 2)
    assert worker.alive()
    add(project, env, "record", {"n": 4})  # waits for a worker

    # Fixing it: jobs run again, the waiting one included.
    write_task(tasks, "record", "v3")
    worker.wait_for("worker started", 6)
    assert run_of(worker, out, 4)["version"] == "v3"

    # Deleting a task file: the worker starts again without it.
    write_task(tasks, "other")
    worker.wait_for("tasks other, record from", 1)
    (tasks / "other.py").unlink()
    worker.wait_for("worker started", 8)
    assert "tasks record from tasks;" in last_line_with("worker started", worker.output())
    add(project, env, "record", {"n": 5})
    assert run_of(worker, out, 5)["version"] == "v3"

    # SIGTERM: a clean exit, no worker left behind.
    supervisor = worker.process.pid
    assert len(children_of(supervisor)) == 1
    assert worker.stop(signal.SIGTERM) == 0
    assert children_of(supervisor) == []


def test_a_running_job_finishes_on_its_old_code(watched: tuple[Path, dict[str, str], Background]) -> None:
    project, env, worker = watched
    tasks, out = project / "tasks", project / "out.jsonl"
    release = project / "release"
    slow = """
        import json, os, time

        def task(payload, helpers):
            def record(event):
                with open(os.environ["KT_TEST_OUT"], "a") as out:
                    out.write(json.dumps({{"version": "{version}", "event": event, "payload": payload}}) + "\\n")
            record("started")
            deadline = time.monotonic() + 60
            while not os.path.exists({release!r}) and time.monotonic() < deadline:
                time.sleep(0.02)
            record("finished")
    """
    write_task(tasks, "slow", body=slow.format(version="old", release=str(release)))
    worker.wait_for("worker started", 1)
    add(project, env, "slow", {"n": 1})
    worker.wait_until(lambda: runs(out), "the job to start")

    # The change lands while the job runs: a new worker starts at once, the old one drains.
    write_task(tasks, "slow", body=slow.format(version="new", release=str(release)))
    worker.wait_for("worker started", 2)
    release.touch()
    worker.wait_until(lambda: len(runs(out)) == 2, "the job to finish")
    assert [(r["version"], r["event"]) for r in runs(out)] == [("old", "started"), ("old", "finished")]
    # The task records "finished" a moment before the worker logs the completion: wait for it.
    assert "Forced worker shutdown" not in worker.wait_for("Completed task")

    add(project, env, "slow", {"n": 2})
    worker.wait_until(lambda: len(runs(out)) == 4, "the next job")
    assert [(r["version"], r["event"]) for r in runs(out)[2:]] == [("new", "started"), ("new", "finished")]
    assert worker.stop(signal.SIGINT) == 0


def test_watch_needs_an_existing_tasks_folder(tmp_path: Path, migrated_url: str) -> None:
    result = run("worker", "--watch", cwd=tmp_path, env=clean_env(DATABASE_URL=migrated_url))
    assert result.returncode == 1
    assert "tasks folder" in result.stderr and "does not exist" in result.stderr


def test_watch_fails_fast_on_an_unreachable_database(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    env = clean_env(DATABASE_URL="postgresql://app:pw@127.0.0.1:1/app")
    result = run("worker", "--watch", cwd=tmp_path, env=env, timeout=30)
    assert result.returncode == 1 and "cannot connect" in result.stderr


SLEEPER = """
    import json, os, time

    def task(payload, helpers):
        with open(os.environ["KT_TEST_OUT"], "a") as out:
            out.write(json.dumps({{"event": "started", "payload": payload}}) + "\\n")
        deadline = time.monotonic() + 120
        while not os.path.exists({release!r}) and time.monotonic() < deadline:
            time.sleep(0.02)
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="looks for child processes in /proc")
def test_two_ctrl_c_stop_the_job_and_the_supervisor_waits_for_its_worker(
    watched: tuple[Path, dict[str, str], Background], migrated_url: str
) -> None:
    project, env, worker = watched
    release = project / "release"
    write_task(project / "tasks", "sleepy", body=SLEEPER.format(release=str(release)))
    worker.wait_for("worker started")
    job_id = add(project, env, "sleepy", {"n": 1})
    worker.wait_until(lambda: runs(project / "out.jsonl"), "the job to start")
    supervisor = worker.process.pid
    try:
        worker.process.send_signal(signal.SIGINT)
        worker.wait_for("SIGINT received: finishing 1 running job(s)")  # the worker has it
        worker.process.send_signal(signal.SIGINT)
        code = worker.process.wait(60)
        # The supervisor left only after its worker: none is left running the job.
        assert children_of(supervisor) == [], worker.output()
        assert code == 0, worker.output()
    finally:
        release.touch()
    with psycopg.connect(migrated_url) as conn:
        [(last_error, attempts)] = conn.execute(
            "select last_error, attempts from graphile_worker.jobs where id = %s", (job_id,)
        ).fetchall()
        queues = conn.execute("select queue_name from graphile_worker.job_queues where locked_by is not null").fetchall()
    assert "Forced worker shutdown" in last_error
    assert attempts == 1
    assert queues == []


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="looks for child processes in /proc")
def test_sighup_stops_the_supervisor_and_its_worker_cleanly(watched: tuple[Path, dict[str, str], Background]) -> None:
    project, env, worker = watched
    write_task(project / "tasks", "record")
    worker.wait_for("worker started")
    supervisor = worker.process.pid
    assert worker.stop(signal.SIGHUP) == 0, worker.output()
    assert children_of(supervisor) == []
    assert "Traceback" not in worker.output()


def test_a_reload_is_routine_and_ignores_editor_files(watched: tuple[Path, dict[str, str], Background]) -> None:
    project, env, worker = watched
    tasks = project / "tasks"
    write_task(tasks, "record", "v1")
    worker.wait_for("worker started", 1)

    # What editors leave beside a file they save, and caches: none of it is a change to the code.
    for name in (".record.py.swp", "record.py~", "#record.py#", "4913", "record.py.tmp", "notes.txt"):
        (tasks / name).write_text("x")
    os.symlink("user@host.1234", tasks / ".#record.py")  # emacs's lock file
    (tasks / "__pycache__").mkdir(exist_ok=True)
    (tasks / "__pycache__" / "record.cpython-311.pyc").write_bytes(b"x")
    write_task(tasks, "record", "v2")
    output = worker.wait_for("worker started", 2)
    add(project, env, "record", {"n": 1})
    assert run_of(worker, project / "out.jsonl", 1)["version"] == "v2"

    reloads = [line for line in worker.output().splitlines() if "reloading because" in line]
    assert len(reloads) == 1 and reloads[0].endswith("reloading because tasks/record.py changed"), output
    assert " INFO " in reloads[0]
    # The retired worker says it is reloading, not that it received SIGTERM.
    worker.wait_for("reloading: this worker finishes its running jobs")
    assert "SIGTERM" not in worker.output() and "WARNING" not in worker.output()
    assert worker.stop(signal.SIGINT) == 0


def test_a_stop_that_comes_while_a_worker_is_being_started_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal handled while the supervisor awaits the new child's start finds no child to pass it
    on to; the child must still get it, or the supervisor waits for it for ever."""
    from kongtask import _watch

    (tmp_path / "tasks").mkdir()
    started: list[int] = []
    real_exec = asyncio.create_subprocess_exec

    async def exec_then_stop(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        supervisor._on_signal(signal.SIGHUP)  # lands before the child is known
        child = await real_exec(*args, **kwargs)
        started.append(child.pid)
        return child

    monkeypatch.setattr(asyncio, "create_subprocess_exec", exec_then_stop)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    supervisor = _watch._Supervisor((tmp_path / "tasks").resolve(), sleeper, dict(os.environ), shutdown_timeout=60)

    async def scenario() -> int:
        return await asyncio.wait_for(supervisor.run(), 30)

    asyncio.run(scenario())
    assert len(started) == 1
    assert not Path(f"/proc/{started[0]}").exists() or "zombie" in Path(f"/proc/{started[0]}/status").read_text()
