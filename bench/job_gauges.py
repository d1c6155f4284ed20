"""``python -m bench.job_gauges``: what one count of the ``kongtask_jobs`` gauge costs on a big table.

For each schema generation (v0.1.0, and 0.18 with ``--to latest``), a fresh database gets
``--jobs-count`` jobs in one ``insert ... select from generate_series``, spread over 10 tasks: one in
7 scheduled a day ahead, one in 19 dead (attempts used up), one in 97 in 1,000 named queues of
which 200 are locked, the rest due with a queue of their own (v0.1.0) or none (0.18). Then the
generation's ``job_gauges`` statement, exactly as the metrics send it, runs ``--repeats`` times on
one connection; the first run warms the cache and is not counted.

Runs on DATABASE_URL when set, else a throwaway server (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psycopg

from kongtask._schema import v0_1, v0_18

from .db import SCHEMA, fresh_database
from .results import V0_1, V0_18
from .server import provide_server, read_facts

_FILL_V0_1 = """
insert into graphile_worker.jobs (task_identifier, queue_name, run_at, attempts, max_attempts)
select 'task_' || (i %% 10),
  case when i %% 97 = 0 then 'named_' || (i %% 1000) else gen_random_uuid()::text end,
  case when i %% 7 = 0 then now() + interval '1 day' else now() - interval '1 minute' end,
  case when i %% 19 = 0 then 25 else 0 end, 25
from generate_series(1, %(count)s) i;
update graphile_worker.job_queues set locked_by = 'worker-bench', locked_at = now()
where queue_name in (select 'named_' || i from generate_series(0, 199) i);
analyze graphile_worker.jobs, graphile_worker.job_queues
"""

_FILL_V0_18 = """
insert into graphile_worker._private_tasks (identifier) select 'task_' || i from generate_series(0, 9) i;
insert into graphile_worker._private_job_queues (queue_name, locked_by, locked_at)
select 'named_' || i, case when i < 200 then 'worker-bench' end, case when i < 200 then now() end
from generate_series(0, 999) i;
insert into graphile_worker._private_jobs (task_id, job_queue_id, run_at, attempts, max_attempts)
select t.id, q.id,
  case when i %% 7 = 0 then now() + interval '1 day' else now() - interval '1 minute' end,
  case when i %% 19 = 0 then 25 else 0 end, 25
from generate_series(1, %(count)s) i
join graphile_worker._private_tasks t on t.identifier = 'task_' || (i %% 10)
left join graphile_worker._private_job_queues q
  on q.queue_name = case when i %% 97 = 0 then 'named_' || (i %% 1000) end;
analyze graphile_worker._private_jobs, graphile_worker._private_tasks, graphile_worker._private_job_queues
"""

GENERATIONS = {
    "v0.1.0": (_FILL_V0_1, v0_1.schema_named(SCHEMA).job_gauges, None),
    "0.18": (_FILL_V0_18, v0_18.schema_named(SCHEMA).job_gauges, "latest"),
}


def measure(url: str, fill: str, statement: str, count: int, repeats: int) -> tuple[float, list[float], int]:
    """Fills the database, then times the statement: (seconds to fill, milliseconds per count, rows)."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for part in fill.split(";"):
            if part.strip():
                conn.execute(part.strip(), {"count": count})  # every "%" of the fill is "%%"
        filled = time.perf_counter() - started
        rows = conn.execute(statement, ()).fetchall()  # warm-up, not counted
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            conn.execute(statement, ()).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return filled, times, len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.job_gauges", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs-count", type=int, default=1_000_000, metavar="N", help="jobs in the table")
    parser.add_argument("--repeats", type=int, default=10, metavar="N", help="counts timed, after one warm-up")
    parser.add_argument("--generation", choices=[*GENERATIONS, "both"], default="both")
    args = parser.parse_args(argv)
    chosen = list(GENERATIONS) if args.generation == "both" else [args.generation]
    with provide_server(os.environ.get("DATABASE_URL")) as server:
        print(f"# {read_facts(server).describe()} ({server.origin}); {args.jobs_count:,} jobs", file=sys.stderr)
        print(f"{'generation':<10} {'fill s':>7} {'median ms':>10} {'min ms':>7} {'max ms':>7} {'rows':>5}")
        for generation in chosen:
            fill, statement, to = GENERATIONS[generation]
            with fresh_database(server, f"gauges_{generation.replace('.', '_')}", V0_18 if to else V0_1) as url:
                filled, times, rows = measure(url, fill, statement, args.jobs_count, args.repeats)
            print(f"{generation:<10} {filled:>7.1f} {statistics.median(times):>10.0f} {min(times):>7.0f} "
                  f"{max(times):>7.0f} {rows:>5}", flush=True)


if __name__ == "__main__":
    main()
