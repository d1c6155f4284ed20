"""The SQL ceiling: ``get_job`` then ``complete_job`` in a tight loop, with no worker around them.

This is the most any worker could drain on this server over N connections. psycopg runs the very
statements kongtask sends (prepared), one process per connection so the GIL plays no part;
pgbench runs the same two calls from C.
"""

from __future__ import annotations

import math
import multiprocessing
import re
import shutil
import subprocess
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import psycopg

from kongtask._schema.jobs import UPSTREAM_JOB_EXPIRY
from kongtask._schema import schema_named

from .db import SCHEMA, count_jobs, insert_jobs
from .results import Measured, Unavailable
from .server import DEBIAN_PG15
from .workers import KONGTASK_TASKS

#: What the worker passes to get_job: the names of the tasks it loaded.
TASK_NAMES = sorted(path.stem for path in KONGTASK_TASKS.glob("*.py") if not path.name.startswith("_"))


def _drain_loop(url: str, worker_id: str, ready: Event, go: Event) -> None:
    queries = schema_named(SCHEMA)
    with psycopg.connect(url, autocommit=True) as conn:
        ready.set()
        go.wait()
        while True:
            job = conn.execute(queries.get_job, (worker_id, TASK_NAMES, UPSTREAM_JOB_EXPIRY), prepare=True).fetchone()
            if job is None or job[0] is None:
                return
            conn.execute(queries.complete_job, (worker_id, job[0]), prepare=True)


def psycopg_ceiling(url: str, count: int, connections: int) -> Measured:
    insert_jobs(url, count)
    context = multiprocessing.get_context("fork")
    go = context.Event()
    readies = [context.Event() for _ in range(connections)]
    procs = [
        context.Process(target=_drain_loop, args=(url, f"ceiling-worker-{n:03d}", ready, go))
        for n, ready in enumerate(readies)
    ]
    for proc in procs:
        proc.start()
    try:
        # Connections are opened before the clock starts: this is the loop's rate, nothing else.
        for ready in readies:
            if not ready.wait(60):
                raise Unavailable("a psycopg ceiling process could not connect within 60 s")
        started = time.perf_counter()
        go.set()
        for proc in procs:
            proc.join()
        wall = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    remaining = count_jobs(url)
    if failed or remaining:
        raise Unavailable(f"psycopg ceiling: exit codes {failed}, {remaining} jobs left")
    details = {"jobs": count, "connections": connections, "wall_s": wall, "remaining_jobs": remaining}
    return Measured({f"drain_j{connections}": count / wall}, details)


def pgbench_path() -> Path | None:
    if (DEBIAN_PG15 / "pgbench").exists():
        return DEBIAN_PG15 / "pgbench"
    found = shutil.which("pgbench")
    return Path(found) if found else None


def _pgbench_script() -> str:
    # :client_id (0..c-1) keeps worker ids distinct per client and >= 10 characters. A client that
    # finds nothing at the very end (another took the last jobs) completes job 0, which is a no-op.
    names = "{" + ",".join(TASK_NAMES) + "}"
    worker = "'pgbench-worker-' || (:client_id)::text"
    return (
        f"select coalesce(id, 0) as job_id from {SCHEMA}.get_job({worker}, '{names}'::text[],"
        f" interval '4 hours') \\gset\n"
        f"select id from {SCHEMA}.complete_job({worker}, :job_id);\n"
    )


def pgbench_ceiling(url: str, count: int, clients: int, scratch: Path) -> Measured:
    pgbench = pgbench_path()
    if pgbench is None:
        raise Unavailable("pgbench not installed")
    script = scratch / "ceiling.pgbench"
    script.write_text(_pgbench_script())
    insert_jobs(url, count)
    per_client = math.ceil(count / clients)
    argv = [str(pgbench), "-n", "-M", "prepared", "-f", str(script), "-c", str(clients), "-j", str(clients)]
    result = subprocess.run([*argv, "-t", str(per_client), url], capture_output=True, text=True, timeout=900)
    tps = re.search(r"^tps = ([\d.]+)", result.stdout, re.MULTILINE)
    if result.returncode != 0 or tps is None:
        raise Unavailable(f"pgbench failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    remaining = count_jobs(url)
    if remaining:
        raise Unavailable(f"pgbench ceiling left {remaining} of {count} jobs")
    # tps excludes connection set-up, like the psycopg ceiling; a transaction is one job, except the
    # few no-op ones a client runs when the jobs ran out before its last transaction.
    jobs_per_s = float(tps.group(1)) * count / (per_client * clients)
    details = {"jobs": count, "clients": clients, "transactions": per_client * clients, "remaining_jobs": remaining}
    return Measured({f"drain_j{clients}": jobs_per_s}, details)
