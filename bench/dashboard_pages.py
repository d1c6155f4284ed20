"""``python -m bench.dashboard_pages``: how long the dashboard's pages take on a table of many jobs.

For each schema (v0.1.0 and 0.18) it fills a fresh database with ``--jobs-count`` jobs (1,000,000 by
default) in a mix a busy queue might hold, then asks the dashboard's ASGI app itself (in this
process, no HTTP server or browser around it) for each page, ``--rounds`` times, and prints the
median and the slowest, in milliseconds:

- 10 tasks (one of them, ``rare_task``, with 10 jobs), 90 % of the jobs without a queue and 10 % in
  100 named queues (of which 5 are locked by two workers);
- 20 % scheduled in the next day, 2 % failed (attempts 1 to 3, updated within the last two hours),
  0.5 % dead (attempts used up), the rest due.

The overview is measured cold (its counts are cached for a while, see ``kongtask/dashboard``) and
warm; the job list on its first page, on a page deep in the table (below the median id), and with
each filter. Runs on DATABASE_URL when set, else a throwaway server (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import kongtask
from kongtask.dashboard import Dashboard

from .db import url_with_dbname
from .server import provide_server, read_facts

TASKS = ["send_email", "resize_image", "sync_crm", "charge_card", "rebuild_index", "notify_slack",
         "export_csv", "import_feed", "cleanup"]
RARE_TASK = "rare_task"
CHUNK = 100_000

# The job mix, from i (1..count): the task by a skewed pick, a named queue for one job in ten, and
# the state by i's remainder: 20 % scheduled, 2 % failed, 0.5 % dead.
_TASK = "(array[{tasks}])[1 + (i * 7919 %% 100) / 12]"
_QUEUE = "case when i %% 10 = 0 then 'queue-' || (i / 10 %% 100) end"
_RUN_AT = "case when i %% 5 = 1 then now() + (i %% 86400) * interval '1 second' else now() - interval '1 minute' end"
_FAILED = "i %% 200 in (2, 3, 4, 5)"
_DEAD = "i %% 200 = 7"


def _task_array() -> str:
    return ", ".join(f"'{name}'" for name in TASKS)


def seed_v0_1(url: str, count: int) -> None:
    """``count`` jobs through v0.1.0's own table and triggers (a job without a queue gets one)."""
    insert = f"""
    insert into graphile_worker.jobs (task_identifier, payload, queue_name, run_at, attempts, max_attempts,
      last_error, updated_at)
    select {_TASK.format(tasks=_task_array())}, json_build_object('id', i, 'to', 'user' || i || '@example.com'),
      coalesce({_QUEUE}, gen_random_uuid()::text), {_RUN_AT},
      case when {_DEAD} then 25 when {_FAILED} then 1 + i %% 3 else 0 end, 25,
      case when {_DEAD} or {_FAILED} then 'Error: SMTP refused (' || i %% 7 || ')' end,
      now() - (i %% 7200) * interval '1 second'
    from generate_series(%s::bigint, %s::bigint) as i
    """
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(1, count + 1, CHUNK):
            conn.execute(insert, (start, min(start + CHUNK - 1, count)))  # type: ignore[arg-type]
            print(f"  v0.1.0: {min(start + CHUNK - 1, count):,} jobs", file=sys.stderr)
        conn.execute(
            "insert into graphile_worker.jobs (task_identifier, payload) select %s, '{}' from generate_series(1, 10)",
            (RARE_TASK,),
        )
        conn.execute("update graphile_worker.job_queues set locked_by = 'worker-' || (queue_name < 'queue-5'),"
                     " locked_at = now() - interval '10 minutes' where queue_name in"
                     " ('queue-1', 'queue-2', 'queue-3', 'queue-50', 'queue-60')")
        conn.execute("vacuum analyze graphile_worker.jobs")
        conn.execute("vacuum analyze graphile_worker.job_queues")


def seed_v0_18(url: str, count: int) -> None:
    """``count`` jobs straight into 0.18's private tables (it has no triggers on them)."""
    insert = f"""
    insert into graphile_worker._private_jobs (task_id, job_queue_id, payload, run_at, attempts, max_attempts,
      last_error, updated_at)
    select t.id, q.id, json_build_object('id', i, 'to', 'user' || i || '@example.com'), {_RUN_AT},
      case when {_DEAD} then 25 when {_FAILED} then 1 + i %% 3 else 0 end, 25,
      case when {_DEAD} or {_FAILED} then 'Error: SMTP refused (' || i %% 7 || ')' end,
      now() - (i %% 7200) * interval '1 second'
    from generate_series(%s::bigint, %s::bigint) as i
    inner join graphile_worker._private_tasks as t on t.identifier = {_TASK.format(tasks=_task_array())}
    left join graphile_worker._private_job_queues as q on q.queue_name = {_QUEUE}
    order by i
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into graphile_worker._private_tasks (identifier) select unnest(%s::text[])",
                     ([*TASKS, RARE_TASK],))
        conn.execute("insert into graphile_worker._private_job_queues (queue_name)"
                     " select 'queue-' || n from generate_series(0, 99) as n")
        for start in range(1, count + 1, CHUNK):
            conn.execute(insert, (start, min(start + CHUNK - 1, count)))  # type: ignore[arg-type]
            print(f"  0.18: {min(start + CHUNK - 1, count):,} jobs", file=sys.stderr)
        conn.execute(
            "insert into graphile_worker._private_jobs (task_id, payload) select t.id, '{}'"
            " from graphile_worker._private_tasks as t, generate_series(1, 10) where t.identifier = %s",
            (RARE_TASK,),
        )
        locks = ("set locked_by = 'worker-' || (queue_name < 'queue-5'), locked_at = now() - interval '10 minutes'"
                 " where queue_name in ('queue-1', 'queue-2', 'queue-3', 'queue-50', 'queue-60')")
        conn.execute("update graphile_worker._private_job_queues " + locks)
        conn.execute("vacuum analyze graphile_worker._private_jobs")
        conn.execute("vacuum analyze graphile_worker._private_job_queues")


class Pages:
    """GET requests straight to the dashboard's ASGI app, timed."""

    def __init__(self, app: Dashboard) -> None:
        self.app = app

    async def get(self, path: str, query: str = "") -> tuple[int, bytes]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
        }
        status = 0
        body = bytearray()

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])  # type: ignore[call-overload]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))  # type: ignore[arg-type]

        await self.app(scope, receive, send)  # type: ignore[arg-type]
        return status, bytes(body)


async def _timed(call: Callable[[], Awaitable[tuple[int, bytes]]], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        status, body = await call()
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise SystemExit(f"a page answered {status}: {body[:300]!r}")
    return times


async def measure(url: str, rounds: int) -> list[tuple[str, list[float]]]:
    async with Dashboard(connection_string=url) as app:
        pages = Pages(app)
        with psycopg.connect(url, autocommit=True) as conn:
            table = "jobs" if (await app.check()) == "v0.1.0" else "_private_jobs"
            row = conn.execute(sql.SQL("select max(id) / 2 from graphile_worker.{}").format(sql.Identifier(table)))
            middle = int(row.fetchone()[0])  # type: ignore[index]
        results: list[tuple[str, list[float]]] = []

        async def cold_overview() -> tuple[int, bytes]:
            app.forget_counts()
            return await pages.get("/")

        results.append(("overview, counted afresh", await _timed(cold_overview, rounds)))
        estimated = b"PostgreSQL's estimates" in (await cold_overview())[1]
        print(f"#   the overview's counts were {'estimates (counting timed out)' if estimated else 'exact'}",
              file=sys.stderr)
        results.append(("overview, counts cached", await _timed(lambda: pages.get("/"), rounds)))
        cases = [
            ("job list, first page", ""),
            ("job list, a page below the middle id", f"before={middle}"),
            ("job list, state=failed", "state=failed"),
            ("job list, state=dead", "state=dead"),
            ("job list, state=locked", "state=locked"),
            ("job list, task=send_email", "task=send_email"),
            (f"job list, task={RARE_TASK} (10 jobs)", f"task={RARE_TASK}"),
            ("job list, queue=queue-7", "queue=queue-7"),
            ("job list, error text 'refused (3'", "error=refused+%283"),
            ("job list, error text matching nothing", "error=no+such+text"),
        ]
        for label, query in cases:
            results.append((label, await _timed(lambda q=query: pages.get("/jobs", q), rounds)))  # type: ignore[misc]
        results.append(("job page", await _timed(lambda: pages.get(f"/jobs/{middle}"), rounds)))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs-count", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="a server to create the databases on")
    parser.add_argument("--keep", action="store_true", help="keep the databases (named kongtask_dashboard_*)")
    args = parser.parse_args()
    with provide_server(args.database_url) as server:
        print(f"# {read_facts(server).describe()}; {args.jobs_count:,} jobs; {args.rounds} rounds", file=sys.stderr)
        report: dict[str, dict[str, list[float]]] = {}
        for generation, to, seed in (("v0.1.0", None, seed_v0_1), ("0.18", "latest", seed_v0_18)):
            name = f"kongtask_dashboard_{generation.replace('.', '_')}"
            with psycopg.connect(server.admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            url = url_with_dbname(server.admin_url, name)
            asyncio.run(kongtask.migrate(connection_string=url, to=to))
            started = time.perf_counter()
            seed(url, args.jobs_count)
            print(f"# {generation}: seeded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            for label, times in asyncio.run(measure(url, args.rounds)):
                report.setdefault(label, {})[generation] = times
            if not args.keep:
                with psycopg.connect(make_conninfo(server.admin_url), autocommit=True) as conn:
                    conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        print(f"| page, {args.jobs_count:,} jobs | v0.1.0 median (max) ms | 0.18 median (max) ms |")
        print("|---|---|---|")
        for label, by_generation in report.items():
            cells = [f"{statistics.median(t):.0f} ({max(t):.0f})" for t in by_generation.values()]
            print(f"| {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
