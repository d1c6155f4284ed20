"""Interoperability with real Node graphile-worker 0.18.0 on its own schema (migration 20).

kongtask's worker runs on upstream's 0.17/0.18 schema (``kongtask migrate --to latest``); these
tests put it beside Node 0.18 on one database: jobs added on either side run on the other, failures
carry over both ways, a job key set on either side binds the other (replaced in place, in each
mode), a worker on either side with a forbidden flag leaves those jobs to the other, either side
upgrades a v0.1.0 database the other then works on, a kongtask worker stops saying why when Node
upgrades the database under it, a mixed fleet drains one set of jobs with a named queue kept
strictly serial across both, and both run one crontab, each minute's job added once.

Node is driven as upstream's users drive it: the ``graphile-worker`` CLI with a ``tasks/`` folder,
``makeWorkerUtils().addJob`` / ``addJobs`` from its library (``js/add_jobs_0_18.js``), and, for
forbidden flags, which 0.18 takes in library mode only, ``runOnce`` (``js/run_once_0_18.js``). The tasks
of both languages write what they saw into tables in ``public``; every comparison happens here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

import kongtask
import kongtask.admin
from tests.cli_support import Background, clean_env, write_task
from tests.cli_support import kongtask as kongtask_cli
from tests.node.fixtures import PY_TASK, PY_TIMES_TASK, NodeEnv, node_url, tasks_folder
from tests.node.fleet import (
    FLEET_JOBS,
    FLEET_QUEUE,
    FLEET_QUEUE_EVERY,
    create_fleet_runs_table,
    fleet_runs,
    fleet_sleep_ms,
    overlaps,
    wait_for_drain,
)
from tests.node.interop import (
    PAYLOADS,
    SCHEMA,
    count_rows,
    create_results_table,
    database_now,
    kongtask_migrate_to,
    kongtask_record,
    kongtask_run_once,
    newest_migration,
    results,
    tail,
)
from tests.support import query_rows, wait_until, wait_until_async

pytestmark = pytest.mark.node

NODE = "0.18.0"

#: More payloads for the 0.18 round trips: integers JavaScript holds exactly (within 2**53 - 1).
SAFE_INTEGERS: dict[str, Any] = {
    "interop_safe_integers": {
        "max_safe": 2**53 - 1,
        "min_safe": -(2**53 - 1),
        "ids": [2**31 - 1, 2**31, 2**32 + 1, 10**15 + 7],
        "nested": {"n": [[-(2**40)], {"k": 9_007_199_254_740_990}]},
    },
}
CROSSING = {**PAYLOADS, **SAFE_INTEGERS}
#: CROSSING as Node 0.18's utils.addJobs can send it: that reads its specs with PostgreSQL's
#: json_populate_recordset, which refuses a NUL character (\u0000) in a payload's strings
#: ("unsupported Unicode escape sequence"), wherever the jobs go; utils.addJob and kongtask take it.
CROSSING_BY_ADD_JOBS = {
    **CROSSING,
    "interop_unicode": {
        **PAYLOADS["interop_unicode"], "escapes": PAYLOADS["interop_unicode"]["escapes"].replace("\0", "")
    },
}
#: The jobs of CROSSING that go into one named queue (the others into none, 0.18's default).
QUEUED = ("interop_nested", "interop_unicode", "interop_numbers", "interop_safe_integers")
QUEUE = "interop ✓ queue"

#: The first retry waits e^1 seconds after a failure (upstream's backoff: exp(least(attempts, 10))).
FIRST_BACKOFF = timedelta(seconds=math.e)


@pytest.fixture
def latest_url(migrated_url: str) -> Iterator[str]:
    """A fresh database of this test's own at graphile-worker 0.18's schema, as `migrate --to latest` builds it."""
    assert kongtask_migrate_to(migrated_url, "latest") == list(range(2, 21))
    yield migrated_url


def _node_add_jobs(
    node_env: NodeEnv, url: str, specs: list[dict[str, Any]], how: str, folder: Path
) -> list[dict[str, Any]]:
    """Adds ``specs`` with 0.18's ``utils.addJob`` one by one (``add_job``) or ``utils.addJobs``
    (``add_jobs``); returns what those calls returned: ids, task identifiers, job_queue_ids."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / f"{how}.json"
    spec_file.write_text(json.dumps(specs, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    result = node_env.script("add_jobs_0_18.js", node_url(url), str(spec_file), how, version=NODE)
    added: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return added


def _node_run_once(node_env: NodeEnv, url: str, tasks: Any, cwd: Path, template: str = "record_payload") -> None:
    node_env.cli(NODE, url, "--once", cwd=tasks_folder(cwd, tasks, template))


def _node_run_until(node_env: NodeEnv, url: str, tasks: Any, cwd: Path, left: int = 0) -> None:
    """``graphile-worker --once`` until no more than ``left`` jobs are left.

    One run may stop with a named queue's next job still waiting: a 0.18 worker does not await the
    completion of a job before it fetches again, so it may find that job's queue still locked by
    itself and, with --once, exit (kongtask's --once waits for its releases).
    """

    def done() -> bool:
        _node_run_once(node_env, url, tasks, cwd)
        return count_rows(url, "_private_jobs") <= left

    wait_until(done, timeout=120, interval=0, what=f"graphile-worker --once to leave {left} job(s)")


def _node_migrate(node_env: NodeEnv, url: str, cwd: Path) -> None:
    node_env.cli(NODE, url, "--schema-only", cwd=tasks_folder(cwd, []))


def _runs(url: str) -> list[tuple[Any, ...]]:
    """Every run the record tasks recorded, in order: job id, task, queue, attempts, last error,
    payload (read back with json.loads), and who ran it."""
    rows = query_rows(
        url,
        "select job_id, task_identifier, queue_name, attempts, last_error, payload, ran_by"
        " from public.interop_results order by seq",
    )
    return [(*row[:5], json.loads(row[5]), row[6]) for row in rows]


def _waiting_jobs(url: str) -> list[tuple[Any, ...]]:
    """The jobs in the public jobs view: id, task, queue, run_at, attempts, max_attempts, last_error."""
    return query_rows(
        url,
        "select id, task_identifier, queue_name, run_at, attempts, max_attempts, last_error"
        " from graphile_worker.jobs order by id",
    )


def _execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _list_jobs(url: str, state: kongtask.admin.JobState = "all") -> list[kongtask.admin.JobSummary]:
    return asyncio.run(kongtask.admin.list_jobs(state, connection_string=url))


def _assert_failed_once(url: str, job_id: int, message: str, started: datetime, ended: datetime) -> None:
    """As ``kongtask.admin.list_jobs`` sees it: the job failed once with ``message``, is unlocked,
    and its retry waits e^1 seconds from the failure."""
    [failed] = _list_jobs(url, "failed")
    assert (failed.id, failed.attempts, failed.max_attempts, failed.last_error) == (job_id, 1, 25, message)
    assert (failed.locked_by, failed.locked_at) == (None, None)
    assert failed.run_at is not None
    assert started + FIRST_BACKOFF - timedelta(milliseconds=1) <= failed.run_at <= ended + FIRST_BACKOFF
    assert _list_jobs(url, "locked") == []


def _py_tasks(folder: Path, names: Any, source: Path = PY_TASK) -> Path:
    """A kongtask tasks folder with ``source`` under each name."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source, folder / f"{name}.py")
    return folder


def _listening(url: str) -> bool:
    """Whether a session of this database listens on worker:migrate (its LISTEN is its last query)."""
    [(count,)] = query_rows(
        url,
        "select count(*) from pg_stat_activity"
        " where datname = current_database() and pid <> pg_backend_pid() and query like %s",
        ('%listen "worker:migrate"%',),
    )
    return bool(count)


# --- jobs cross between kongtask and Node 0.18, their payloads intact -----------------------------


def _kongtask_specs(base: datetime) -> list[dict[str, Any]]:
    """CROSSING as kongtask job specs: a few in QUEUE, each due at its own moment in the past."""
    return [
        {
            "identifier": task,
            "payload": payload,
            "queue_name": QUEUE if task in QUEUED else None,
            "run_at": base + timedelta(seconds=n),
            "max_attempts": 7,
        }
        for n, (task, payload) in enumerate(CROSSING.items())
    ]


def _add_with_kongtask(url: str, specs: list[dict[str, Any]], how: str, cwd: Path) -> None:
    if how == "add_job":
        for spec in specs:
            options = {key: value for key, value in spec.items() if key not in ("identifier", "payload")}
            kongtask.add_job_sync(spec["identifier"], spec["payload"], connection_string=url, **options)
    elif how == "add_jobs":
        assert kongtask.add_jobs_sync(specs, connection_string=url) == len(specs)
    else:
        lines = "".join(
            json.dumps({
                "task": spec["identifier"], "payload": spec["payload"], "queue": spec["queue_name"],
                "run_at": spec["run_at"].isoformat(), "max_attempts": spec["max_attempts"],
            }, ensure_ascii=False) + "\n"
            for spec in specs
        )
        added = kongtask_cli("add-jobs", "-c", url, cwd=cwd, input=lines, timeout=60)
        assert added.returncode == 0, added.stdout + added.stderr
        assert added.stdout.strip() == f"added {len(specs)} jobs"


@pytest.mark.parametrize("how", ["add_job", "add_jobs", "cli add-jobs"])
def test_jobs_kongtask_adds_run_on_graphile_worker_0_18_unchanged(
    node_env: NodeEnv, latest_url: str, tmp_path: Path, how: str
) -> None:
    """kongtask.add_job, kongtask.add_jobs and `kongtask add-jobs` on the 0.18 schema: Node 0.18
    runs every job once, on its first attempt, with its payload, queue and order as kongtask gave them."""
    create_results_table(latest_url)
    base = database_now(latest_url).replace(microsecond=0) - timedelta(hours=1)
    specs = _kongtask_specs(base)
    _add_with_kongtask(latest_url, specs, how, tmp_path)
    added = {task: (job_id, queue, run_at, max_attempts)
             for job_id, task, queue, run_at, _, max_attempts, _ in _waiting_jobs(latest_url)}
    assert {task: rest[1:] for task, rest in added.items()} == {
        spec["identifier"]: (spec["queue_name"], spec["run_at"], 7) for spec in specs
    }

    _node_run_until(node_env, latest_url, CROSSING, tmp_path / "node")

    assert results(latest_url) == CROSSING
    runs = _runs(latest_url)
    assert sorted((task, job_id, queue, attempts, error, ran_by) for job_id, task, queue, attempts, error, _, ran_by
                  in runs) == sorted((task, job_id, queue, 1, None, "node") for task, (job_id, queue, *_)
                                     in added.items())
    # One Node worker, one queue: its jobs ran in their run_at order.
    assert [run[1] for run in runs if run[2] == QUEUE] == [task for task in CROSSING if task in QUEUED]
    assert count_rows(latest_url, "_private_jobs") == 0


@pytest.mark.parametrize("how", ["add_job", "add_jobs"])
def test_jobs_graphile_worker_0_18_adds_run_on_kongtask_unchanged(
    node_env: NodeEnv, latest_url: str, tmp_path: Path, how: str
) -> None:
    """Node 0.18's utils.addJob and utils.addJobs: kongtask's worker runs every job once, with the
    payload, queue, run_at, max_attempts, priority, job key and flags Node gave it, the queue's jobs
    in run_at order."""
    crossing = CROSSING if how == "add_job" else CROSSING_BY_ADD_JOBS
    # JavaScript dates carry milliseconds, so these survive exactly.
    base = (database_now(latest_url) - timedelta(hours=1)).replace(microsecond=123000)
    # Listed out of run_at order, so that id order and run_at order differ within the queue.
    order = sorted(range(len(crossing)), key=lambda n: (n % 3, n))
    tasks = list(crossing)
    specs = [
        {
            "identifier": tasks[n], "payload": crossing[tasks[n]], "runAt": (base + timedelta(seconds=n)).isoformat(),
            "maxAttempts": 5, "priority": -5 if tasks[n] == "interop_empty_object" else 0,
            **({"queueName": QUEUE} if tasks[n] in QUEUED else {}),
            **({"jobKey": "nested ✓ key", "flags": ["a", "b ✓"]} if tasks[n] == "interop_nested" else {}),
        }
        for n in order
    ]
    added = _node_add_jobs(node_env, latest_url, specs, how, tmp_path / "node")
    ids = {task: job_id for job_id, task, *_ in _waiting_jobs(latest_url)}
    assert sorted(int(job["id"]) for job in added) == sorted(ids.values())
    if how == "add_job":
        assert [job["task_identifier"] for job in added] == [spec["identifier"] for spec in specs]
        assert {job["task_identifier"]: int(job["id"]) for job in added} == ids

    seen: list[kongtask.Job] = []

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        seen.append(helpers.job)

    kongtask_run_once(latest_url, dict.fromkeys(crossing, record))

    assert {job.task_identifier: job.payload for job in seen} == crossing
    assert sorted(job.id for job in seen) == sorted(ids.values())
    for job in seen:
        n = tasks.index(job.task_identifier)
        assert job.id == ids[job.task_identifier]
        assert (job.queue_name, job.run_at, job.max_attempts, job.attempts, job.last_error) == (
            QUEUE if job.task_identifier in QUEUED else None, base + timedelta(seconds=n), 5, 1, None
        ), job.task_identifier
        assert job.priority == (-5 if job.task_identifier == "interop_empty_object" else 0)
        if job.task_identifier == "interop_nested":
            assert (job.key, job.revision, job.flags) == ("nested ✓ key", 0, {"a": True, "b ✓": True})
        else:
            assert (job.key, job.revision, job.flags) == (None, 0, None)
    # The job with the lowest priority number goes first; the queue's jobs run by run_at, not by id.
    assert seen[0].task_identifier == "interop_empty_object"
    in_queue = [job for job in seen if job.queue_name == QUEUE]
    assert [job.task_identifier for job in in_queue] == [task for task in crossing if task in QUEUED]
    if how == "add_job":
        # One by one, in the order listed: the queue's ids are not in run_at order, so the order
        # above is run_at's. (add_jobs numbers the jobs in an order of its own.)
        assert [job.id for job in in_queue] != sorted(job.id for job in in_queue)
    assert count_rows(latest_url, "_private_jobs") == 0


# --- failures carry over both ways ----------------------------------------------------------------


def test_a_job_graphile_worker_0_18_failed_shows_in_kongtask_admin_and_kongtask_runs_it(
    node_env: NodeEnv, latest_url: str, tmp_path: Path
) -> None:
    """A job Node 0.18 failed: kongtask.admin.list_jobs shows its attempt, error and backoff, with its
    queue unlocked, and kongtask's worker leaves it until then; retried now with
    kongtask.admin.retry_job, kongtask's worker runs it and sees both."""
    create_results_table(latest_url)
    job = kongtask.add_job_sync(
        "interop_flaky", {"message": "node 0.18 says no ✗"}, queue_name="flaky", connection_string=latest_url
    )

    started = database_now(latest_url)
    _node_run_once(node_env, latest_url, ["interop_flaky"], tmp_path / "node", "fail_with_message")
    _assert_failed_once(latest_url, job.id, "node 0.18 says no ✗", started, database_now(latest_url))
    # Not before its backoff has passed (a run in this process takes a fraction of the e seconds).
    kongtask_run_once(latest_url, {"interop_flaky": kongtask_record})
    assert _runs(latest_url) == [] and [j.id for j in _list_jobs(latest_url, "failed")] == [job.id]

    retried = asyncio.run(kongtask.admin.retry_job(job.id, connection_string=latest_url))
    assert retried is not None and (retried.id, retried.attempts, retried.queue_name) == (job.id, 1, "flaky")
    kongtask_run_once(latest_url, {"interop_flaky": kongtask_record})

    assert _runs(latest_url) == [
        (job.id, "interop_flaky", "flaky", 2, "node 0.18 says no ✗", {"message": "node 0.18 says no ✗"}, "kongtask")
    ]
    assert count_rows(latest_url, "_private_jobs") == 0
    assert query_rows(latest_url, "select locked_by from graphile_worker._private_job_queues") == [(None,)]


def test_a_job_kongtask_failed_is_retried_by_graphile_worker_0_18_with_its_attempts_and_error(
    node_env: NodeEnv, latest_url: str, tmp_path: Path
) -> None:
    """A job kongtask's worker failed: kongtask.admin.list_jobs shows the failure as upstream
    records one; Node 0.18 retries it and its task sees attempt 2 and kongtask's error."""
    create_results_table(latest_url)
    job = kongtask.add_job_sync("interop_flaky", {"n": 1}, queue_name="flaky", connection_string=latest_url)

    def fail(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        raise ValueError("kongtask says no ✗")

    started = database_now(latest_url)
    kongtask_run_once(latest_url, {"interop_flaky": fail})
    _assert_failed_once(latest_url, job.id, "kongtask says no ✗", started, database_now(latest_url))

    # Due now rather than in e^1 seconds, as upstream's tests do; through upstream's own admin function.
    query_rows(latest_url, "select id from graphile_worker.reschedule_jobs(array[%s]::bigint[], run_at => now())",
               (job.id,))
    _node_run_once(node_env, latest_url, ["interop_flaky"], tmp_path / "node")

    assert _runs(latest_url) == [(job.id, "interop_flaky", "flaky", 2, "kongtask says no ✗", {"n": 1}, "node")]
    assert count_rows(latest_url, "_private_jobs") == 0


# --- job keys and flags: either side's key and flags bind the other -----------------------------------

KEY = "interop ✓ key"


def _add_with_node(node_env: NodeEnv, url: str, folder: Path, **spec: Any) -> dict[str, Any]:
    """One utils.addJob call of Node 0.18 (``spec`` in its option names); what it returned."""
    [added] = _node_add_jobs(node_env, url, [spec], "add_job", folder)
    return added


def _key_row(url: str) -> tuple[Any, ...]:
    """The one job in the table: id, key, revision, payload, run_at, attempts."""
    [row] = query_rows(url, "select id, key, revision, payload, run_at, attempts from graphile_worker._private_jobs")
    return row


def test_a_job_key_kongtask_set_binds_graphile_worker_0_18s_addJob_and_the_reverse_is_run_by_node(
    node_env: NodeEnv, latest_url: str, tmp_path: Path
) -> None:
    """kongtask adds a job under a key; Node 0.18's addJob with the key replaces it (same id,
    revision 1, Node's payload and run_at); kongtask's add_job in preserve_run_at mode replaces it
    again, keeping Node's run_at; Node's worker then runs it once, with kongtask's last payload."""
    create_results_table(latest_url)
    now = database_now(latest_url).replace(microsecond=0)
    first = kongtask.add_job_sync("interop_keyed", {"by": "kongtask", "n": 1}, job_key=KEY,
                                  run_at=now + timedelta(days=1), connection_string=latest_url)
    assert (first.key, first.revision) == (KEY, 0)

    due = now - timedelta(minutes=1)
    replaced = _add_with_node(node_env, latest_url, tmp_path / "node", identifier="interop_keyed",
                              payload={"by": "node ✓", "n": 2}, jobKey=KEY, runAt=due.isoformat())
    assert (int(replaced["id"]), replaced["revision"]) == (first.id, 1)
    assert _key_row(latest_url) == (first.id, KEY, 1, {"by": "node ✓", "n": 2}, due, 0)

    throttled = kongtask.add_job_sync("interop_keyed", {"by": "kongtask", "n": 3}, job_key=KEY,
                                      job_key_mode="preserve_run_at", run_at=now + timedelta(days=2),
                                      connection_string=latest_url)
    assert (throttled.id, throttled.revision, throttled.run_at) == (first.id, 2, due)

    _node_run_once(node_env, latest_url, ["interop_keyed"], tmp_path / "node")
    assert [run[:4] + run[5:] for run in _runs(latest_url)] == [
        (first.id, "interop_keyed", None, 1, {"by": "kongtask", "n": 3}, "node")]
    assert count_rows(latest_url, "_private_jobs") == 0


def test_a_job_key_graphile_worker_0_18_set_binds_kongtasks_add_job_and_the_reverse_is_run_by_kongtask(
    node_env: NodeEnv, latest_url: str, tmp_path: Path
) -> None:
    """Node 0.18 adds a job under a key; kongtask's add_job with the key replaces it (same id,
    revision 1, kongtask's payload and run_at); Node's addJob in preserve_run_at mode replaces it
    again, keeping kongtask's run_at; kongtask's worker then runs it once, seeing Node's last
    payload, the key and revision 2."""
    now = database_now(latest_url).replace(microsecond=0)
    first = _add_with_node(node_env, latest_url, tmp_path / "node", identifier="interop_keyed",
                           payload={"by": "node", "n": 1}, jobKey=KEY, runAt=(now + timedelta(days=1)).isoformat())
    first_id = int(first["id"])
    assert first["revision"] == 0

    due = now - timedelta(minutes=1)
    replaced = kongtask.add_job_sync("interop_keyed", {"by": "kongtask ✓", "n": 2}, job_key=KEY, run_at=due,
                                     connection_string=latest_url)
    assert (replaced.id, replaced.revision, replaced.run_at, replaced.payload) == (
        first_id, 1, due, {"by": "kongtask ✓", "n": 2})
    assert _key_row(latest_url) == (first_id, KEY, 1, {"by": "kongtask ✓", "n": 2}, due, 0)

    throttled = _add_with_node(node_env, latest_url, tmp_path / "node", identifier="interop_keyed",
                               payload={"by": "node", "n": 3}, jobKey=KEY, jobKeyMode="preserve_run_at",
                               runAt=(now + timedelta(days=2)).isoformat())
    assert (int(throttled["id"]), throttled["revision"]) == (first_id, 2)

    seen: list[kongtask.Job] = []

    async def record(payload: Any, helpers: kongtask.Helpers) -> None:
        seen.append(helpers.job)

    kongtask_run_once(latest_url, {"interop_keyed": record})
    assert [(job.id, job.payload, job.key, job.revision, job.run_at, job.attempts) for job in seen] == [
        (first_id, {"by": "node", "n": 3}, KEY, 2, due, 1)]
    assert count_rows(latest_url, "_private_jobs") == 0


#: The flagged jobs of the forbidden-flags tests, by their payload's "n": who adds each, its flags.
FLAGGED = [
    (1, "kongtask", None), (2, "kongtask", ["slow", "x"]), (3, "node", None), (4, "node", ["slow"]),
    (5, "node", ["other ✓"]), (6, "kongtask", ["other ✓"]),
]
SLOW = {n for n, _, flags in FLAGGED if flags and "slow" in flags}


def _add_flagged_jobs(node_env: NodeEnv, url: str, folder: Path) -> None:
    for n, by, flags in FLAGGED:
        if by == "kongtask":
            kongtask.add_job_sync("interop_flagged", {"n": n}, flags=flags, connection_string=url)
        else:
            _add_with_node(node_env, url, folder, identifier="interop_flagged", payload={"n": n},
                           **({"flags": flags} if flags else {}))


def _ran(url: str) -> dict[int, tuple[str, int]]:
    """Who ran each flagged job, and on which attempt, by its payload's n."""
    return {payload["n"]: (ran_by, attempts) for _, _, _, attempts, _, payload, ran_by in _runs(url)}


@pytest.mark.parametrize("forbidding", ["node", "kongtask"])
def test_jobs_with_a_forbidden_flag_are_left_by_that_worker_and_run_by_the_other_side(
    node_env: NodeEnv, latest_url: str, tmp_path: Path, forbidding: str
) -> None:
    """Jobs with flags, added by both sides: a worker with the forbidden flag "slow" (Node 0.18's
    runOnce with forbiddenFlags, a library option only; or `kongtask worker --forbidden-flags slow`)
    runs every other job, even one with another flag, and leaves those untried and unlocked; then a
    worker of the other side, forbidding nothing, runs them."""
    create_results_table(latest_url)
    node_folder = tmp_path / "node"
    _add_flagged_jobs(node_env, latest_url, node_folder)
    slow = query_rows(latest_url, "select (payload->>'n')::int from graphile_worker._private_jobs where flags ? 'slow'")
    assert sorted(n for (n,) in slow) == sorted(SLOW)

    if forbidding == "node":
        tasks = tasks_folder(node_folder, ["interop_flagged"]) / "tasks"
        node_env.script("run_once_0_18.js", node_url(latest_url), str(tasks), json.dumps(["slow"]), version=NODE)
    else:
        py_tasks = _py_tasks(tmp_path / "py_tasks", ["interop_flagged"])
        worked = kongtask_cli("worker", "--once", "--forbidden-flags", "slow", "-c", latest_url,
                              "--tasks", str(py_tasks), cwd=tmp_path, timeout=120)
        assert worked.returncode == 0, worked.stderr
    others = {n for n, _, _ in FLAGGED} - SLOW
    assert _ran(latest_url) == dict.fromkeys(others, (forbidding, 1))
    left = query_rows(latest_url, "select (payload->>'n')::int, attempts, locked_by from graphile_worker._private_jobs"
                                  " order by 1")
    assert left == [(n, 0, None) for n in sorted(SLOW)]

    if forbidding == "node":
        kongtask_run_once(latest_url, {"interop_flagged": kongtask_record})
    else:
        _node_run_once(node_env, latest_url, ["interop_flagged"], node_folder)
    other_side = "kongtask" if forbidding == "node" else "node"
    assert _ran(latest_url) == {**dict.fromkeys(others, (forbidding, 1)), **dict.fromkeys(SLOW, (other_side, 1))}
    assert count_rows(latest_url, "_private_jobs") == 0


# --- upgrades: either side upgrades a v0.1.0 database, the other works on it -----------------------


def _add_v0_1_jobs(url: str) -> dict[str, Any]:
    """On a v0.1.0 database, with kongtask: jobs pending, in a named queue, failed once, and
    scheduled an hour ahead. Returns the payloads by task (the queue's by position)."""
    pending = {"interop_upgrade_unicode": PAYLOADS["interop_unicode"],
               "interop_upgrade_numbers": PAYLOADS["interop_numbers"]}
    later = database_now(url).replace(microsecond=0) + timedelta(hours=1)
    for task, payload in pending.items():
        kongtask.add_job_sync(task, payload, connection_string=url)
    for n in range(3):
        kongtask.add_job_sync("interop_upgrade_queued", {"n": n}, queue_name="upgrade ✓ queue", connection_string=url)
    kongtask.add_job_sync("interop_upgrade_failed", {"f": "✗"}, connection_string=url)
    kongtask.add_job_sync("interop_upgrade_scheduled", {"s": 1}, run_at=later, connection_string=url)

    def fail(payload: Any, helpers: kongtask.SyncHelpers) -> None:
        raise RuntimeError("failed before the upgrade ✗")

    kongtask_run_once(url, {"interop_upgrade_failed": fail})
    return {**pending, "interop_upgrade_queued": [{"n": n} for n in range(3)], "interop_upgrade_failed": {"f": "✗"},
            "interop_upgrade_scheduled": {"s": 1}}


def _without_ids(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted((row[1:] for row in rows), key=repr)


def test_graphile_worker_0_18_upgrades_a_kongtask_v0_1_0_database_and_kongtask_runs_what_survived(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """Node 0.18 migrates a v0.1.0 database holding pending, queued, failed and scheduled jobs; kongtask
    then lists them as they were (new ids), runs them with its worker, and leaves the scheduled one
    for its time."""
    payloads = _add_v0_1_jobs(migrated_url)
    before = _waiting_jobs(migrated_url)
    create_results_table(migrated_url)

    _node_migrate(node_env, migrated_url, tmp_path / "node")
    assert newest_migration(migrated_url) == 20

    after = _list_jobs(migrated_url)
    assert _without_ids([(j.id, j.task_identifier, j.queue_name, j.run_at, j.attempts, j.max_attempts, j.last_error)
                         for j in after]) == _without_ids(before)
    [failed] = [j for j in after if j.task_identifier == "interop_upgrade_failed"]
    [scheduled] = [j for j in after if j.task_identifier == "interop_upgrade_scheduled"]
    assert (failed.attempts, failed.last_error) == (1, "failed before the upgrade ✗")
    assert asyncio.run(kongtask.admin.retry_job(failed.id, connection_string=migrated_url)) is not None

    kongtask_run_once(migrated_url, dict.fromkeys(payloads, kongtask_record))

    runs = _runs(migrated_url)
    ran = {task: payload for _, task, _, _, _, payload, _ in runs if task != "interop_upgrade_queued"}
    assert ran == {task: payloads[task] for task in payloads if task not in ("interop_upgrade_queued",
                                                                             "interop_upgrade_scheduled")}
    # The queue's jobs in the order they were added, each once.
    assert [(queue, payload) for _, task, queue, _, _, payload, _ in runs if task == "interop_upgrade_queued"] == [
        ("upgrade ✓ queue", payload) for payload in payloads["interop_upgrade_queued"]
    ]
    assert [(attempts, error) for _, task, _, attempts, error, _, _ in runs if task == "interop_upgrade_failed"] == [
        (2, "failed before the upgrade ✗")
    ]
    assert {ran_by for *_, ran_by in runs} == {"kongtask"}
    # The scheduled job waits for its time, then runs like the others.
    assert [(j.id, j.run_at) for j in _list_jobs(migrated_url)] == [(scheduled.id, scheduled.run_at)]
    asyncio.run(kongtask.admin.reschedule_job(
        scheduled.id, run_at=database_now(migrated_url), connection_string=migrated_url
    ))
    kongtask_run_once(migrated_url, {"interop_upgrade_scheduled": kongtask_record})
    assert [payload for _, task, _, _, _, payload, _ in _runs(migrated_url) if task == "interop_upgrade_scheduled"] == [
        {"s": 1}
    ]
    assert count_rows(migrated_url, "_private_jobs") == 0


def test_graphile_worker_0_18_runs_failed_and_scheduled_jobs_after_kongtask_migrate_to_latest(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """`kongtask migrate --to latest` on a v0.1.0 database holding a failed job and a scheduled
    one (pending and queued ones: test_interop_node.py): Node 0.18 sees the failure's attempts and
    error when it retries the job, and leaves the scheduled job for its time."""
    payloads = _add_v0_1_jobs(migrated_url)
    before = _waiting_jobs(migrated_url)
    create_results_table(migrated_url)

    migrated = kongtask_cli("migrate", "--to", "latest", "-c", migrated_url, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert newest_migration(migrated_url) == 20
    assert _without_ids(_waiting_jobs(migrated_url)) == _without_ids(before)

    query_rows(
        migrated_url,
        "select id from graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs"
        " where task_identifier = 'interop_upgrade_failed'), run_at => now())",
    )
    _node_run_until(node_env, migrated_url, payloads, tmp_path / "node", left=1)

    runs = _runs(migrated_url)
    assert {ran_by for *_, ran_by in runs} == {"node"}
    assert [(attempts, error, payload) for _, task, _, attempts, error, payload, _ in runs
            if task == "interop_upgrade_failed"] == [(2, "failed before the upgrade ✗", {"f": "✗"})]
    assert [payload for _, task, _, _, _, payload, _ in runs if task == "interop_upgrade_queued"] == (
        payloads["interop_upgrade_queued"]
    )
    assert {task for _, task, *_ in runs} == set(payloads) - {"interop_upgrade_scheduled"}
    [(_, task, queue, run_at, attempts, _, error)] = _waiting_jobs(migrated_url)
    [scheduled] = [row for row in before if row[1] == "interop_upgrade_scheduled"]
    assert (task, queue, run_at, attempts, error) == scheduled[1:5] + (None,)


# --- a running kongtask worker when Node 0.18 migrates the database ------------------------------


#: A kongtask task that runs until the test opens its gate (a row in public.gate), for at most a minute.
GATED_TASK = """
import asyncio
import time


async def task(payload, helpers):
    await helpers.query("insert into public.gate_log (what) values ('started')")
    deadline = time.monotonic() + 60
    while not await helpers.query("select 1 from public.gate"):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        await asyncio.sleep(0.02)
    await helpers.query("insert into public.gate_log (what) values ('ended')")
"""


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("kongtask: error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    return errors[0]


def test_a_kongtask_worker_on_v0_1_0_stops_saying_why_when_graphile_worker_0_18_upgrades_under_it(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """The worker hears the breaking migration on worker:migrate, stops gracefully and exits
    non-zero with one line that says why; started again, it runs on the new schema."""
    create_results_table(migrated_url)
    py_tasks = _py_tasks(tmp_path / "py_tasks", ["interop_after_upgrade"])
    worker = Background("worker", "-c", migrated_url, "--tasks", str(py_tasks), cwd=tmp_path)
    try:
        worker.wait_for("worker started")
        worker.wait_until(lambda: _listening(migrated_url), "the worker to listen on worker:migrate")

        _node_migrate(node_env, migrated_url, tmp_path / "node")

        code = worker.process.wait(30)
    finally:
        worker.kill()
    output = worker.output()
    assert code == 1, output
    assert _one_error_line(output).startswith(
        "kongtask: error: another process applied breaking migration 3 to schema 'graphile_worker'; "
        "this worker stopped"
    ), output
    assert newest_migration(migrated_url) == 20

    added = kongtask_cli("add-job", "interop_after_upgrade", '{"after": "✓"}', "-c", migrated_url, cwd=tmp_path)
    assert added.returncode == 0, added.stdout + added.stderr
    again = kongtask_cli("worker", "--once", "-c", migrated_url, "--tasks", str(py_tasks), cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _runs(migrated_url) == [
        (int(added.stdout), "interop_after_upgrade", None, 1, None, {"after": "✓"}, "kongtask")
    ]


def test_kongtask_run_raises_schema_changed_when_graphile_worker_0_18_upgrades_under_it(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """The library's side of the test above: the runner stops, and runner.wait() raises
    kongtask.SchemaChanged, saying which migration."""

    async def scenario() -> None:
        runner = await kongtask.run(task_list={"interop_idle": kongtask_record}, connection_string=migrated_url)
        try:
            await wait_until_async(lambda: asyncio.to_thread(_listening, migrated_url), timeout=30,
                                   what="the runner to listen on worker:migrate")
            await asyncio.to_thread(_node_migrate, node_env, migrated_url, tmp_path / "node")
            with pytest.raises(kongtask.SchemaChanged, match="^another process applied breaking migration 3 "):
                await asyncio.wait_for(runner.wait(), timeout=30)
        finally:
            with contextlib.suppress(kongtask.SchemaChanged):
                await asyncio.wait_for(runner.stop(), timeout=30)

    asyncio.run(scenario())
    assert newest_migration(migrated_url) == 20


def test_a_kongtask_worker_running_a_job_finishes_it_and_stops_when_graphile_worker_0_18_upgrades_under_it(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """Node's upgrade stops at migration 11, which refuses while a job is locked; the kongtask worker,
    told of breaking migration 3, finishes its running job, releases it on the half-upgraded schema
    and stops saying why. Restarted there, it refuses in one line; once Node has finished, it runs."""
    _execute(migrated_url, "create table public.gate (opened int)")
    _execute(migrated_url, "create table public.gate_log (seq serial, what text not null)")
    write_task(tmp_path / "py_tasks", "interop_gated", body=GATED_TASK)
    job = kongtask.add_job_sync("interop_gated", {}, queue_name="gated", connection_string=migrated_url)
    worker = Background("worker", "-c", migrated_url, "--tasks", str(tmp_path / "py_tasks"), cwd=tmp_path)
    try:
        worker.wait_for("worker started")
        worker.wait_until(lambda: _listening(migrated_url), "the worker to listen on worker:migrate")
        worker.wait_until(lambda: query_rows(migrated_url, "select what from public.gate_log"), "the job to start")

        with pytest.raises(AssertionError, match="There are locked jobs present; migration 11 cannot complete"):
            _node_migrate(node_env, migrated_url, tmp_path / "node")
        assert newest_migration(migrated_url) == 10
        worker.wait_for("breaking migration 3")
        assert worker.alive(), worker.output()  # its job is still running

        _execute(migrated_url, "insert into public.gate values (1)")
        code = worker.process.wait(30)
    finally:
        worker.kill()
    output = worker.output()
    assert code == 1, output
    assert _one_error_line(output).startswith("kongtask: error: another process applied breaking migration 3 "), output
    assert f"Completed task {job.id} (interop_gated)" in output, output
    assert query_rows(migrated_url, "select what from public.gate_log order by seq") == [("started",), ("ended",)]
    # Released: the job is gone and its queue unlocked, on the schema of migration 10.
    assert count_rows(migrated_url, "jobs") == 0
    assert query_rows(migrated_url, "select locked_by from graphile_worker.job_queues") == []

    refused = kongtask_cli("worker", "--once", "-c", migrated_url, "--tasks", str(tmp_path / "py_tasks"),
                           cwd=tmp_path, timeout=60)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "(migration 10)" in _one_error_line(refused.stderr)
    assert "finish the upgrade with `kongtask migrate --to latest`" in refused.stderr

    _node_migrate(node_env, migrated_url, tmp_path / "node")
    assert newest_migration(migrated_url) == 20
    kongtask.add_job_sync("interop_gated", {}, connection_string=migrated_url)
    again = kongtask_cli("worker", "--once", "-c", migrated_url, "--tasks", str(tmp_path / "py_tasks"),
                         cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert count_rows(migrated_url, "_private_jobs") == 0


def test_a_kongtask_worker_on_the_0_17_schema_runs_on_through_graphile_worker_0_18s_non_breaking_migration(
    node_env: NodeEnv, migrated_url: str, tmp_path: Path
) -> None:
    """At migration 19 (graphile-worker 0.17's schema, which kongtask's worker runs on), Node 0.18
    applies migration 20, which is not breaking: the running worker says so, carries on, and runs
    the next job Node adds with 20's add_job."""
    assert kongtask_migrate_to(migrated_url, 19) == list(range(2, 20))
    create_results_table(migrated_url)
    py_tasks = _py_tasks(tmp_path / "py_tasks", ["interop_after_20"])
    worker = Background("worker", "-c", migrated_url, "--tasks", str(py_tasks), cwd=tmp_path)
    try:
        worker.wait_for("worker started")
        worker.wait_until(lambda: _listening(migrated_url), "the worker to listen on worker:migrate")

        _node_migrate(node_env, migrated_url, tmp_path / "node")
        assert newest_migration(migrated_url) == 20
        worker.wait_for("another process applied migration 20 (not breaking); carrying on")

        [job] = _node_add_jobs(
            node_env, migrated_url, [{"identifier": "interop_after_20", "payload": {"k": "✓"}}], "add_job", tmp_path
        )
        worker.wait_until(lambda: _runs(migrated_url), "the worker to run the job Node added")
        assert worker.alive(), worker.output()
        assert worker.stop() == 0, worker.output()
    finally:
        worker.kill()
    output = worker.output()
    assert "kongtask: error" not in output and "Traceback" not in output, output
    assert _runs(migrated_url) == [(int(job["id"]), "interop_after_20", None, 1, None, {"k": "✓"}, "kongtask")]


# --- a mixed fleet: kongtask and Node 0.18 drain one set of jobs ------------------------------------


def _fleet_side(i: int) -> str:
    """Who adds the fleet's job number ``i``: blocks of ten, in turn, so that the named queue's jobs
    (every tenth) come from kongtask and Node alternately."""
    return "kongtask" if (i - 1) // FLEET_QUEUE_EVERY % 2 == 0 else "node"


def _add_fleet_0_18(node_env: NodeEnv, url: str, tmp_path: Path) -> dict[int, int]:
    """The fleet's jobs, half with `kongtask add-jobs`, then half with Node's utils.addJobs, each due
    at its own millisecond in the past, in order of its number. Returns their numbers by job id.

    kongtask's jobs get the lower ids, so within the named queue id order is not run_at order.
    """
    base = (database_now(url) - timedelta(hours=1)).replace(microsecond=0)
    specs = {
        i: {"payload": {"i": i, "sleep_ms": fleet_sleep_ms(i)}, "run_at": base + timedelta(milliseconds=i),
            "queue": FLEET_QUEUE if i % FLEET_QUEUE_EVERY == 0 else None}
        for i in range(1, FLEET_JOBS + 1)
    }
    lines = "".join(
        json.dumps({"task": "interop_fleet", "payload": s["payload"], "queue": s["queue"],
                    "run_at": s["run_at"].isoformat()}) + "\n"
        for i, s in specs.items() if _fleet_side(i) == "kongtask"
    )
    added = kongtask_cli("add-jobs", "-c", url, cwd=tmp_path, input=lines, timeout=60)
    assert added.returncode == 0, added.stdout + added.stderr
    assert added.stdout.strip() == f"added {FLEET_JOBS // 2} jobs"
    node_specs = [
        {"identifier": "interop_fleet", "payload": s["payload"], "runAt": s["run_at"].isoformat(),
         **({"queueName": s["queue"]} if s["queue"] else {})}
        for i, s in specs.items() if _fleet_side(i) == "node"
    ]
    assert len(_node_add_jobs(node_env, url, node_specs, "add_jobs", tmp_path / "node-add")) == FLEET_JOBS // 2
    rows = query_rows(url, "select id, (payload->>'i')::int from graphile_worker._private_jobs")
    return dict(rows)


def test_a_mixed_fleet_with_graphile_worker_0_18_runs_every_job_once_and_the_named_queue_serially_in_order(
    node_env: NodeEnv, latest_url: str, tmp_path: Path
) -> None:
    """`kongtask worker --jobs 4` and `graphile-worker -j 4` (0.18.0) drain 2,000 jobs together,
    200 of them in one named queue, added half by each side. Every job runs exactly once, both
    sides run some of the queue's jobs, the queue never has two jobs in flight (by the database
    clock), and its jobs run in run_at order: upstream fetches by priority, then run_at.

    Both are the real CLIs in continuous mode with their default settings, stopped with SIGTERM once
    the jobs table is empty.
    """
    create_fleet_runs_table(latest_url)
    number_of = _add_fleet_0_18(node_env, latest_url, tmp_path)
    assert sorted(number_of.values()) == list(range(1, FLEET_JOBS + 1))
    py_tasks = _py_tasks(tmp_path / "py_tasks", ["interop_fleet"], PY_TIMES_TASK)
    node_cwd = tasks_folder(tmp_path / "node", ["interop_fleet"], "record_times")
    node_log = tmp_path / "node.log"

    with node_log.open("wb") as log:
        node = node_env.start_cli(NODE, latest_url, "-j", "4", cwd=node_cwd, log=log)
        worker = Background("worker", "--jobs", "4", "-c", latest_url, "--tasks", str(py_tasks), cwd=tmp_path)
        try:
            wait_for_drain(latest_url, worker, node, node_log, jobs_table="_private_jobs",
                           queues_table="_private_job_queues")
            assert worker.stop() == 0, worker.output()
            node.send_signal(signal.SIGTERM)
            # graphile-worker 0.18 shuts down gracefully, then kills itself with the signal it received.
            assert node.wait(30) == -signal.SIGTERM, node_log.read_text(errors="replace")
        finally:
            worker.kill()
            if node.poll() is None:
                node.kill()
                node.wait(10)

    runs = fleet_runs(latest_url)
    # Every job, exactly once, counted by job id, and every run finished.
    times_run = Counter(run.job_id for run in runs)
    assert [job_id for job_id, n in times_run.items() if n > 1] == []
    assert set(times_run) == set(number_of)
    assert all(run.i == number_of[run.job_id] for run in runs)
    assert [run for run in runs if run.ended_at is None or run.ended_at < run.started_at] == []
    assert {run.queue_name for run in runs} == {FLEET_QUEUE, None}
    assert set(Counter(run.ran_by for run in runs)) == {"node", "kongtask"}

    # The named queue: one run at a time, by the database clock, and in run_at order (the job
    # numbers), which is not id order; both sides ran some of it.
    in_queue = sorted((run for run in runs if run.queue_name == FLEET_QUEUE), key=lambda run: run.started_at)
    assert len(in_queue) == FLEET_JOBS // FLEET_QUEUE_EVERY
    overlapping = overlaps(in_queue)
    assert not overlapping, (
        f"{len(overlapping)} runs in {FLEET_QUEUE} started before the one before ended: {overlapping[:3]}"
    )
    assert [run.i for run in in_queue] == list(range(FLEET_QUEUE_EVERY, FLEET_JOBS + 1, FLEET_QUEUE_EVERY))
    assert [run.job_id for run in in_queue] != sorted(run.job_id for run in in_queue)
    by_side = Counter(run.ran_by for run in in_queue)
    assert set(by_side) == {"node", "kongtask"}, f"one side ran the whole queue: {by_side}"
    assert query_rows(
        latest_url, "select count(*) from graphile_worker._private_job_queues where locked_by is not null"
    ) == [(0,)]


# --- cron: one crontab, kongtask and Node 0.18 workers ------------------------------------------

CRON_CRONTAB = """\
* * * * * interop_cron
* * * * * interop_cron ?id=interop_cron_queued&queue=cron_queue&max=5&priority=1 {from: 'crontab', n: 1}
"""


def _cron_runs(url: str) -> list[tuple[str, str, str]]:
    """Each cron job run: (identifier, its minute, who ran it)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("select payload, ran_by from public.interop_results order by seq").fetchall()
    found = []
    for payload, ran_by in rows:
        seen = json.loads(payload)
        identifier = "interop_cron_queued" if seen.get("from") == "crontab" else "interop_cron"
        assert seen["_cron"]["backfilled"] is False, seen
        found.append((identifier, seen["_cron"]["ts"], ran_by))
    return found


def _minute_ts(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:00.000Z")


@pytest.mark.slow
def test_kongtask_and_node_workers_on_one_crontab_add_each_minute_once(
    node_env: NodeEnv, modern_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One crontab, four workers: graphile-worker 0.18.0 (its CLI, reading ./crontab) and three
    `kongtask worker` processes. Node starts alone and registers the items; the minute after it is
    due is Node's alone; then the kongtask workers start, and the next minute all four race for.
    Each item's job for each minute is added once and run once, whoever added and ran it.

    A trigger records the application_name of the connection that added each job (PGAPPNAME,
    which libpq and node-postgres both read), so the test knows who won each minute. Real time:
    about one to two minutes.
    """
    create_results_table(modern_url)
    with psycopg.connect(modern_url, autocommit=True) as conn:
        conn.execute(
            "create table public.cron_added (job_id bigint, added_by text, payload text, queue_name text,"
            " max_attempts int, priority int)"
        )
        conn.execute(
            "create function public.record_cron_added() returns trigger language plpgsql as $$ begin"
            " insert into public.cron_added values (new.id, current_setting('application_name'), new.payload::text,"
            f" (select queue_name from {SCHEMA}._private_job_queues where id = new.job_queue_id),"
            " new.max_attempts, new.priority);"
            " return new; end $$"
        )
        conn.execute(
            f"create trigger record_cron_added after insert on {SCHEMA}._private_jobs"
            " for each row execute function public.record_cron_added()"
        )
    node_cwd = tasks_folder(tmp_path / "node", ["interop_cron"])
    (node_cwd / "crontab").write_text(CRON_CRONTAB)
    kt_cwd = tmp_path / "kongtask"
    (kt_cwd / "tasks").mkdir(parents=True)
    shutil.copyfile(PY_TASK, kt_cwd / "tasks" / "interop_cron.py")
    (kt_cwd / "crontab").write_text(CRON_CRONTAB)

    node_log = tmp_path / "node.log"
    workers: list[Background] = []
    with node_log.open("wb") as log:
        monkeypatch.setenv("PGAPPNAME", "node")
        node = node_env.start_cli(NODE, modern_url, cwd=node_cwd, log=log)
        try:
            def node_said() -> str:
                return f"\n--- Node ---\n{tail(node_log.read_text(errors='replace'))}"

            def registered() -> bool:
                with psycopg.connect(modern_url) as conn:
                    return conn.execute(f"select count(*) from {SCHEMA}._private_known_crontabs").fetchone() == (2,)

            wait_until(registered, timeout=60, what="Node to register the crontab" + node_said())
            node_alone = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
            wait_until(lambda: {ts for _, ts, _ in _cron_runs(modern_url)} == {_minute_ts(node_alone)},
                       timeout=90, interval=0.2, what=f"Node's jobs for {node_alone}" + node_said())

            for n in range(3):
                env = clean_env(DATABASE_URL=modern_url, PGAPPNAME=f"kongtask-{n}")
                workers.append(Background("worker", cwd=kt_cwd, env=env))
            for worker in workers:
                worker.wait_for("cron: 2 item(s) from crontab: interop_cron, interop_cron_queued")
            raced = node_alone + timedelta(minutes=1)
            assert datetime.now(timezone.utc) < raced - timedelta(seconds=5), "the kongtask workers started too late"

            def raced_minute_ran() -> bool:
                for name, code in [("Node", node.poll())] + [(f"kongtask {i}", w.process.poll())
                                                             for i, w in enumerate(workers)]:
                    if code is not None:
                        raise AssertionError(f"the {name} worker exited ({code})" + node_said())
                ran = Counter(ts for _, ts, _ in _cron_runs(modern_url))
                return ran[_minute_ts(raced)] >= 2 and count_rows(modern_url, "_private_jobs") == 0

            wait_until(raced_minute_ran, timeout=90, interval=0.2, what=f"the jobs for {raced}" + node_said())
            for worker in workers:
                assert worker.stop() == 0, worker.output()
            node.send_signal(signal.SIGTERM)
            node.wait(30)
        finally:
            for worker in workers:
                worker.kill()
            if node.poll() is None:
                node.kill()
                node.wait(10)

    runs = _cron_runs(modern_url)
    minutes = sorted({ts for _, ts, _ in runs})
    # Every minute from the first, each item's job once: two minutes, or three if a third began
    # before the workers stopped.
    assert minutes[:2] == [_minute_ts(node_alone), _minute_ts(raced)]
    assert minutes == [_minute_ts(node_alone + timedelta(minutes=i)) for i in range(len(minutes))]
    assert Counter((identifier, ts) for identifier, ts, _ in runs) == {
        (identifier, ts): 1 for identifier in ("interop_cron", "interop_cron_queued") for ts in minutes
    }
    assert {ran_by for _, _, ran_by in runs} <= {"node", "kongtask"}
    with psycopg.connect(modern_url) as conn:
        added = conn.execute(
            "select added_by, payload, queue_name, max_attempts, priority from public.cron_added order by job_id"
        ).fetchall()
        known = dict(conn.execute(
            f"select identifier, last_execution from {SCHEMA}._private_known_crontabs").fetchall())
    assert len(added) == len(runs)
    by_minute: dict[str, set[str]] = {}
    for added_by, payload, queue_name, max_attempts, priority in added:
        by_minute.setdefault(json.loads(payload)["_cron"]["ts"], set()).add(added_by)
        options = (queue_name, max_attempts, priority)
        assert options == (("cron_queue", 5, 1) if "from" in json.loads(payload) else (None, 25, 0)), added_by
    assert by_minute[_minute_ts(node_alone)] == {"node"}
    print(f"the raced minute's jobs were added by {sorted(by_minute[_minute_ts(raced)])}")  # shown with -s
    assert by_minute[_minute_ts(raced)] <= {"node", "kongtask-0", "kongtask-1", "kongtask-2"}
    # Who added a job is invisible in it: kongtask writes the payload as Node does, to the byte.
    assert {row[1] for row in added if json.loads(row[1])["_cron"]["ts"] == _minute_ts(raced)} >= {
        '{"_cron":{"ts":"%s","backfilled":false}}' % _minute_ts(raced)}
    assert {_minute_ts(moment) for moment in known.values()} == {minutes[-1]}
