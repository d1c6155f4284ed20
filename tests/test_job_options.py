"""Job keys, priorities, flags, forbidden flags and batch jobs, on the schema each needs.

On graphile-worker's 0.18 schema every option works wherever a job is added (the library, a task's
helpers, the CLI); on v0.1.0's a priority works too (its table has the column), and the others fail
in one line that names ``kongtask migrate --to latest``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import kongtask
from kongtask import JobSpec, PayloadError, SchemaTooOld
from tests.cli_support import clean_env, one_line
from tests.cli_support import kongtask as cli
from tests.support import query_rows


def _jobs(url: str) -> list[tuple[Any, ...]]:
    return query_rows(url, "select task_identifier, key, priority, flags, payload::text, revision"
                           " from graphile_worker.jobs j join graphile_worker._private_jobs p using (id) order by id")


def test_a_job_key_replaces_the_waiting_job_in_each_mode(modern_url: str) -> None:
    async def scenario() -> None:
        target = {"connection_string": modern_url}
        first = await kongtask.add_job("t", {"v": 1}, job_key="k", priority=5, flags=["slow"], **target)
        replaced = await kongtask.add_job("t", {"v": 2}, job_key="k", **target)
        assert replaced.id == first.id and replaced.revision == 1 and replaced.key == "k"
        assert replaced.payload == {"v": 2} and replaced.priority == 0 and replaced.flags is None
        kept = await kongtask.add_job("t", {"v": 3}, job_key="k", job_key_mode="unsafe_dedupe", **target)
        assert kept.id == first.id and kept.payload == {"v": 2}
        later = await kongtask.add_job("t", {"v": 4}, job_key="k2",
                                       run_at=replaced.run_at.replace(year=2100), **target)
        throttled = await kongtask.add_job("t", {"v": 5}, job_key="k2", job_key_mode="preserve_run_at", **target)
        assert throttled.id == later.id and throttled.run_at == later.run_at and throttled.payload == {"v": 5}
        removed = await kongtask.remove_job("k2", **target)
        assert removed is not None and removed.id == later.id
        assert await kongtask.remove_job("k2", **target) is None

    asyncio.run(scenario())
    assert query_rows(modern_url, "select key, payload::text from graphile_worker._private_jobs") == [("k", '{"v": 2}')]


def test_jobs_added_in_bulk_carry_their_options_and_keys(modern_url: str) -> None:
    first = [JobSpec("t", {"n": 1}, priority=2, job_key="a", flags=["x", "y"]), JobSpec("t", {"n": 3}, priority=-1)]
    assert kongtask.add_jobs_sync(first, connection_string=modern_url) == 2
    assert kongtask.add_jobs_sync([{"identifier": "t", "payload": {"n": 2}, "job_key": "a"}],
                                  connection_string=modern_url) == 1
    with pytest.raises(PayloadError, match="^job 2: job_key 'a' is job 0's too; one call can add one job per key$"):
        kongtask.add_jobs_sync([JobSpec("t", job_key="a"), JobSpec("t"), JobSpec("t", job_key="a")],
                               connection_string=modern_url)
    rows = query_rows(modern_url, "select key, priority, flags::text, payload::text, revision"
                                  " from graphile_worker._private_jobs order by priority")
    assert rows == [(None, -1, None, '{"n": 3}', 0), ("a", 0, None, '{"n": 2}', 1)]


def test_the_worker_runs_smaller_priorities_first_on_either_schema(migrated_url: str, modern_url: str) -> None:
    for url in (migrated_url, modern_url):
        ran: list[int] = []

        async def record(payload: Any, helpers: kongtask.Helpers, ran: list[int] = ran) -> None:
            ran.append(payload["p"])

        async def scenario(url: str = url) -> None:
            for priority in (5, -3, 0, 10, -20):
                await kongtask.add_job("t", {"p": priority}, priority=priority, connection_string=url)
            await kongtask.run_once(task_list={"t": record}, connection_string=url, batch_size=1)

        asyncio.run(scenario())
        assert ran == [-20, -3, 0, 5, 10], url


def test_forbidden_flags_leave_jobs_for_other_workers_and_may_change_between_fetches(modern_url: str) -> None:
    ran: list[str] = []
    calls = 0

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        ran.append(payload["name"])

    def forbidden() -> list[str]:
        nonlocal calls
        calls += 1
        return ["slow", "external"]

    async def scenario() -> None:
        target = {"connection_string": modern_url}
        await kongtask.add_job("t", {"name": "plain"}, **target)
        await kongtask.add_job("t", {"name": "slow"}, flags=["slow"], **target)
        await kongtask.add_job("t", {"name": "other-flag"}, flags=["cheap"], **target)
        await kongtask.run_once(task_list={"t": record}, forbidden_flags=["slow"], **target)
        assert sorted(ran) == ["other-flag", "plain"]
        await kongtask.add_job("t", {"name": "external"}, flags=["external", "cheap"], **target)
        await kongtask.run_once(task_list={"t": record}, forbidden_flags=forbidden, **target)
        assert sorted(ran) == ["other-flag", "plain"] and calls >= 1

        async def nothing_forbidden() -> None:
            return None

        await kongtask.run_once(task_list={"t": record}, forbidden_flags=nothing_forbidden, **target)

    asyncio.run(scenario())
    assert sorted(ran) == ["external", "other-flag", "plain", "slow"]


def test_a_batch_job_retries_only_its_failed_items(modern_url: str) -> None:
    seen: list[list[Any]] = []

    async def handle(item: Any) -> str:
        if item["fail"]:
            raise ValueError(f"item {item['n']} failed")
        return "ok"

    async def batch(payload: list[Any], helpers: kongtask.Helpers) -> list[Any]:
        seen.append(payload)
        return [handle(item) for item in payload]

    def plain_batch(payload: list[Any], helpers: kongtask.SyncHelpers) -> list[Any]:
        seen.append(payload)
        return [RuntimeError("no") if item["fail"] else None for item in payload]

    async def scenario() -> None:
        target = {"connection_string": modern_url}
        items = [{"n": n, "fail": n % 2 == 1} for n in range(4)]
        await kongtask.add_job("batch", items[:2], job_key="b", **target)
        await kongtask.add_job("batch", items[2:], job_key="b", **target)  # arrays under one key are merged
        await kongtask.add_job("plain_batch", items, **target)
        await kongtask.run_once(task_list={"batch": batch, "plain_batch": plain_batch}, **target)

    asyncio.run(scenario())
    assert seen[0] == seen[1] == [{"n": n, "fail": n % 2 == 1} for n in range(4)]
    rows = query_rows(modern_url, "select t.identifier, j.payload::text, j.attempts, j.last_error"
                                  " from graphile_worker._private_jobs j join graphile_worker._private_tasks t"
                                  " on t.id = j.task_id order by t.identifier")
    failed = '[{"n": 1, "fail": true}, {"n": 3, "fail": true}]'
    assert [(r[0], r[1], r[2]) for r in rows] == [("batch", failed, 1), ("plain_batch", failed, 1)]
    assert rows[0][3] == "2 of 4 batch items failed: [1] item 1 failed; [3] item 3 failed"


def test_options_the_v0_1_0_schema_lacks_fail_in_one_line(migrated_url: str) -> None:
    target = {"connection_string": migrated_url}
    for call in (
        lambda: kongtask.add_job_sync("t", job_key="k", **target),
        lambda: kongtask.add_job_sync("t", flags=["x"], **target),
        lambda: kongtask.add_jobs_sync([JobSpec("t", job_key="k")], **target),
        lambda: kongtask.remove_job_sync("k", **target),
        lambda: asyncio.run(kongtask.run_once(task_list={"t": lambda p, h: None}, forbidden_flags=["x"],
                                              **target)),
    ):
        with pytest.raises(SchemaTooOld, match=r"needs graphile-worker's 0.18 schema, .* `kongtask migrate --to latest`"):
            call()
    assert query_rows(migrated_url, "select count(*) from graphile_worker.jobs") == [(0,)]


@pytest.mark.parametrize(("options", "message"), [
    ({"job_key": ""}, "job_key must be a string of 1 to 512 characters, got 0 characters long"),
    ({"job_key": "k" * 513}, "job_key must be a string of 1 to 512 characters, got 513 characters long"),
    ({"job_key": "k", "job_key_mode": "sometimes"}, "job_key_mode must be one of replace, preserve_run_at, "
                                                    "unsafe_dedupe, got 'sometimes'"),
    ({"job_key_mode": "replace"}, "job_key_mode 'replace' needs a job_key; give one, or leave the mode out"),
    ({"priority": 40000}, "priority must be a whole number from -32768 to 32767 (smaller runs first), got 40000"),
    ({"flags": "slow"}, "flags must be a list of strings, got 'slow'"),
    ({"flags": ["ok", 3]}, "flags must be a list of strings, got 3 among them"),
])
def test_bad_options_are_refused_before_anything_is_sent(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError) as refused:
        kongtask.add_job_sync("t", connection_string="postgresql://nobody@127.0.0.1:1/none", **options)
    assert str(refused.value) == message


def test_the_command_line_adds_keyed_prioritised_flagged_jobs(project: Path, modern_url: str) -> None:
    env = clean_env(DATABASE_URL=modern_url)
    for payload in ('{"v": 1}', '{"v": 2}'):
        result = cli("add-job", "record", payload, "--job-key", "one", "--priority", "-2", "--flags", "a,b",
                     cwd=project, env=env)
        assert result.returncode == 0, result.stderr
    lines = cli("add-jobs", cwd=project, env=env,
                input='{"task": "record", "job_key": "two", "priority": 3, "flags": ["c"]}\n')
    assert lines.returncode == 0, lines.stderr
    assert query_rows(modern_url, "select key, priority, flags::text, payload::text, revision"
                                  " from graphile_worker._private_jobs order by id") == [
        ("one", -2, '{"a": true, "b": true}', '{"v": 2}', 1), ("two", 3, '{"c": true}', "{}", 0)]
    bad = cli("add-job", "record", "--job-key-mode", "often", cwd=project, env=env)
    assert bad.returncode == 2 and one_line(bad.stderr).startswith("kongtask: error: invalid value for --job-key-mode")


def test_the_command_line_says_in_one_line_when_the_schema_is_too_old(project: Path, migrated_url: str) -> None:
    result = cli("add-job", "record", "--job-key", "k", cwd=project, env=clean_env(DATABASE_URL=migrated_url))
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("kongtask: error: job_key needs graphile-worker's 0.18 schema")
