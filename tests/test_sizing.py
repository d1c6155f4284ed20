"""The connection arithmetic of docs/operations.md ("Sizing") holds.

A worker process of ``--jobs N`` holds at most N + 4 connections (a pool of N + 2, the LISTEN
connection and the heartbeat's), one more with ``--metrics-port`` (the readiness probe's), and N
more while plain ``def`` tasks hold ``helpers.with_pg_client()``. Here every slot is busy at once,
with each task holding such a connection and querying through the pool, the probe is asked, and
the server counts what the process holds.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import psycopg

from tests.cli_support import Background, clean_env, write_task
from tests.support import wait_until

JOBS = 3

#: Holds a blocking connection, runs a statement on the worker's pool, says so, then waits for the test.
_BUSY_TASK = """
import os, pathlib, time

def task(payload, helpers):
    folder = pathlib.Path(os.environ["KT_TEST_DIR"])
    with helpers.with_pg_client() as conn:
        conn.execute("select 1")
        helpers.query("select pg_sleep(0.2)")
        (folder / f"busy-{helpers.job.id}").write_text("")
        deadline = time.monotonic() + 60
        while not (folder / "finish").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
"""


def _connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() "
            "and backend_type = 'client backend' and pid <> pg_backend_pid()"
        ).fetchone()
        return int(row[0]) if row else 0


def test_a_worker_process_holds_at_most_twice_its_jobs_plus_five_connections(migrated_url: str, tmp_path: Path) -> None:
    write_task(tmp_path / "tasks", "busy", body=_BUSY_TASK)
    worker = Background("worker", "--connection", migrated_url, "--jobs", str(JOBS), "--heartbeat-interval", "0.2",
                        "--metrics-port", "0", cwd=tmp_path, env=clean_env(KT_TEST_DIR=str(tmp_path)))
    try:
        output = worker.wait_for("worker started")
        [metrics] = re.findall(r"serving metrics on (http://\S+)/metrics", output)
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            conn.execute("select graphile_worker.add_job('busy') from generate_series(1, %s)", (JOBS * 2,))
        worker.wait_until(lambda: len(list(tmp_path.glob("busy-*"))) == JOBS, "every slot to be busy", timeout=60)
        # The readiness probe asks the database on a connection of its own.
        with urllib.request.urlopen(f"{metrics}/readyz", timeout=10) as answer:
            assert answer.status == 200
        # N blocking connections, the LISTEN one, a pooled one at least, the probe's, and the
        # heartbeat's, which opens at its first beat with jobs held.
        held = wait_until(lambda: (n := _connections(migrated_url)) >= JOBS + 4 and n, timeout=10,
                          what="the process to hold its connections")
        assert held <= 2 * JOBS + 5, held
        (tmp_path / "finish").write_text("")
        worker.wait_for("Completed task", count=JOBS * 2, timeout=60)
        assert _connections(migrated_url) <= 2 * JOBS + 5
    finally:
        worker.stop()
