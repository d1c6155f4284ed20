"""``python -m bench``: kongtask on both its schemas against Node graphile-worker (0.1.0 on the
v0.1.0 schema, 0.18.0 on upstream's 0.18 schema) and the SQL ceiling.

Runs on DATABASE_URL when set (creating one database per measurement next to it), else on a
throwaway server of its own. Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from .ceiling import BATCH, pgbench_path
from .db import missing_schema
from .node import node_about, node_command
from .report import Baseline, Verdict, judge, ratios_json, render
from .results import (
    CEILINGS,
    DEFAULT_JOBS_LIST,
    KONGTASK_ALL,
    NODE_SYSTEMS,
    SCHEMA_OF,
    SCHEMAS,
    V0_1,
    WORKERS,
    Results,
    Unavailable,
    in_table_order,
)
from .server import Server, ServerFacts, provide_server, read_facts
from .suite import MEASUREMENTS, Settings, Suite
from .workers import BENCH_DIR, WorkerCommand, kongtask_command, kongtask_package

RESULTS_DIR = BENCH_DIR / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, for a smoke run (figures are not meaningful)")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    parser.add_argument("--jobs-count", type=int, metavar="N", help="jobs per drain (default 20000; --quick 300)")
    parser.add_argument("--latency-samples", type=int, metavar="N", help="latency samples (default 1000; --quick 30)")
    parser.add_argument("--rounds", type=int, metavar="N", help="drain rounds, best kept (default 2; --quick 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="JSON output (default bench/results/<time>.json)")
    parser.add_argument("--no-node", action="store_true", help="skip Node graphile-worker (0.1.0 and 0.18.0)")
    parser.add_argument(
        "--schemas", metavar="NAME,NAME", default=",".join(SCHEMAS),
        help="the database schemas whose systems run: v0.1.0 (kongtask's default; Node 0.1.0, the SQL"
        " ceiling) and 0.18 (`kongtask migrate --to latest`; Node 0.18.0) (default %(default)s)",
    )
    parser.add_argument(
        "--jobs-list", metavar="N,N,...", default=",".join(map(str, DEFAULT_JOBS_LIST)),
        help="the --jobs values each kongtask kind drains at (default %(default)s)",
    )
    parser.add_argument(
        "--baseline", type=Path, metavar="JSON",
        help="the JSON of an earlier run (another build of kongtask): judge the best drain against its best",
    )
    args = parser.parse_args(argv)
    only = set(MEASUREMENTS if not args.only else (name.strip() for name in args.only.split(",") if name.strip()))
    if unknown := only - set(MEASUREMENTS):
        parser.error(f"unknown measurement(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASUREMENTS)}")
    args.only = frozenset(only)
    if args.jobs_count is not None and args.jobs_count < 1:
        parser.error("--jobs-count must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        args.jobs_list = tuple(sorted({int(n) for n in args.jobs_list.split(",") if n.strip()}))
    except ValueError:
        parser.error(f"--jobs-list takes whole numbers separated by commas, not {args.jobs_list!r}")
    if not args.jobs_list or args.jobs_list[0] < 1:
        parser.error("--jobs-list needs at least one --jobs value, each at least 1")
    if args.baseline is not None and not args.baseline.is_file():
        parser.error(f"--baseline: no file at {args.baseline}")
    names = [name.strip() for name in args.schemas.split(",") if name.strip()]
    schemas = {_SCHEMA_NAMES.get(name.lower(), name) for name in names}
    if not schemas or schemas - set(SCHEMAS):
        parser.error(f"--schemas takes {' and/or '.join(SCHEMAS)}, separated by a comma, not {args.schemas!r}")
    args.schemas = tuple(schema for schema in SCHEMAS if schema in schemas)
    if args.latency_samples is not None and args.latency_samples < 2:
        parser.error("--latency-samples must be at least 2 (percentiles need two)")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        jobs_count=args.jobs_count or (300 if args.quick else 20_000),
        latency_samples=args.latency_samples or (30 if args.quick else 1_000),
        latency_warmup=5 if args.quick else 20,
        startup_repeats=2 if args.quick else 5,
        rounds=args.rounds or (1 if args.quick else 2),
        only=args.only,
        jobs_list=args.jobs_list,
        schemas=args.schemas,
    )


#: What --schemas accepts besides the names themselves.
_SCHEMA_NAMES = {"0.1.0": V0_1, "0.1": V0_1, "v0.1": V0_1, "v0.18": "0.18", "0.18.0": "0.18", "latest": "0.18"}


def available_systems(
    no_node: bool, schemas: tuple[str, ...] = SCHEMAS
) -> tuple[dict[str, WorkerCommand], dict[str, str], dict[str, str]]:
    """The workers that can run, the reasons the others cannot, and a line about each for the report.

    Systems of a schema not in ``schemas`` are in none of the three: they are not part of the run.
    """
    commands: dict[str, WorkerCommand] = {}
    missing: dict[str, str] = {}
    about: dict[str, str] = {}
    finders: list[tuple[str, Callable[[], WorkerCommand]]] = [
        *((system, partial(kongtask_command, system)) for system in KONGTASK_ALL),
        *((system, partial(node_command, system)) for system in NODE_SYSTEMS),
    ]
    for system, find in finders:
        if SCHEMA_OF[system] not in schemas:
            continue
        if system in NODE_SYSTEMS and no_node:
            missing[system] = about[system] = "not run: --no-node"
            continue
        if reason := missing_schema(SCHEMA_OF[system]):
            missing[system] = about[system] = reason
            continue
        try:
            commands[system] = find()
            about[system] = " ".join(commands[system].prefix)
        except Unavailable as exc:
            missing[system] = about[system] = str(exc)
    for system in KONGTASK_ALL:
        if system in commands:
            about[system] += f" (kongtask package {kongtask_package(commands[system])})"
    for system in NODE_SYSTEMS:
        if system in commands:
            about[system] = node_about(system)
    pgbench = pgbench_path()
    if pgbench is None:
        missing["pgbench"] = missing["pgbench-batched"] = "pgbench not installed"
    about["pgbench"] = f"{pgbench} -M prepared, get_job + complete_job" if pgbench else missing["pgbench"]
    batched = f"-M prepared, get_jobs ({BATCH}) + release_jobs, the ids carried by \\gset"
    about["pgbench-batched"] = f"{pgbench} {batched}" if pgbench else missing["pgbench"]
    about["psycopg"] = "prepared get_job + complete_job, one process per connection"
    about["psycopg-batched"] = f"prepared get_jobs ({BATCH}) + release_jobs, one process per connection"
    about["psycopg-batched-0.18"] = f"prepared get_jobs ({BATCH}) + release_jobs of the 0.18 schema, likewise"
    if reason := missing_schema("0.18"):
        missing["psycopg-batched-0.18"] = about["psycopg-batched-0.18"] = reason
    for system in CEILINGS:
        if SCHEMA_OF[system] not in schemas:
            missing.pop(system, None)
            about.pop(system, None)
    return commands, missing, about


def durability_note(facts: ServerFacts) -> str:
    if facts.durability.get("fsync") == "on":
        return "default durability: fsync is on (the benchmark does not turn it off)"
    return "fsync is OFF on this server: figures are not comparable with a default-durability run"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    started = datetime.now(timezone.utc)
    load = [os.getloadavg()[0]]
    commands, missing, about = available_systems(args.no_node, args.schemas)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="kongtask-bench-"))
    try:
        with provide_server(os.environ.get("DATABASE_URL") or None) as server:
            facts = read_facts(server)
            say(f"server: {server.origin}, {facts.describe()}")
            for system in (*WORKERS, *CEILINGS):
                if system in about:
                    say(f"{system}: {about[system]}")
            results = Suite(server, settings, scratch, commands, missing, say).run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load.append(os.getloadavg()[0])
    baseline = Baseline.read(args.baseline) if args.baseline else None
    verdicts = judge(results, settings.jobs_list, baseline, settings.schemas)
    tables = render(results, verdicts, settings.jobs_list)
    print("\n".join(header(started, load, server, facts, settings, about)) + "\n" + tables)
    path = args.json or RESULTS_DIR / f"{started:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = report_json(started, load, server, facts, settings, args, about, results, verdicts)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nJSON: {path}")
    return 0


def header(
    started: datetime, load: list[float], server: Server, facts: ServerFacts, settings: Settings, about: dict[str, str]
) -> list[str]:
    return [
        # The load average says how much the figures can be trusted on a shared machine.
        f"kongtask benchmark, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load avg {load[0]:.2f} before / {load[-1]:.2f} after",
        f"server: {server.origin}, {facts.describe()}",
        f"        {durability_note(facts)}",
        f"drains: {settings.jobs_count} jobs (one insert statement), best of {settings.rounds} round(s), timing the"
        f" whole `--once` process, start-up included; kongtask at --jobs {','.join(map(str, settings.jobs_list))};"
        f" schemas {', '.join(settings.schemas)}",
        f"latency: {settings.latency_samples} samples after {settings.latency_warmup} warm-up, workers taking turns;"
        f" start-up: median of {settings.startup_repeats}; every worker runs with NO_LOG_SUCCESS=1",
        *(f"{system}: {line}" for system, line in about.items()),
        "",
    ]


def report_json(
    started: datetime, load: list[float], server: Server, facts: ServerFacts, settings: Settings,
    args: argparse.Namespace, about: dict[str, str], results: Results, verdicts: list[Verdict],
) -> dict[str, Any]:
    return {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                 "loadavg_1min": load},
        "server": {"origin": server.origin, "version": facts.version, "durability": facts.durability},
        "settings": {
            "quick": args.quick, "jobs_count": settings.jobs_count, "latency_samples": settings.latency_samples,
            "latency_warmup": settings.latency_warmup, "startup_repeats": settings.startup_repeats,
            "rounds": settings.rounds, "jobs_list": list(settings.jobs_list),
            "only": sorted(settings.only), "node": not args.no_node, "schemas": list(settings.schemas),
            "baseline": str(args.baseline) if args.baseline else None,
        },
        "systems": about,
        "units": {metric.key: metric.unit for metric in in_table_order(results.figures)},
        "figures": results.figures_json(),
        "ratios": ratios_json(results),
        "targets": [verdict.json() for verdict in verdicts],
        "details": results.details,
    }


if __name__ == "__main__":
    sys.exit(main())
