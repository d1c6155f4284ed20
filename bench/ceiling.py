"""The SQL ceiling: a job's checkout and release in a tight loop, with no worker around them.

This is the most any worker could drain on this server over N connections, in two forms:

- *single*: ``get_job`` then ``complete_job``, one job at a time, two commits per job (what Node
  0.1.0 does, and kongtask did before it fetched in batches);
- *batched*: kongtask's own ``get_jobs`` (up to :data:`BATCH` jobs) then ``release_jobs`` for all
  of them, two commits per batch (what the worker sends, without its buffer or its tasks).

psycopg runs the very statements kongtask sends (prepared), one process per connection so the GIL
plays no part; pgbench runs the same statements from C. Both run v0.1.0's statements on a v0.1.0
database; psycopg also runs the batched form of 0.18's on a 0.18 database (``psycopg-batched-0.18``:
pgbench cannot, since 0.18's ``get_jobs`` does not end in the ``update ... returning`` its script
is cut from).
"""

from __future__ import annotations

import math
import multiprocessing
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg

from kongtask._schema import schema_named
from kongtask._schema.jobs import UPSTREAM_JOB_EXPIRY, text_array_literal

from .db import SCHEMA, count_jobs, insert_jobs
from .results import V0_1, V0_18, Measured, Unavailable
from .server import DEBIAN_PG15
from .workers import KONGTASK_TASKS

#: What the worker passes to get_job: the names of the tasks it loaded.
TASK_NAMES = sorted(path.stem for path in KONGTASK_TASKS.glob("*.py") if not path.name.startswith("_"))

#: Jobs per checkout in the batched ceiling: the batch that issue 12 set the ceiling at (the
#: worker's own batches adapt up to ``--batch-size``, 500 by default).
BATCH = 50

#: get_jobs' parameters as the worker sends them (kongtask._checkouts), but the worker id.
_FETCH_PARAMS: dict[str, Any] = {
    "task_names": text_array_literal(TASK_NAMES),
    "job_expiry": f"{UPSTREAM_JOB_EXPIRY.total_seconds()} seconds",
    "limit": BATCH,
    "forbidden_flags": None,
}

#: release_jobs' parameters for failures: the bench's jobs all succeed.
_NO_FAILURES: dict[str, list[Any]] = {
    "failed_lock_ids": [], "failed_ids": [], "failed_updated_at": [], "failed_messages": [], "failed_payloads": [],
}


def batched_statements(schema: str = V0_1) -> tuple[str, str]:
    """kongtask's ``get_jobs`` and ``release_jobs`` for ``schema``, or :class:`Unavailable` for a build
    without them."""
    if schema == V0_18:
        try:
            from kongtask._schema import v0_18

            queries: Any = v0_18.schema_named(SCHEMA)
        except ImportError:
            raise Unavailable("this kongtask has no statements for the 0.18 schema") from None
    else:
        queries = schema_named(SCHEMA)
    try:
        return queries.get_jobs, queries.release_jobs
    except AttributeError:
        raise Unavailable(f"this kongtask has no get_jobs/release_jobs for {schema} (a build before them)") from None


def _single_loop(conn: psycopg.Connection[Any], worker_id: str, schema: str = V0_1) -> None:
    assert schema == V0_1, schema  # 0.18 has no get_job: its workers send their own statements
    queries = schema_named(SCHEMA)
    while True:
        job = conn.execute(queries.get_job, (worker_id, TASK_NAMES, UPSTREAM_JOB_EXPIRY), prepare=True).fetchone()
        if job is None or job[0] is None:
            return
        conn.execute(queries.complete_job, (worker_id, job[0]), prepare=True)


def _batched_loop(conn: psycopg.Connection[Any], worker_id: str, schema: str = V0_1) -> None:
    get_jobs, release_jobs = batched_statements(schema)
    fetch = dict(_FETCH_PARAMS, worker_id=worker_id)
    while True:
        # Every column of every row, as the worker reads them; the last one is `scanned`.
        rows = conn.execute(get_jobs, fetch, prepare=True).fetchall()
        if not rows:
            return
        # Each schema's release_jobs reads the parameters it names (v0.1.0 the lock id of each job,
        # 0.18 the pool's): psycopg leaves the others out.
        completed = {
            "worker_id": worker_id, "completed_lock_ids": [worker_id] * len(rows),
            "completed_ids": [row[0] for row in rows],
        }
        conn.execute(release_jobs, completed | _NO_FAILURES, prepare=True)


_LOOPS: dict[str, Callable[[psycopg.Connection[Any], str, str], None]] = {
    "single": _single_loop, "batched": _batched_loop,
}


def _drain_loop(url: str, form: str, schema: str, worker_id: str, ready: Event, go: Event) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        ready.set()
        go.wait()
        _LOOPS[form](conn, worker_id, schema)


def psycopg_ceiling(url: str, count: int, connections: int, form: str = "single", schema: str = V0_1) -> Measured:
    """``form`` is ``single`` (get_job, complete_job) or ``batched`` (get_jobs, release_jobs), on a
    database of ``schema`` (0.18: batched only)."""
    if form == "batched":
        batched_statements(schema)  # a build without them says so here, not in a child process
    insert_jobs(url, count, schema)
    context = multiprocessing.get_context("fork")
    go = context.Event()
    readies = [context.Event() for _ in range(connections)]
    procs = [
        context.Process(target=_drain_loop, args=(url, form, schema, f"ceiling-worker-{n:03d}", ready, go))
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
    if form == "batched":
        details["batch"] = BATCH
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


#: A psycopg parameter in kongtask's statements: ``%(name)s``.
_PARAMETER = re.compile(r"%\((\w+)\)s")


def _pgbench_batched_script() -> tuple[str, dict[str, str]]:
    r"""The batched loop for pgbench, and the ``-D`` variables it reads.

    One transaction of the script is two statements, as the worker sends them: kongtask's
    ``get_jobs``, whose rows come back as two arrays (their ids, and the lock id once per row), then
    kongtask's ``release_jobs`` with those arrays. pgbench keeps no rows, only the columns of one
    (``\gset``), so the first statement ends in an aggregate: its final ``update ... returning`` becomes
    one more CTE, ``fetched``, that a ``select`` reads. Every parameter becomes a pgbench variable of
    the same name, but the worker id, which is per client (``:client_id``).
    """
    get_jobs, release_jobs = batched_statements()
    head, found, last = get_jobs.rpartition("\nupdate ")
    if not found or not head.startswith("with ") or "returning " not in last:
        raise Unavailable("kongtask's get_jobs is no longer `with ... update ... returning`: adapt bench/ceiling.py")
    worker = "('pgbench-batch-' || (:client_id)::text)"
    fetch = (
        f"{head},\nfetched as (\nupdate {last}\n)\n"
        f"select coalesce(array_agg(id), '{{}}') as completed_ids,"
        f" coalesce(array_agg({worker}), '{{}}') as completed_lock_ids from fetched"
    )
    fetch = _PARAMETER.sub(lambda m: worker if m.group(1) == "worker_id" else f":{m.group(1)}", fetch)
    release = _PARAMETER.sub(r":\1", release_jobs)
    variables = {name: str(value) for name, value in _FETCH_PARAMS.items()}
    variables |= {name: "{}" for name in _NO_FAILURES}
    return f"{fetch} \\gset\n{release};\n", variables


def pgbench_ceiling(url: str, count: int, clients: int, scratch: Path, form: str = "single") -> Measured:
    """``form`` is ``single`` (one job per transaction) or ``batched`` (up to :data:`BATCH`)."""
    pgbench = pgbench_path()
    if pgbench is None:
        raise Unavailable("pgbench not installed")
    if form == "batched":
        text, variables = _pgbench_batched_script()
        # Batches come short when clients race for the last jobs (or skip rows another is locking):
        # a few transactions to spare, which find nothing and cost a fraction of a millisecond each.
        full = math.ceil(count / (BATCH * clients))
        per_client = full + math.ceil(full / 10) + 2
    else:
        text, variables = _pgbench_script(), {}
        per_client = math.ceil(count / clients)
    script = scratch / f"ceiling-{form}.pgbench"
    script.write_text(text)
    insert_jobs(url, count)
    argv = [str(pgbench), "-n", "-M", "prepared", "-f", str(script), "-c", str(clients), "-j", str(clients)]
    argv += [f"-D{name}={value}" for name, value in variables.items()]
    result = subprocess.run([*argv, "-t", str(per_client), url], capture_output=True, text=True, timeout=900)
    tps = re.search(r"^tps = ([\d.]+)", result.stdout, re.MULTILINE)
    if result.returncode != 0 or tps is None:
        raise Unavailable(f"pgbench failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    remaining = count_jobs(url)
    if remaining:
        raise Unavailable(f"pgbench {form} ceiling left {remaining} of {count} jobs")
    # tps excludes connection set-up, like the psycopg ceiling, so transactions / tps is the time the
    # loop took; the few transactions that found no job (the last ones) are in it.
    transactions = per_client * clients
    jobs_per_s = float(tps.group(1)) * count / transactions
    details = {"jobs": count, "clients": clients, "transactions": transactions, "remaining_jobs": remaining}
    if form == "batched":
        details["batch"] = BATCH
    return Measured({f"drain_j{clients}": jobs_per_s}, details)
