"""Failover: a worker on a multi-host connection string follows its database to a promoted replica.

Two Debian PostgreSQL 15 servers on loopback, a primary and its synchronous streaming replica
(tests/replication.py). A worker drains jobs through ``host=primary,replica`` with
``target_session_attrs=read-write``; mid-drain the primary dies (``pg_ctl stop -m immediate``, a
crash) and the replica is promoted. The worker must reconnect to the new primary by itself and
finish every job; only jobs it held at the moment of the crash may run twice. What the operator's
guide (docs/operations.md, "Failover") says rests on this test.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import kongtask
from tests.cli_support import Background, clean_env, write_task
from tests.replication import ReplicatedPair, missing_prerequisite

JOBS = 300

#: Records each run (job id and attempt) in $KT_TEST_OUT, outside the database, so that a run the
#: failover makes the database forget is still counted.
RECORDING_TASK = """
import json, os, time

def task(payload, helpers):
    time.sleep(0.05)
    with open(os.environ["KT_TEST_OUT"], "a") as out:
        out.write(json.dumps({"id": helpers.job.id, "attempt": helpers.job.attempts}) + "\\n")
"""


@pytest.fixture
def replicated_pair() -> Iterator[ReplicatedPair]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    pair = ReplicatedPair()
    try:
        pair.start()
        pair.make_synchronous()
        yield pair
    finally:
        pair.close()


def _ran(out: Path) -> list[int]:
    if not out.exists():
        return []
    return [json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()]


def _jobs_left(url: str) -> dict[int, bool]:
    """Every job still in the table, and whether a worker holds it (its queue is locked)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "select j.id, q.locked_by is not null from graphile_worker.jobs j "
            "join graphile_worker.job_queues q using (queue_name)"
        ).fetchall()
    return {int(job_id): bool(held) for job_id, held in rows}


def test_worker_on_a_multi_host_url_follows_a_promoted_replica_and_every_job_completes(
    replicated_pair: ReplicatedPair, tmp_path: Path
) -> None:
    pair = replicated_pair
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        conn.execute("create database kt")
    url = pair.multi_host_url("kt")
    asyncio.run(kongtask.migrate(connection_string=url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('record') from generate_series(1, %s)", (JOBS,))
        added = {int(row[0]) for row in conn.execute("select id from graphile_worker.jobs").fetchall()}
    assert len(added) == JOBS

    write_task(tmp_path / "tasks", "record", body=RECORDING_TASK)
    out = tmp_path / "runs.jsonl"
    worker = Background("worker", "--connection", url, "--jobs", "4", cwd=tmp_path,
                        env=clean_env(KT_TEST_OUT=str(out)))
    try:
        worker.wait_until(lambda: len(_ran(out)) >= JOBS // 4, "a quarter of the jobs on the first primary", timeout=60)
        pair.primary.stop("immediate")
        # The replica, still read-only, holds exactly what the new primary will start from.
        left = _jobs_left(pair.replica.url("kt"))
        pair.replica.promote()
        worker.wait_until(lambda: not _jobs_left(pair.replica.url("kt")), "every job to complete on the new primary",
                          timeout=120)
        worker.wait_for("connection to PostgreSQL restored after", timeout=30)
        assert worker.alive(), worker.output()
    finally:
        code = worker.stop()
    assert code == 0, worker.output()

    held = {job_id for job_id, locked in left.items() if locked}
    assert len(left) - len(held) > 0, "the crash came after the drain: nothing was left for the new primary"
    runs = Counter(_ran(out))
    assert set(runs) == added, f"jobs that never ran: {sorted(added - set(runs))[:10]}"
    twice = {job_id for job_id, count in runs.items() if count > 1}
    assert twice <= held, (
        f"jobs that ran twice though no worker held them at the crash: {sorted(twice - held)}; "
        f"held: {sorted(held)}"
    )
    output = worker.output()
    assert "lost the connection to PostgreSQL" in output, output
