"""`kongtask migrate --to`: the 0.18 schema only when asked, by flag, environment or config file."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.cli_support import clean_env, one_line, runs
from tests.cli_support import kongtask as run


def _latest(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select max(id) from graphile_worker.migrations").fetchone()
    assert row is not None
    return int(row[0])


def test_migrate_installs_v0_1_0_unless_told_otherwise(project: Path, db_url: str) -> None:
    result = run("migrate", cwd=project, env=clean_env(DATABASE_URL=db_url))
    assert result.returncode == 0, result.stderr
    assert _latest(db_url) == 1


def test_migrate_to_latest_upgrades_and_a_plain_migrate_then_changes_nothing(project: Path, migrated_url: str) -> None:
    upgraded = run("migrate", "--to", "latest", cwd=project, env=clean_env(DATABASE_URL=migrated_url))
    assert upgraded.returncode == 0, upgraded.stderr
    assert "applied 000002" in upgraded.stderr and "000020" in upgraded.stderr
    assert _latest(migrated_url) == 20

    again = run("migrate", cwd=project, env=clean_env(DATABASE_URL=migrated_url))
    assert again.returncode == 0, again.stderr
    assert "is at migration 20 (graphile-worker's 0.18 schema)" in again.stderr
    assert _latest(migrated_url) == 20


@pytest.mark.parametrize("where", ["env", "config"])
def test_the_target_may_come_from_the_environment_or_the_config_file(project: Path, db_url: str, where: str) -> None:
    env = clean_env(DATABASE_URL=db_url)
    if where == "env":
        env["KONGTASK_MIGRATE_TO"] = "5"
    else:
        (project / "kongtask.toml").write_text("migrate_to = 5\n")
    result = run("migrate", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert _latest(db_url) == 5


def test_an_unknown_target_is_a_usage_error_in_one_line(project: Path) -> None:
    result = run("migrate", "--to", "99", cwd=project, env=clean_env(DATABASE_URL="postgresql://x@127.0.0.1:1/x"))
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("kongtask: error: invalid value for --to: give 'latest'")


def test_the_worker_refuses_a_database_part_way_between_the_schemas_in_one_line(project: Path, db_url: str) -> None:
    env = clean_env(DATABASE_URL=db_url)
    assert run("migrate", "--to", "7", cwd=project, env=env).returncode == 0
    result = run("worker", "--once", cwd=project, env=env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kongtask: error: this database holds a schema between graphile-worker v0.1.0's and 0.18's")
    assert last.endswith("finish the upgrade with `kongtask migrate --to latest`")


def test_on_the_0_18_schema_every_command_works_and_says_which_schema_it_found(
    project: Path, modern_url: str
) -> None:
    out = project / "runs.jsonl"
    env = clean_env(DATABASE_URL=modern_url, KT_TEST_OUT=str(out))
    config = run("config", cwd=project, env=env)
    assert config.returncode == 0, config.stderr
    assert "# database: graphile-worker's 0.18 schema (migration 20) in schema 'graphile_worker'" in config.stdout

    assert run("add-job", "record", '{"n": 1}', "--queue", "q", cwd=project, env=env).returncode == 0
    added = run("add-jobs", cwd=project, env=env, input='{"task": "record", "payload": {"n": 2}}\n'
                                                      '{"task": "record", "payload": {"n": 3}}\n')
    assert added.returncode == 0 and added.stdout.strip() == "added 2 jobs", added.stderr
    listed = run("jobs", "list", cwd=project, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.strip().splitlines()[1:]]
    assert [(row[1], row[2]) for row in rows] == [("record", "q"), ("record", ""), ("record", "")]

    worked = run("worker", "--once", cwd=project, env=env)
    assert worked.returncode == 0, worked.stderr
    assert "(graphile-worker 0.18 schema)" in worked.stderr
    assert sorted(r["payload"]["n"] for r in runs(out)) == [1, 2, 3]
    assert run("jobs", "list", cwd=project, env=env).stdout.strip().splitlines()[1:] == []
