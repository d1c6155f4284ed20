"""Tasks that fork, spawn processes or use multiprocessing never affect the worker, and what they
leave running ends with it."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import psycopg

from tests.cli_support import Background, clean_env, runs, write_task

RECORD = """
import json, os

def record(name, **extra):
    with open(os.environ["KT_TEST_OUT"], "a") as out:
        out.write(json.dumps({"task": name, **extra}) + "\\n")

def note_pid(pid):
    with open(os.environ["KT_TEST_PIDS"], "a") as out:
        out.write(f"{pid}\\n")
"""

TASKS = {
    # A pool, used and terminated: terminate() sends SIGTERM to its workers.
    "fork_pool": """
        import multiprocessing, os

        def square(x):
            note_pid(os.getpid())
            return x * x

        def task(payload, helpers):
            pool = multiprocessing.get_context("fork").Pool(2)
            squares = pool.map(square, range(6))
            pool.terminate()
            pool.join()
            record("fork_pool", squares=squares)
    """,
    # A pool left open, and kept alive by the module: its workers outlive the job.
    "fork_pool_open": """
        import multiprocessing, os

        POOLS = []

        def square(x):
            note_pid(os.getpid())
            return x * x

        def task(payload, helpers):
            pool = multiprocessing.get_context("fork").Pool(2)
            POOLS.append(pool)
            record("fork_pool_open", squares=pool.map(square, range(6)))
    """,
    # A forked child that receives SIGTERM: under the worker's inherited signal wake-up socket,
    # this reached the worker's event loop as the worker's own SIGTERM, every time.
    "self_sigterm": """
        import multiprocessing, os, signal

        def child():
            note_pid(os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)

        def task(payload, helpers):
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
            process.join(30)
            record("self_sigterm", exitcode=process.exitcode)
    """,
    # A process that never ends, not a daemon: multiprocessing's exit handler would join it.
    "mp_process": """
        import multiprocessing, os, time

        def child():
            note_pid(os.getpid())
            time.sleep(1000)

        def task(payload, helpers):
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
            record("mp_process")
    """,
    "popen_sleep": """
        import subprocess

        def task(payload, helpers):
            note_pid(subprocess.Popen(["sleep", "1000"]).pid)
            record("popen_sleep")
    """,
    "slow": """
        import asyncio

        async def task(payload, helpers):
            await asyncio.sleep(0.5)
            record("slow")
    """,
}

JOBS = ["self_sigterm", "fork_pool", "slow", "fork_pool_open", "popen_sleep", "slow", "self_sigterm",
        "mp_process", "fork_pool", "slow", "popen_sleep", "fork_pool_open", "slow", "self_sigterm"]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_forking_tasks_neither_stop_the_worker_nor_outlive_it(tmp_path: Path, migrated_url: str) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, body in TASKS.items():
        write_task(tasks, name, body=RECORD + textwrap.dedent(body))
    out, pids = tmp_path / "out.jsonl", tmp_path / "pids"
    env = clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(out), KT_TEST_PIDS=str(pids))
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for name in JOBS:
            conn.execute("select graphile_worker.add_job(%s, '{}'::json)", (name,))

    worker = Background("worker", "--jobs", "2", cwd=tmp_path, env=env)
    try:
        worker.wait_until(lambda: len(runs(out)) == len(JOBS) or "SIGTERM received" in worker.output(),
                          "every job to run", timeout=90)
        assert "SIGTERM received" not in worker.output(), "a task's child reached the worker's signal handler"
        assert sorted(r["task"] for r in runs(out)) == sorted(JOBS)
        with psycopg.connect(migrated_url) as conn:
            assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (0,)
        assert all(r["exitcode"] == -signal.SIGTERM for r in runs(out) if r["task"] == "self_sigterm")
        assert all(r["squares"] == [0, 1, 4, 9, 16, 25] for r in runs(out) if "squares" in r)
        assert worker.alive()

        assert worker.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        worker.kill()
    output = worker.output()
    assert output.count("SIGTERM received") == 1, output
    # The two `sleep` processes at least; the pools' workers multiprocessing may stop itself.
    stopped = [line for line in output.splitlines() if "child process(es) that tasks had left running" in line]
    assert len(stopped) == 1 and int(stopped[0].split("stopped ")[1].split()[0]) >= 2, output
    leftover = [pid for pid in map(int, pids.read_text().split()) if _alive(pid)]
    assert leftover == [], f"processes started by tasks outlived the worker: {leftover}\n{output}"


def test_a_pool_forked_by_a_task_dies_of_sigterm_like_any_process(tmp_path: Path, migrated_url: str) -> None:
    # The children got the worker's signal handlers, which made SIGTERM a no-op for them: a
    # pool's terminate() then relied on its workers reading their stop message.
    tasks = tmp_path / "tasks"
    write_task(tasks, "handlers", body="""
        import json, multiprocessing, os, signal

        def report(path):
            with open(path, "w") as out:
                json.dump({"sigterm": str(signal.getsignal(signal.SIGTERM)),
                           "sigint": str(signal.getsignal(signal.SIGINT)),
                           "wakeup_fd": signal.set_wakeup_fd(-1)}, out)

        def task(payload, helpers):
            process = multiprocessing.get_context("fork").Process(target=report, args=(os.environ["KT_TEST_OUT"],))
            process.start()
            process.join(30)
    """)
    out = tmp_path / "handlers.json"
    env = clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(out))
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('handlers', '{}'::json)")
    worker = Background("worker", cwd=tmp_path, env=env)
    try:
        worker.wait_until(out.exists, "the child's report", timeout=60)
        worker.wait_until(lambda: out.read_text().endswith("}"), "the child's report")
        seen = json.loads(out.read_text())
        assert seen == {"sigterm": str(signal.SIG_DFL), "sigint": str(signal.default_int_handler), "wakeup_fd": -1}
        assert worker.stop() == 0
    finally:
        worker.kill()


def test_a_thread_a_task_left_running_cannot_hold_the_worker_at_exit(tmp_path: Path, migrated_url: str) -> None:
    write_task(tmp_path / "tasks", "spin", body="""
        import os, threading, time

        def task(payload, helpers):
            threading.Thread(target=time.sleep, args=(1000,), daemon=False).start()  # joined at exit
            open(os.environ["KT_TEST_OUT"], "w").close()
    """)
    out = tmp_path / "started"
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('spin', '{}'::json)")
    worker = Background("worker", cwd=tmp_path, env=clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(out)))
    try:
        worker.wait_until(out.exists, "the task to start its thread", timeout=60)
        assert worker.stop(timeout=60) == 0
    finally:
        worker.kill()
    assert "exit took over" in worker.output()


SPAWNING_TASK = """
import multiprocessing

def square(n):
    return n * n

def task(payload, helpers):
    with multiprocessing.get_context(payload["method"]).Pool(2) as pool:
        squares = pool.map(square, range(5))
    helpers.logger.info("%s pool: %s", payload["method"], squares)
    assert squares == [0, 1, 4, 9, 16]
"""


def test_a_pool_with_the_spawn_or_forkserver_method_finds_the_task_files_functions(
    tmp_path: Path, migrated_url: str
) -> None:
    """A spawned interpreter unpickles the task's function by module name: it must be able to import
    the task file, or the pool's workers die and pool.map waits for ever."""
    write_task(tmp_path / "tasks", "pooled", body=SPAWNING_TASK)
    write_task(tmp_path / "tasks", "report.v2", body=SPAWNING_TASK)  # a dotted file name too
    env = clean_env(DATABASE_URL=migrated_url)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for task in ("pooled", "report.v2"):
            for method in ("spawn", "forkserver"):
                conn.execute("select graphile_worker.add_job(%s, %s::json)", (task, json.dumps({"method": method})))
    from tests.cli_support import kongtask as run

    result = run("worker", "--once", "--jobs", "2", cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("pool: [0, 1, 4, 9, 16]") == 4, result.stderr
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (0,)
