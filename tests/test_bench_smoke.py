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
    assert "SQL/pgbench" in result.stdout  # the table was printed
    # Both kinds of kongtask task are columns of their own, labelled as such.
    assert "kongtask async" in result.stdout and "kongtask def" in result.stdout
    report: dict[str, Any] = json.loads(json_path.read_text())
    return report


def test_quick_benchmark_drains_every_job_and_reports_every_system(pg_server_url: str, tmp_path: Path) -> None:
    report = _run_quick_benchmark(pg_server_url, tmp_path / "bench.json")

    assert report.keys() >= EXPECTED_KEYS
    assert report["settings"]["jobs_count"] == 60
    targets = report["targets"]
    assert len(targets) == 10
    assert all(target["met"] in (True, False, None) for target in targets)
    # The drain targets hold for def tasks too, and each target says which kind it judges.
    def_targets = [target for target in targets if target["system"] == "kongtask-def"]
    assert {target["metric"] for target in def_targets} == {"drain_j1", "drain_j4", "rss_j8"}
    assert all(target["target"].startswith("def: ") for target in def_targets)
    assert all(target["target"].startswith("async: ") for target in targets if target["system"] == "kongtask")
    details, figures = report["details"], report["figures"]

    # The kongtask CLI is part of this repository, so its rows must be real figures, for async def
    # tasks (system "kongtask") and plain def tasks ("kongtask-def") alike.
    for system in ("kongtask", "kongtask-def"):
        assert not report["systems"][system].startswith("kongtask CLI not available"), report["systems"]
        for measurement in ("drain_j1", "drain_j4", "drain_j8"):
            assert details[measurement][system]["remaining_jobs"] == 0, details[measurement]
        for metric in ("startup_s", "drain_j1", "drain_j4", "drain_j8", "cpu_j1", "latency_avg", "rss_j8"):
            assert figures[metric][system]["value"] > 0, (system, metric, figures[metric])
        assert report["ratios"][system]["drain_j1"]["psycopg"] > 0, report["ratios"]
    assert "bench/tasks_def" in report["systems"]["kongtask-def"], report["systems"]

    # The psycopg ceiling needs nothing beyond the test's own dependencies.
    for measurement in ("drain_j1", "drain_j4"):
        assert details[measurement]["psycopg"]["remaining_jobs"] == 0
    if "pgbench not installed" not in report["systems"]["pgbench"]:
        assert details["drain_j1"]["pgbench"]["remaining_jobs"] == 0
    # Node may be missing or uninstallable here (no npm registry); when it ran, it drained too.
    node = details["drain_j1"].get("node", {})
    if report["settings"]["node"] and "unavailable" not in node:
        assert node["remaining_jobs"] == 0
