"""The crontab from the command line: where it is found (beside tasks/, --crontab, KONGTASK_CRONTAB,
``crontab`` in kongtask.toml), ``kongtask cron list``, the worker's one-line refusals, a worker
backfilling and running cron jobs, and ``--watch`` reloading the crontab."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.cli_support import Background, clean_env, one_line, runs, write_task
from tests.cli_support import kongtask as run
from tests.cron_support import SCHEMA, known_crontabs

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"

CRONTAB = """\
# every fourth hour, catching up on a day
0 */4 * * * rebuild_index ?fill=1d
*/15 9-17 * * 1-5 send_digest ?id=workday_digest&queue=mail&max=3 {to: 'team', greeting: "hi"}
0 0 31 2 * never
"""


def project(tmp_path: Path, crontab: str | None = CRONTAB) -> Path:
    write_task(tmp_path / "tasks", "record")
    if crontab is not None:
        (tmp_path / "crontab").write_text(crontab)
    return tmp_path


def test_cron_list_shows_each_item_and_its_next_runs(tmp_path: Path) -> None:
    result = run("cron", "list", "--from", "2021-01-01T01:00:00Z", "--count", "2", cwd=project(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "identifier\ttask\tschedule\toptions\tpayload\tnext runs (UTC)",
        "rebuild_index\trebuild_index\t0 */4 * * *\tfill=1d\t\t2021-01-01 04:00, 2021-01-01 08:00",
        # 2021-01-01 is a Friday
        'workday_digest\tsend_digest\t*/15 9-17 * * 1-5\tid=workday_digest&max=3&queue=mail\t'
        '{"to": "team", "greeting": "hi"}\t2021-01-01 09:00, 2021-01-01 09:15',
        "never\tnever\t0 0 31 2 *\t\t\tnone in 8 years",
    ]


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_the_crontab_can_be_named_by_flag_environment_or_config_file(tmp_path: Path, how: str) -> None:
    folder = project(tmp_path)
    (folder / "schedules").mkdir()
    (folder / "schedules" / "nightly").write_text("0 3 * * * nightly_only\n")
    args, env = ["cron", "list"], clean_env()
    if how == "flag":
        args += ["--crontab", "schedules/nightly"]
    elif how == "environment":
        env["KONGTASK_CRONTAB"] = "schedules/nightly"
    else:
        (folder / "kongtask.toml").write_text('crontab = "schedules/nightly"\n')
    result = run(*args, cwd=folder, env=env)
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()[1:]] == ["nightly_only"]


def test_a_crontab_asked_for_must_exist_and_one_beside_the_tasks_is_optional(tmp_path: Path, modern_url: str) -> None:
    folder = project(tmp_path, crontab=None)
    missing = run("worker", "--crontab", "nope", cwd=folder, env=clean_env(DATABASE_URL=UNREACHABLE))
    assert missing.returncode == 1
    assert one_line(missing.stderr) == "kongtask: error: crontab file nope does not exist (given by --crontab)"
    listed = run("cron", "list", cwd=folder)
    assert listed.returncode == 1 and "no crontab here: crontab does not exist" in one_line(listed.stderr)
    # No crontab beside the tasks: the worker runs without cron.
    worked = run("worker", "--once", cwd=folder, env=clean_env(DATABASE_URL=modern_url))
    assert worked.returncode == 0, worked.stderr


def test_a_bad_crontab_line_stops_the_worker_with_its_file_and_line_before_any_connection(tmp_path: Path) -> None:
    folder = project(tmp_path, crontab="0 4 * * * fine\n\n*/0 * * * * broken\n")
    result = run("worker", cwd=folder, env=clean_env(DATABASE_URL=UNREACHABLE))
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        "kongtask: error: crontab:3: invalid wildcard '*/0' in minutes: the divisor must be greater than zero"
    )


def test_a_crontab_on_the_v0_1_0_schema_is_one_line_naming_the_upgrade(tmp_path: Path, migrated_url: str) -> None:
    folder = project(tmp_path)
    result = run("worker", cwd=folder, env=clean_env(DATABASE_URL=migrated_url))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("kongtask: error:")]
    assert "cron needs graphile-worker's 0.18 schema" in line and "`kongtask migrate --to latest`" in line
    assert "Traceback" not in result.stderr
    # --once runs no cron, so the same project runs its jobs on v0.1.0
    assert run("worker", "--once", cwd=folder, env=clean_env(DATABASE_URL=migrated_url)).returncode == 0


def test_a_worker_registers_its_crontab_backfills_and_runs_the_jobs(tmp_path: Path, modern_url: str) -> None:
    folder = project(tmp_path, crontab="* * * * * record ?id=every_minute&fill=3m {source: 'crontab'}\n")
    with psycopg.connect(modern_url, autocommit=True) as conn:
        conn.execute(
            f"insert into {SCHEMA}._private_known_crontabs (identifier, known_since, last_execution)"
            " values ('every_minute', now() - interval '1 day', now() - interval '150 seconds')"
        )
    out = tmp_path / "out.jsonl"
    worker = Background("worker", cwd=folder, env=clean_env(DATABASE_URL=modern_url, KT_TEST_OUT=str(out)))
    try:
        worker.wait_for("cron: 1 item(s) from crontab: every_minute")
        done = worker.wait_until(lambda: [r for r in runs(out) if r["payload"]["_cron"]["backfilled"]],
                                 "the backfilled cron jobs to run")
        assert worker.stop() == 0, worker.output()
    finally:
        worker.kill()
    assert 1 <= len(done) <= 3
    for ran in done:
        assert ran["task"] == "record" and ran["payload"]["source"] == "crontab"
        assert ran["payload"]["_cron"]["ts"].endswith(":00.000Z")
    assert [row[0] for row in known_crontabs(modern_url)] == ["every_minute"]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the --watch tests need Linux /proc")
def test_watch_reloads_the_crontab(tmp_path: Path, modern_url: str) -> None:
    folder = project(tmp_path, crontab="0 4 * * * record ?id=first\n")
    worker = Background("worker", "--watch", cwd=folder, env=clean_env(DATABASE_URL=modern_url))
    crontab = folder / "crontab"

    def save(text: str) -> None:  # replaced in one step, as editors that save atomically do
        scratch = folder / ".crontab.tmp"
        scratch.write_text(text)
        scratch.replace(crontab)

    try:
        worker.wait_for("cron: 1 item(s) from crontab: first")
        save("0 4 * * * record ?id=first\n0 5 * * * record ?id=second\n")
        worker.wait_for("reloading because crontab changed")
        worker.wait_for("cron: 2 item(s) from crontab: first, second")
        worker.wait_until(lambda: len(known_crontabs(modern_url)) == 2, "the second item to be registered")
        # A bad line: that worker stops with the line; the supervisor waits for the next change.
        save("0 4 * * * record ?id=first\n0 25 * * * record ?id=second\n")
        worker.wait_for("crontab:2: too large value '25' in hours")
        save("0 4 * * * record ?id=first\n")
        worker.wait_for("cron: 1 item(s) from crontab: first", count=2)
        assert worker.alive()
        assert worker.stop() == 0, worker.output()
    finally:
        worker.kill()
    assert json.dumps(sorted(row[0] for row in known_crontabs(modern_url))) == '["first", "second"]'
