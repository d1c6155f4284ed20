"""``python -m bench.bulk_add``: how fast many jobs are added at once, beside the SQL itself.

Each measurement adds ``--jobs-count`` ``log_if_999`` jobs (payload ``{"id": i}``, a queue of their
own) to a fresh database, best of ``--rounds``:

- ``sql``: one ``insert ... select from generate_series`` typed in SQL, the ceiling: the same rows
  and triggers, with no parameters to send;
- ``add_jobs``: :func:`kongtask.add_jobs` on a list of JobSpecs, checks included, and the same with
  other rows per statement (``--chunk-sizes``), and with ``returning *`` read back (the design
  add_jobs did not take);
- ``cli``: ``kongtask add-jobs --file`` on a JSON-lines file, the process's whole life;
- ``one queue``: 10,000 jobs (at most) sharing one named queue, whose count the schema's trigger
  rewrites once per job inside the one transaction.

Runs on DATABASE_URL when set, else a throwaway server (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg.rows import tuple_row

import kongtask
from kongtask._schema import jobs

from .db import SCHEMA, count_jobs, fresh_database
from .server import Server, provide_server, read_facts

_SQL_CEILING = (
    "insert into graphile_worker.jobs (task_identifier, payload)"
    " select 'log_if_999', json_build_object('id', i) from generate_series(1, %s) i"
)
ONE_QUEUE_MAX = 10_000


def _specs(count: int, queue_name: str | None = None) -> list[kongtask.JobSpec]:
    return [kongtask.JobSpec("log_if_999", {"id": i}, queue_name=queue_name) for i in range(count)]


def _sql(url: str, count: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(_SQL_CEILING, (count,))
        return time.perf_counter() - started


def _add_jobs(url: str, specs: list[kongtask.JobSpec], chunk_size: int, returning: bool = False) -> float:
    async def add() -> float:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            if chunk_size == jobs.ADD_JOBS_CHUNK and not returning:
                await kongtask.add_jobs(specs, connection=conn)
            else:
                statements = jobs.add_jobs_statements(SCHEMA, specs, chunk_size=chunk_size)
                if returning:
                    statements = [(text + " returning *", params) for text, params in statements]
                    async with conn.transaction():
                        for statement in statements:
                            cursor = conn.cursor(row_factory=tuple_row)
                            await cursor.execute(*statement)
                            [jobs.job_or_none(row) for row in await cursor.fetchall()]
                else:
                    await jobs.insert_jobs(conn, statements)
            return time.perf_counter() - started

    return asyncio.run(add())


def _cli(url: str, count: int, scratch: Path) -> float:
    lines = scratch / "jobs.jsonl"
    lines.write_text("".join(json.dumps({"task": "log_if_999", "payload": {"id": i}}) + "\n" for i in range(count)))
    argv = [str(Path(sys.executable).parent / "kongtask"), "add-jobs", "--file", str(lines)]
    env = {**os.environ, "DATABASE_URL": url}
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=scratch, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or result.stdout.strip() != f"added {count} jobs":
        raise RuntimeError(f"kongtask add-jobs failed ({result.returncode}): {result.stderr}")
    return elapsed


def _best(server: Server, label: str, count: int, rounds: int, run: Callable[[str], float]) -> float:
    """The fastest of ``rounds`` runs, each on a fresh database, after checking every job arrived."""
    best = float("inf")
    for _ in range(rounds):
        with fresh_database(server, label) as url:
            elapsed = run(url)
            added = count_jobs(url)
            if added != count:
                raise RuntimeError(f"{label}: {added} jobs in the table, {count} expected")
        best = min(best, elapsed)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_add", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs-count", type=int, default=100_000, metavar="N", help="jobs per measurement")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="runs per measurement, best kept")
    parser.add_argument("--chunk-sizes", default="1000,5000,10000,50000,all", metavar="LIST",
                        help="rows per statement to compare (all: one statement)")
    args = parser.parse_args(argv)
    count, rounds = args.jobs_count, args.rounds
    chunks = [count if size == "all" else int(size) for size in args.chunk_sizes.split(",")]
    specs = _specs(count)
    one_queue = min(count, ONE_QUEUE_MAX)
    measurements: list[tuple[str, int, Callable[[str], float]]] = [
        ("sql (insert from generate_series, the ceiling)", count, lambda url: _sql(url, count)),
        *((f"add_jobs, {size:,} rows per statement" + (" (the default)" if size == jobs.ADD_JOBS_CHUNK else ""),
           count, lambda url, size=size: _add_jobs(url, specs, size)) for size in chunks),  # type: ignore[misc]
        ("add_jobs returning * (not taken)", count, lambda url: _add_jobs(url, specs, jobs.ADD_JOBS_CHUNK, True)),
        (f"add_jobs, {one_queue:,} jobs in one named queue", one_queue,
         lambda url: _add_jobs(url, _specs(one_queue, "one"), jobs.ADD_JOBS_CHUNK)),
    ]
    with provide_server(os.environ.get("DATABASE_URL")) as server, tempfile.TemporaryDirectory() as scratch:
        measurements.append(("kongtask add-jobs --file (whole process)", count,
                             lambda url: _cli(url, count, Path(scratch))))
        print(f"# {read_facts(server).describe()} ({server.origin}); {count:,} jobs, best of {rounds}", file=sys.stderr)
        ceiling = None
        print(f"{'measurement':<52} {'seconds':>8} {'jobs/s':>9} {'vs sql':>7}")
        for label, jobs_count, run in measurements:
            print(f"  {label} ...", file=sys.stderr)
            seconds = _best(server, label.split()[0].replace("-", "_"), jobs_count, rounds, run)
            rate = jobs_count / seconds
            ceiling = ceiling or rate
            print(f"{label:<52} {seconds:>8.3f} {rate:>9,.0f} {rate / ceiling:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
