"""`kongtask dashboard`: the real command in a subprocess, its options and its one-line refusals."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.cli_support import Background, clean_env, one_line
from tests.cli_support import kongtask as run

TOKEN = "a-token-of-twenty-chars"


def _get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _started(dashboard: Background) -> str:
    line = dashboard.wait_for(" on http://", timeout=60)
    found = re.search(r"dashboard of \S+ \(graphile-worker v0\.1\.0 schema, schema graphile_worker\) on (http://\S+/)",
                      line)
    assert found, line
    return found[1]


def test_the_dashboard_serves_until_sigterm_then_exits_0(tmp_path: Path, migrated_url: str) -> None:
    dashboard = Background("dashboard", "--port", "0", cwd=tmp_path, env=clean_env(DATABASE_URL=migrated_url))
    try:
        url = _started(dashboard)
        status, page = _get(url)
        assert status == 200 and "<h1>Overview</h1>" in page and "Retry" not in page
        status, page = _get(url + "jobs?state=dead")
        assert status == 200 and "No jobs match" in page
    finally:
        code = dashboard.stop(signal.SIGTERM)
    assert code == 0, dashboard.output()
    assert "Traceback" not in dashboard.output() and "uvicorn" not in dashboard.output()


def test_a_token_from_the_environment_guards_it_and_read_only_hides_the_actions(
    tmp_path: Path, migrated_url: str
) -> None:
    env = clean_env(DATABASE_URL=migrated_url, KONGTASK_DASHBOARD_TOKEN=TOKEN, KONGTASK_READ_ONLY="true")
    dashboard = Background("dashboard", "--port", "0", cwd=tmp_path, env=env)
    try:
        url = _started(dashboard)
        assert "(read-only, token required)" in dashboard.output()
        assert _get(url)[0] == 401
        basic = "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()
        status, page = _get(url, basic)
        assert status == 200 and "read-only" in page
    finally:
        dashboard.stop(signal.SIGINT)
    assert TOKEN not in dashboard.output()


def test_listening_beyond_loopback_without_a_token_is_refused_in_one_line(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing")
    refused = run("dashboard", "--host", "0.0.0.0", cwd=tmp_path, env=env)
    assert refused.returncode == 2
    line = one_line(refused.stderr)
    assert line.startswith("kongtask: error:") and "needs a token" in line and "--token" in line
    short = run("dashboard", "--host", "0.0.0.0", "--token", "short", cwd=tmp_path, env=env)
    assert short.returncode == 2 and "at least 16" in one_line(short.stderr)


def test_a_database_without_the_schema_is_one_line(tmp_path: Path, db_url: str) -> None:
    result = run("dashboard", "--port", "0", cwd=tmp_path, env=clean_env(DATABASE_URL=db_url))
    assert result.returncode == 1
    assert "no kongtask schema named 'graphile_worker'" in one_line(result.stderr)


def test_a_port_in_use_is_one_line(tmp_path: Path, migrated_url: str) -> None:
    first = Background("dashboard", "--port", "0", cwd=tmp_path, env=clean_env(DATABASE_URL=migrated_url))
    try:
        port = _started(first).rsplit(":", 1)[1].strip("/")
        second = run("dashboard", "--port", port, cwd=tmp_path, env=clean_env(DATABASE_URL=migrated_url))
        assert second.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in one_line(second.stderr)
    finally:
        first.stop()


def test_config_shows_the_dashboard_options_with_the_token_masked(tmp_path: Path) -> None:
    (tmp_path / "kongtask.toml").write_text('dashboard_port = 9000\nread_only = true\n')
    shown = run("config", cwd=tmp_path, env=clean_env(KONGTASK_DASHBOARD_TOKEN=TOKEN))
    assert shown.returncode == 0, shown.stderr
    assert "dashboard_port = 9000" in shown.stdout and "read_only = true" in shown.stdout
    assert 'dashboard_token = "***"  # KONGTASK_DASHBOARD_TOKEN' in shown.stdout and TOKEN not in shown.stdout


def test_without_the_dashboard_extra_it_says_what_to_install(tmp_path: Path, migrated_url: str) -> None:
    # As if uvicorn were not installed: an import of it fails.
    script = "import sys; sys.modules['uvicorn'] = None; from kongtask.cli import main; main(['dashboard'])"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=clean_env(DATABASE_URL=migrated_url),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert one_line(result.stderr) == "kongtask: error: the dashboard needs uvicorn: pip install 'kongtask[dashboard]'"
