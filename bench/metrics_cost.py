"""``python -m bench.metrics_cost``: what the Prometheus metrics cost a worker, per job.

The drain of ``python -m bench`` (``--jobs-count`` ``log_if_999`` jobs, then ``worker --once --jobs
N`` timed to exit, each on a fresh database), run with and without ``--metrics-port 0``, side by
side: the two run back to back in every round, and swap places every round. Two figures per kind
and ``--jobs``: each side's best round (interference only slows a drain down), and the median over
the rounds of the CPU per job on/off of the two runs of one round, which a load that changes
between rounds moves less. Nothing scrapes meanwhile, so it measures the hooks on the job path and
the server standing by, start-up (importing prometheus_client, some 30 ms) included; a scrape's
own cost is the scraper's request.

Runs on DATABASE_URL when set, else a throwaway server (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
from pathlib import Path

from .db import fresh_database
from .measure import drain
from .results import KONGTASK_KINDS
from .server import provide_server, read_facts
from .workers import WorkerCommand, kongtask_command


def with_metrics(command: WorkerCommand) -> WorkerCommand:
    return dataclasses.replace(command, system=command.system + "+metrics",
                               prefix=(*command.prefix, "--metrics-port", "0"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs-count", type=int, default=20_000, metavar="N", help="jobs per drain")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds, best kept")
    parser.add_argument("--jobs-list", default="1,8", metavar="N,N,...", help="the --jobs values to drain at")
    args = parser.parse_args(argv)
    jobs_list = [int(n) for n in args.jobs_list.split(",") if n.strip()]
    pairs = [(kongtask_command(kind), with_metrics(kongtask_command(kind))) for kind in KONGTASK_KINDS]
    best: dict[tuple[str, int], tuple[float, float]] = {}  # (system, --jobs) -> (jobs/s, CPU µs per job)
    paired: dict[tuple[str, int], list[float]] = {}  # (kind, --jobs) -> CPU per job on/off, round by round
    with provide_server(os.environ.get("DATABASE_URL")) as server, tempfile.TemporaryDirectory() as scratch:
        print(f"# {read_facts(server).describe()} ({server.origin}); {args.jobs_count:,} jobs per drain, "
              f"best of {args.rounds}", file=sys.stderr)
        for round_ in range(args.rounds):
            for jobs in jobs_list:
                for off, on in pairs:
                    cpus: dict[str, float] = {}
                    for command in (off, on) if round_ % 2 == 0 else (on, off):
                        with fresh_database(server, f"metrics_{jobs}") as url:
                            measured = drain(command, url, args.jobs_count, jobs, Path(scratch))
                        rate, cpu = measured.figures[f"drain_j{jobs}"], measured.figures[f"cpu_j{jobs}"]
                        print(f"  round {round_ + 1} --jobs {jobs} {command.system:<22} {rate:>9,.0f} jobs/s "
                              f"{cpu:>6.1f} µs CPU/job", file=sys.stderr, flush=True)
                        seen = best.get((command.system, jobs))
                        best[(command.system, jobs)] = (max(rate, seen[0]), min(cpu, seen[1])) if seen else (rate, cpu)
                        cpus[command.system] = cpu
                    paired.setdefault((off.system, jobs), []).append(cpus[on.system] / cpus[off.system])
    print(f"{'kind':<14} {'--jobs':>6} {'jobs/s off':>11} {'jobs/s on':>10} {'ratio':>6} "
          f"{'CPU/job off':>12} {'CPU/job on':>11} {'ratio':>6} {'paired':>7}")
    for jobs in jobs_list:
        for off, on in pairs:
            (rate_off, cpu_off), (rate_on, cpu_on) = best[(off.system, jobs)], best[(on.system, jobs)]
            print(f"{off.system:<14} {jobs:>6} {rate_off:>11,.0f} {rate_on:>10,.0f} {rate_on / rate_off:>5.2f}x "
                  f"{cpu_off:>9.1f} µs {cpu_on:>8.1f} µs {cpu_on / cpu_off:>5.2f}x "
                  f"{statistics.median(paired[(off.system, jobs)]):>6.2f}x")


if __name__ == "__main__":
    main()
