"""A smoke run of ``python -m bench --quick``: it runs end to end on both schemas, drains every job it
inserts and writes the JSON the report promises. No timing is asserted; the test server is tuned
for tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

EXPECTED_KEYS = {
    "started_at", "finished_at", "host", "server", "settings", "systems", "units",
    "figures", "ratios", "targets", "details",
}


#: Two --jobs values rather than the four of the default: both schemas' systems run, at half the cost.
SMOKE_JOBS = (1, 8)


def _run_quick_benchmark(server_url: str, json_path: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench", "--quick", "--jobs-count", "60", "--latency-samples", "10"]
    argv += ["--jobs-list", ",".join(map(str, SMOKE_JOBS)), "--json", str(json_path)]
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("node/npm not installed: the smoke run skips Node graphile-worker (--no-node)")
        argv.append("--no-node")
    # The bench creates (and drops) one database per measurement on this server.
    env = {**os.environ, "DATABASE_URL": server_url}
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "ceiling batched pgbench" in result.stdout  # the tables were printed
    # Both kinds of kongtask task are columns of their own, labelled as such, in a table per schema.
    assert "kongtask async" in result.stdout and "kongtask def" in result.stdout
    assert "v0.1.0 schema" in result.stdout and "0.18 schema" in result.stdout
    assert "node 0.18 batched" in result.stdout and "async 0.18/v0.1.0" in result.stdout
    report: dict[str, Any] = json.loads(json_path.read_text())
    return report


def test_quick_benchmark_drains_every_job_and_reports_every_system(pg_server_url: str, tmp_path: Path) -> None:
    report = _run_quick_benchmark(pg_server_url, tmp_path / "bench.json")

    assert report.keys() >= EXPECTED_KEYS
    assert report["settings"]["jobs_count"] == 60
    assert report["settings"]["jobs_list"] == list(SMOKE_JOBS)
    assert report["settings"]["schemas"] == ["v0.1.0", "0.18"]  # both, by default
    targets = report["targets"]
    assert all(target["met"] in (True, False, None) for target in targets)
    # Each target says which kind it judges; the issue-12 ones are there for both kinds.
    kinds = ("async: ", "def: ", "async 0.18: ", "def 0.18: ", "best")
    assert all(target["target"].startswith(kinds) for target in targets), targets
    for kind, system in (("async", "kongtask"), ("def", "kongtask-def")):
        mine = {t["metric"] for t in targets if t["system"] == system and t["target"].startswith(kind)}
        assert "rss_j1" in mine and any(metric.startswith("cpu_j") for metric in mine), (kind, mine)
    def_vs_async = [t for t in targets if t["against"] == "kongtask" and t["system"] == "kongtask-def"]
    assert {target["metric"] for target in def_vs_async} == {f"drain_j{jobs}" for jobs in SMOKE_JOBS}
    # Issue 13: each kind on 0.18 against itself on v0.1.0 at every --jobs, and the best against
    # Node 0.18 batched at its one --jobs.
    for system, itself in (("kongtask-0.18", "kongtask"), ("kongtask-def-0.18", "kongtask-def")):
        vs_own = [t for t in targets if t["system"] == system and t["against"] == itself]
        assert {t["metric"] for t in vs_own} == {f"drain_j{jobs}" for jobs in SMOKE_JOBS}, vs_own
        assert all(t["actual"] > 0 for t in vs_own), vs_own
    (vs_node,) = [t for t in targets if t["against"] == "node-0.18-batched"]
    assert vs_node["system"] in ("kongtask-0.18", "kongtask-def-0.18") and vs_node["against_metric"] == "drain_j8"
    (vs_ceiling,) = [target for target in targets if target["against"] == "pgbench-batched"]
    assert vs_ceiling["against_metric"] == "drain_j4"
    if "pgbench not installed" not in report["systems"]["pgbench-batched"]:
        assert vs_ceiling["actual"] > 0, vs_ceiling
    # Without --baseline, the comparison with the build before batching says what it needs.
    (vs_baseline,) = [target for target in targets if target["against"] == "baseline"]
    assert vs_baseline["met"] is None and "--baseline" in vs_baseline["note"]
    details, figures = report["details"], report["figures"]

    # The kongtask CLI is part of this repository, so its rows must be real figures, for async def
    # tasks (system "kongtask") and plain def tasks ("kongtask-def") alike, at every --jobs, on each
    # schema.
    for system in ("kongtask", "kongtask-def", "kongtask-0.18", "kongtask-def-0.18"):
        assert not report["systems"][system].startswith("kongtask CLI not available"), report["systems"]
        for jobs in SMOKE_JOBS:
            assert details[f"drain_j{jobs}"][system]["remaining_jobs"] == 0, details[f"drain_j{jobs}"]
            for metric in (f"drain_j{jobs}", f"cpu_j{jobs}", f"rss_j{jobs}"):
                assert figures[metric][system]["value"] > 0, (system, metric, figures[metric])
        for metric in ("startup_s", "latency_avg", "latency_p99"):
            assert figures[metric][system]["value"] > 0, (system, metric, figures[metric])
    for system in ("kongtask", "kongtask-def"):
        assert report["ratios"][system]["drain_j1"]["psycopg"] > 0, report["ratios"]
        assert report["ratios"][system]["drain_j1"]["psycopg-batched"] > 0, report["ratios"]
        assert report["ratios"][f"{system}-0.18"]["drain_j1"]["psycopg-batched-0.18"] > 0, report["ratios"]
        assert report["ratios"][system]["drain_j8"][f"{system}-0.18"] > 0, report["ratios"]
    assert "bench/tasks_def" in report["systems"]["kongtask-def"], report["systems"]
    assert "bench/tasks_def" in report["systems"]["kongtask-def-0.18"], report["systems"]

    # The psycopg ceilings, single and batched (on 0.18 too), need nothing beyond the test's own
    # dependencies.
    for measurement in ("drain_j1", "drain_j4"):
        for system in ("psycopg", "psycopg-batched", "psycopg-batched-0.18"):
            assert details[measurement][system]["remaining_jobs"] == 0, (measurement, system)
    assert details["drain_j4"]["psycopg-batched"]["batch"] == 50
    assert figures["drain_j4"]["psycopg-batched-0.18"]["value"] > 0
    if "pgbench not installed" not in report["systems"]["pgbench"]:
        for measurement in ("drain_j1", "drain_j4"):
            for system in ("pgbench", "pgbench-batched"):
                assert details[measurement][system]["remaining_jobs"] == 0, (measurement, system)
    # Node may be missing or uninstallable here (no npm registry); when it ran, it drained too:
    # 0.1.0 at --jobs 1, 0.18 (its defaults, and batched) at --jobs 8.
    for measurement, system in (("drain_j1", "node"), ("drain_j8", "node-0.18"), ("drain_j8", "node-0.18-batched")):
        node = details[measurement].get(system, {})
        if report["settings"]["node"] and "unavailable" not in node:
            assert node["remaining_jobs"] == 0, (system, node)
            assert "graphile-worker" in report["systems"][system], report["systems"]
    assert "completeJobBatchDelay" in report["systems"]["node-0.18-batched"] or not report["settings"]["node"]


def test_quick_keeps_the_default_jobs_list_and_both_schemas() -> None:
    from bench.__main__ import parse_args, settings_from
    from bench.results import DEFAULT_JOBS_LIST, SCHEMAS

    settings = settings_from(parse_args(["--quick"]))
    assert settings.jobs_list == DEFAULT_JOBS_LIST == (1, 4, 8, 16)
    assert settings.schemas == SCHEMAS == ("v0.1.0", "0.18")
    assert settings_from(parse_args(["--schemas", "0.18"])).schemas == ("0.18",)
    assert settings_from(parse_args(["--schemas", " 0.18 , v0.1.0"])).schemas == ("v0.1.0", "0.18")


def test_a_schema_left_out_runs_none_of_its_systems() -> None:
    from bench.__main__ import available_systems
    from bench.report import targets
    from bench.results import SCHEMA_OF, Results

    commands, missing, about = available_systems(no_node=True, schemas=("0.18",))
    assert {SCHEMA_OF[system] for system in (*commands, *missing, *about)} == {"0.18"}
    assert {t.system for t in targets(Results(), (1,), ("0.18",))} <= {"kongtask-0.18", "kongtask-def-0.18"}
