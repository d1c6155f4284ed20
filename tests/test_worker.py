"""The worker pool: task types, helpers, wake-ups, failures, shutdown and connection loss."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask.errors import TaskLoadError
from kongtask.tasks import load_task_directory
from tests.support import add_job_to, query_rows, wait_until_async


# --- task types -----------------------------------------------------------------------------------


def test_sync_and_async_tasks_both_run_with_their_helpers(migrated_url: str) -> None:
    seen: dict[str, Any] = {}

    def sync_task(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        assert isinstance(helpers, kongtask.SyncHelpers)
        seen["sync_payload"] = payload
        seen["sync_query"] = helpers.query("select %s::int + 1", (41,))
        seen["sync_job"] = helpers.job.task_identifier
        with helpers.with_pg_client() as conn:
            seen["sync_client"] = conn.execute("select 'client'").fetchone()
        helpers.add_job("async_task", {"from": "sync"})

    async def async_task(payload: Any, helpers: kongtask.Helpers) -> None:
        assert isinstance(helpers, kongtask.Helpers)
        seen["async_payload"] = payload
        seen["async_query"] = await helpers.query("select 2")
        async with helpers.with_pg_client() as conn:
            seen["async_client"] = await (await conn.execute("select 'aclient'")).fetchone()

    async def scenario() -> None:
        await add_job_to(migrated_url, "sync_task", {"n": 1})
        await kongtask.run_once(task_list={"sync_task": sync_task, "async_task": async_task}, connection_string=migrated_url)

    asyncio.run(scenario())
    assert seen == {
        "sync_payload": {"n": 1},
        "sync_query": [(42,)],
        "sync_job": "sync_task",
        "sync_client": ("client",),
        "async_payload": {"from": "sync"},
        "async_query": [(2,)],
        "async_client": ("aclient",),
    }


def test_blocking_sync_task_does_not_delay_another_workers_job(migrated_url: str) -> None:
    release = threading.Event()
    fast_done = threading.Event()

    def slow(payload: Any, helpers: Any) -> None:
        release.wait(30)

    async def fast(payload: Any, helpers: Any) -> None:
        fast_done.set()

    async def scenario() -> None:
        runner = await kongtask.run(task_list={"slow": slow, "fast": fast}, connection_string=migrated_url, concurrency=2)
        try:
            await add_job_to(migrated_url, "slow")
            await wait_until_async(lambda: query_rows(migrated_url, "select 1 from graphile_worker.job_queues where locked_by is not null"), what="slow job to start")
            await add_job_to(migrated_url, "fast")
            # The slow task still sleeps in its thread; the other worker must run fast meanwhile.
            await wait_until_async(fast_done.is_set, timeout=5, what="fast job to run while slow blocks")
            assert not release.is_set()
        finally:
            release.set()
            await runner.stop()

    asyncio.run(scenario())


def test_new_job_wakes_an_idle_worker_through_notify_not_polling(migrated_url: str) -> None:
    started = asyncio.Event()

    async def job(payload: Any, helpers: Any) -> None:
        started.set()

    async def scenario() -> float:
        runner = await kongtask.run(task_list={"job": job}, connection_string=migrated_url, poll_interval=60)
        try:
            # Give the first (empty) fetch time to finish so the worker is idle on its 60 s poll.
            await wait_until_async(lambda: runner._checkouts.idle_workers == 1, what="worker to go idle")
            began = time.monotonic()
            await add_job_to(migrated_url, "job")
            await asyncio.wait_for(started.wait(), 2)
            return time.monotonic() - began
        finally:
            await runner.stop()

    assert asyncio.run(scenario()) < 2


# --- failures -------------------------------------------------------------------------------------


class _Silent(Exception):
    pass


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (RuntimeError("boom"), "boom"),
        (_Silent(), "_Silent"),
        (_BadStr(), "_BadStr (its message could not be read: RuntimeError)"),
        (RuntimeError("nul\x00byte"), "nul\\x00byte"),
        (SystemExit(3), "SystemExit: 3"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
    ],
    ids=["message", "empty_message", "str_raises", "nul_byte", "system_exit", "keyboard_interrupt"],
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_failing_task_records_a_meaningful_last_error_and_the_worker_goes_on(
    migrated_url: str, raised: BaseException, expected: str, kind: str
) -> None:
    ran: list[str] = []

    def sync_bad(payload: Any, helpers: Any) -> None:
        raise raised

    async def async_bad(payload: Any, helpers: Any) -> None:
        raise raised

    async def good(payload: Any, helpers: Any) -> None:
        ran.append("good")

    async def scenario() -> None:
        await add_job_to(migrated_url, "bad")
        await add_job_to(migrated_url, "good")
        await kongtask.run_once(
            task_list={"bad": sync_bad if kind == "sync" else async_bad, "good": good}, connection_string=migrated_url
        )

    asyncio.run(scenario())
    assert ran == ["good"]
    assert query_rows(migrated_url, "select task_identifier, attempts, last_error from graphile_worker.jobs") == [
        ("bad", 1, expected)
    ]
    assert query_rows(migrated_url, "select count(*) from graphile_worker.job_queues where locked_by is not null") == [(0,)]


def test_log_lines_follow_the_contract_and_no_log_success_silences_successes(
    migrated_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def ok(payload: Any, helpers: Any) -> None:
        helpers.logger.info("working on %s", payload["n"])

    async def bad(payload: Any, helpers: Any) -> None:
        raise ValueError("nope")

    async def scenario() -> None:
        await add_job_to(migrated_url, "ok", {"n": 7})
        await add_job_to(migrated_url, "bad")
        await kongtask.run_once(task_list={"ok": ok, "bad": bad}, connection_string=migrated_url)

    caplog.set_level(logging.INFO)
    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Completed task ") and "(ok) with success (" in m and m.endswith("ms)") for m in messages)
    failed = [r for r in caplog.records if r.getMessage().startswith("Failed task ")]
    assert len(failed) == 1
    first_line, _, stack = failed[0].getMessage().partition(":\n  ")
    # Upstream's line, then when the job runs again.
    assert re.fullmatch(
        r"Failed task \d+ \(bad\) with error nope \(\d+\.\d\dms\); "
        r"attempt 1 of 25, retrying at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        first_line,
    ), first_line
    # Upstream's shape: the stack follows the line, indented by two spaces; only the task's frames.
    assert stack.startswith("Traceback") and stack.rstrip().endswith("ValueError: nope")
    assert "kongtask" + os.sep not in stack and 'raise ValueError("nope")' in stack
    assert all(line.startswith("  ") for line in failed[0].getMessage().splitlines()[1:])
    task_record = next(r for r in caplog.records if r.getMessage() == "working on 7")
    assert task_record.name == "kongtask.task.ok" and isinstance(task_record.job_id, int)  # type: ignore[attr-defined]

    caplog.clear()
    monkeypatch.setenv("NO_LOG_SUCCESS", "1")
    asyncio.run(add_job_to(migrated_url, "ok", {"n": 8}))
    asyncio.run(kongtask.run_once(task_list={"ok": ok}, connection_string=migrated_url))
    assert not [r for r in caplog.records if r.getMessage().startswith("Completed task ")]


def test_each_runner_locks_under_one_id_of_its_own(migrated_url: str) -> None:
    """A runner's workers share one lock id (locked_by), distinct from every other runner's."""

    async def scenario() -> list[list[str]]:
        runners = [
            await kongtask.run(task_list={"t": lambda p, h: None}, connection_string=migrated_url, concurrency=8)
            for _ in range(2)
        ]
        try:
            return [runner.worker_ids for runner in runners]
        finally:
            for runner in runners:
                await runner.stop()

    first, second = asyncio.run(scenario())
    assert len(first) == len(second) == 1 and first != second
    assert all(i.startswith("worker-") and len(i) - len("worker-") >= 10 for i in first + second)


def test_graceful_stop_waits_for_the_running_job(migrated_url: str) -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        finished: list[bool] = []

        async def slow(payload: Any, helpers: Any) -> None:
            started.set()
            await asyncio.sleep(0.3)
            finished.append(True)

        runner = await kongtask.run(task_list={"slow": slow}, connection_string=migrated_url, shutdown_timeout=30)
        await add_job_to(migrated_url, "slow")
        await asyncio.wait_for(started.wait(), 10)
        await runner.stop()
        assert finished == [True]
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_forced_shutdown_fails_the_running_job_so_it_is_retried(migrated_url: str, kind: str) -> None:
    forever = threading.Event()
    started = threading.Event()

    def sync_stuck(payload: Any, helpers: Any) -> None:
        started.set()
        forever.wait(60)

    async def async_stuck(payload: Any, helpers: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    async def scenario() -> None:
        task = sync_stuck if kind == "sync" else async_stuck
        runner = await kongtask.run(task_list={"stuck": task}, connection_string=migrated_url, shutdown_timeout=0.5)
        await add_job_to(migrated_url, "stuck")
        # The task itself says it started: a job merely checked out is given back on a stop, not failed.
        await wait_until_async(started.is_set, what="job to start")
        await asyncio.wait_for(runner.stop(), 10)

    try:
        asyncio.run(scenario())
    finally:
        forever.set()
    assert query_rows(migrated_url, "select attempts, last_error from graphile_worker.jobs") == [
        (1, "Forced worker shutdown due to stop()")
    ]
    assert query_rows(migrated_url, "select locked_by, locked_at from graphile_worker.job_queues") == [(None, None)]
    # Retried afterwards, by a later worker, once due.
    ran: list[bool] = []
    query_rows(migrated_url, "update graphile_worker.jobs set run_at = now() returning 1")
    asyncio.run(kongtask.run_once(task_list={"stuck": lambda p, h: ran.append(True)}, connection_string=migrated_url))
    assert ran == [True]


# --- connection loss ------------------------------------------------------------------------------


def test_terminated_backends_are_survived_and_every_job_completes(migrated_url: str) -> None:
    calls: dict[int, int] = {}
    lock = threading.Lock()

    def job(payload: Any, helpers: Any) -> None:
        with lock:
            calls[payload["i"]] = calls.get(payload["i"], 0) + 1
        time.sleep(0.002)

    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('job', json_build_object('i', i)) from generate_series(1, 500) i")

    async def scenario() -> int:
        runner = await kongtask.run(task_list={"job": job}, connection_string=migrated_url, concurrency=4, poll_interval=0.5)
        try:
            await wait_until_async(lambda: len(calls) >= 100, timeout=30, what="100 jobs to run")
            with psycopg.connect(migrated_url, autocommit=True) as admin:
                killed = admin.execute(
                    "select count(*) from pg_stat_activity, pg_terminate_backend(pid) "
                    "where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'"
                ).fetchone()
            await wait_until_async(
                lambda: not query_rows(migrated_url, "select 1 from graphile_worker.jobs limit 1"), timeout=60,
                what="all 500 jobs to complete",
            )
            return killed[0] if killed else 0
        finally:
            await runner.stop()

    killed = asyncio.run(scenario())
    assert killed >= 2  # the workers' connections and the listener
    assert sorted(calls) == list(range(1, 501))
    repeats = [i for i, n in calls.items() if n > 1]
    assert len(repeats) <= 4, f"only jobs in flight at the termination may run twice, got {repeats}"
    assert query_rows(migrated_url, "select count(*) from graphile_worker.job_queues") == [(0,)]


# --- task folders ---------------------------------------------------------------------------------


def test_task_file_imports_a_sibling_helper_module(tmp_path: Path) -> None:
    (tmp_path / "_mail.py").write_text("def subject():\n    return 'hello'\n")
    (tmp_path / "plain.py").write_text("import _mail\n\ndef task(payload, helpers):\n    return _mail.subject()\n")
    (tmp_path / "relative.py").write_text("from . import _mail\n\ndef task(payload, helpers):\n    return _mail.subject()\n")
    tasks = load_task_directory(tmp_path)
    assert tasks["plain"]({}, None) == "hello" and tasks["relative"]({}, None) == "hello"


def test_task_named_like_a_stdlib_module_does_not_shadow_it(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("def task(payload, helpers):\n    return 'json task'\n")
    (tmp_path / "user.py").write_text("import json\n\ndef task(payload, helpers):\n    return json.dumps([1])\n")
    tasks = load_task_directory(tmp_path)
    assert tasks["json"]({}, None) == "json task"
    assert tasks["user"]({}, None) == "[1]"
    import json

    assert json.dumps({"a": 1}) == '{"a": 1}'


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def task(payload, helpers)\n    pass\n", r"broken\.py:1: syntax error"),
        ("import not_a_module_anywhere\n", r"broken\.py:1: ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
        ("x = 1\n\nraise RuntimeError('at import')\n", r"broken\.py:3: RuntimeError: at import"),
        ("def tsak(payload, helpers):\n    pass\n", r"broken\.py defines no `task`"),
        ("task = 42\n", r"`task` is an int, not a function"),
    ],
    ids=["syntax_error", "import_error", "raises_at_import", "missing_task", "task_not_callable"],
)
def test_each_load_error_names_the_file_and_what_is_wrong(tmp_path: Path, source: str, expected: str) -> None:
    (tmp_path / "broken.py").write_text(source)
    with pytest.raises(TaskLoadError, match=expected):
        load_task_directory(tmp_path)


def test_missing_tasks_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TaskLoadError, match="does not exist"):
        load_task_directory(tmp_path / "nope")


def test_tasks_load_only_from_the_named_folder(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "inside.py").write_text("def task(payload, helpers):\n    return 1\n")
    (tmp_path / "outside.py").write_text("def task(payload, helpers):\n    return 2\n")
    (tmp_path / "tasks" / "sub").mkdir()
    (tmp_path / "tasks" / "sub" / "nested.py").write_text("def task(payload, helpers):\n    return 3\n")
    assert sorted(load_task_directory(tmp_path / "tasks")) == ["inside"]


# --- programmatic form ----------------------------------------------------------------------------


def test_app_registers_tasks_with_a_decorator_and_runs_them(migrated_url: str) -> None:
    app = kongtask.App(connection_string=migrated_url)
    seen: list[Any] = []

    @app.task
    async def greet(payload: Any, helpers: Any) -> None:
        seen.append(("greet", payload))
        await helpers.add_job("farewell", {"to": payload["to"]})

    @app.task("farewell")
    def say_bye(payload: Any, helpers: Any) -> None:
        seen.append(("farewell", payload))

    async def scenario() -> None:
        await app.add_job("greet", {"to": "ada"})
        await app.run_once()

    asyncio.run(scenario())
    assert seen == [("greet", {"to": "ada"}), ("farewell", {"to": "ada"})]


def test_add_job_sync_works_without_an_event_loop(migrated_url: str) -> None:
    job = kongtask.add_job_sync("t", {"k": "v"}, connection_string=migrated_url, queue_name="q", max_attempts=3)
    assert (job.task_identifier, job.payload, job.queue_name, job.max_attempts) == ("t", {"k": "v"}, "q", 3)
    with psycopg.connect(migrated_url) as conn:
        # Through the caller's connection, the job shares the caller's transaction.
        with conn.transaction(force_rollback=True):
            kongtask.add_job_sync("rolled_back", connection=conn)
        with conn.transaction():
            kongtask.add_job_sync("committed", connection=conn)
    assert query_rows(migrated_url, "select task_identifier from graphile_worker.jobs where task_identifier <> 't'") == [
        ("committed",)
    ]


def test_stop_during_a_busy_drain_strands_no_job(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('job', json_build_object('i', i)) from generate_series(1, 2000) i")
    ran: list[int] = []

    async def job(payload: Any, helpers: Any) -> None:
        ran.append(payload["i"])

    async def scenario() -> None:
        runner = await kongtask.run(task_list={"job": job}, connection_string=migrated_url, concurrency=4)
        await wait_until_async(lambda: len(ran) >= 200, timeout=30, what="the drain to get going")
        await runner.stop()

    for _ in range(3):
        asyncio.run(scenario())
        # Whatever a worker had checked out when the stop landed, it ran and released.
        assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs where attempts > 0") == [(0,)]
        assert query_rows(migrated_url, "select count(*) from graphile_worker.job_queues where locked_by is not null") == [(0,)]
    assert len(ran) == len(set(ran))


def test_plain_def_returning_a_coroutine_is_awaited(migrated_url: str) -> None:
    ran: list[Any] = []

    async def body(payload: Any) -> None:
        ran.append(payload)

    def wrapped(payload: Any, helpers: Any) -> Any:
        return body(payload)

    async def scenario() -> None:
        await add_job_to(migrated_url, "wrapped", {"w": 1})
        await kongtask.run_once(task_list={"wrapped": wrapped}, connection_string=migrated_url)

    asyncio.run(scenario())
    assert ran == [{"w": 1}]
