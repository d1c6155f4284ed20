"""A smoke run of ``python -m bench --quick``: it runs end to end, drains every job it inserts and
writes the JSON the report promises. No timing is asserted; the test server is tuned for tests."""

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


def _run_quick_benchmark(server_url: str, json_path: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench", "--quick", "--jobs-count", "60", "--latency-samples", "10"]
    argv += ["--json", str(json_path)]
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("node/npm not installed: the smoke run skips Node graphile-worker (--no-node)")
        argv.append("--no-node")
    # The bench creates (and drops) one database per measurement on this server.
    env = {**os.environ, "DATABASE_URL": server_url}
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "ceiling batched pgbench" in result.stdout  # the tables were printed
    # Both kinds of kongtask task are columns of their own, labelled as such.
    assert "kongtask async" in result.stdout and "kongtask def" in result.stdout
    report: dict[str, Any] = json.loads(json_path.read_text())
    return report


def test_quick_benchmark_drains_every_job_and_reports_every_system(pg_server_url: str, tmp_path: Path) -> None:
    report = _run_quick_benchmark(pg_server_url, tmp_path / "bench.json")

    assert report.keys() >= EXPECTED_KEYS
    assert report["settings"]["jobs_count"] == 60
    assert report["settings"]["jobs_list"] == [1, 4, 8, 16]  # the default, in quick mode too
    targets = report["targets"]
    assert all(target["met"] in (True, False, None) for target in targets)
    # Each target says which kind it judges; the issue-12 ones are there for both kinds.
    assert all(target["target"].startswith(("async: ", "def: ", "best")) for target in targets)
    for kind, system in (("async", "kongtask"), ("def", "kongtask-def")):
        mine = {t["metric"] for t in targets if t["system"] == system and t["target"].startswith(kind)}
        assert "rss_j1" in mine and any(metric.startswith("cpu_j") for metric in mine), (kind, mine)
    def_vs_async = [target for target in targets if target["against"] == "kongtask"]
    assert {target["metric"] for target in def_vs_async} == {"drain_j1", "drain_j4", "drain_j8", "drain_j16"}
    (vs_ceiling,) = [target for target in targets if target["against"] == "pgbench-batched"]
    assert vs_ceiling["against_metric"] == "drain_j4"
    if "pgbench not installed" not in report["systems"]["pgbench-batched"]:
        assert vs_ceiling["actual"] > 0, vs_ceiling
    # Without --baseline, the comparison with the build before batching says what it needs.
    (vs_baseline,) = [target for target in targets if target["against"] == "baseline"]
    assert vs_baseline["met"] is None and "--baseline" in vs_baseline["note"]
    details, figures = report["details"], report["figures"]

    # The kongtask CLI is part of this repository, so its rows must be real figures, for async def
    # tasks (system "kongtask") and plain def tasks ("kongtask-def") alike, at every --jobs.
    for system in ("kongtask", "kongtask-def"):
        assert not report["systems"][system].startswith("kongtask CLI not available"), report["systems"]
        for jobs in (1, 4, 8, 16):
            assert details[f"drain_j{jobs}"][system]["remaining_jobs"] == 0, details[f"drain_j{jobs}"]
            for metric in (f"drain_j{jobs}", f"cpu_j{jobs}", f"rss_j{jobs}"):
                assert figures[metric][system]["value"] > 0, (system, metric, figures[metric])
        for metric in ("startup_s", "latency_avg", "latency_p99"):
            assert figures[metric][system]["value"] > 0, (system, metric, figures[metric])
        assert report["ratios"][system]["drain_j1"]["psycopg"] > 0, report["ratios"]
        assert report["ratios"][system]["drain_j4"]["psycopg-batched"] > 0, report["ratios"]
    assert "bench/tasks_def" in report["systems"]["kongtask-def"], report["systems"]

    # The psycopg ceilings, single and batched, need nothing beyond the test's own dependencies.
    for measurement in ("drain_j1", "drain_j4"):
        for system in ("psycopg", "psycopg-batched"):
            assert details[measurement][system]["remaining_jobs"] == 0, (measurement, system)
    assert details["drain_j4"]["psycopg-batched"]["batch"] == 50
    if "pgbench not installed" not in report["systems"]["pgbench"]:
        for measurement in ("drain_j1", "drain_j4"):
            for system in ("pgbench", "pgbench-batched"):
                assert details[measurement][system]["remaining_jobs"] == 0, (measurement, system)
    # Node may be missing or uninstallable here (no npm registry); when it ran, it drained too.
    node = details["drain_j1"].get("node", {})
    if report["settings"]["node"] and "unavailable" not in node:
        assert node["remaining_jobs"] == 0
