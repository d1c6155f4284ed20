"""Where settings come from, end to end: flags > environment > .env > config file > defaults."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import psycopg
import pytest

from tests.cli_support import clean_env, one_line, pg_environment, runs, write_task
from tests.cli_support import kongtask as run

SOURCES = ["flag", "env", "dotenv", "config"]  # highest precedence first


def schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select schema_name from information_schema.schemata where schema_name like 's\\_%'")
        return {name for (name,) in rows}


def with_schema_from(sources: list[str], project: Path, url: str) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment that set --schema to s_<source> in each of ``sources``."""
    args, env = ["--connection", url], clean_env()
    for source in sources:
        if source == "flag":
            args += ["--schema", "s_flag"]
        elif source == "env":
            env["KONGTASK_SCHEMA"] = "s_env"
        elif source == "dotenv":
            (project / ".env").write_text("KONGTASK_SCHEMA=s_dotenv\n")
        elif source == "config":
            (project / "kongtask.toml").write_text('schema = "s_config"\n')
    return args, env


@pytest.mark.parametrize(("higher", "lower"), list(itertools.combinations(SOURCES, 2)))
def test_higher_source_wins(tmp_path: Path, db_url: str, higher: str, lower: str) -> None:
    args, env = with_schema_from([higher, lower], tmp_path, db_url)
    result = run("migrate", *args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert schemas(db_url) == {f"s_{higher}"}


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_alone_beats_the_default(tmp_path: Path, db_url: str, source: str) -> None:
    args, env = with_schema_from([source], tmp_path, db_url)
    assert run("migrate", *args, cwd=tmp_path, env=env).returncode == 0
    assert schemas(db_url) == {f"s_{source}"}


def test_a_flags_default_never_hides_a_config_file_value(tmp_path: Path, migrated_url: str) -> None:
    # Upstream's bug: a flag's default (once=false, jobs=1) silently replaced the config file's value.
    write_task(tmp_path / "tasks", "record")
    (tmp_path / "kongtask.toml").write_text("once = true\njobs = 3\npoll-interval = 750\n")
    env = clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(tmp_path / "out.jsonl"))
    assert run("add-job", "record", cwd=tmp_path, env=env).returncode == 0
    result = run("worker", cwd=tmp_path, env=env, timeout=60)  # exits by itself: once = true
    assert result.returncode == 0, result.stderr
    assert "3 job(s) at a time" in result.stderr
    assert len(runs(tmp_path / "out.jsonl")) == 1
    shown = run("config", cwd=tmp_path, env=env).stdout
    assert "jobs = 3  # jobs in" in shown and "poll_interval = 750  # poll_interval in" in shown


def test_kongtask_connection_wins_over_database_url(tmp_path: Path, db_url: str) -> None:
    env = clean_env(KONGTASK_CONNECTION=db_url, DATABASE_URL="postgresql://nobody:pw@127.0.0.1:1/nothing")
    result = run("migrate", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr


def test_database_url_in_the_environment_wins_over_dotenv(tmp_path: Path, db_url: str) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://nobody:pw@127.0.0.1:1/nothing\n")
    assert run("migrate", cwd=tmp_path, env=clean_env(DATABASE_URL=db_url)).returncode == 0
    failed = run("migrate", cwd=tmp_path, env=clean_env())
    assert failed.returncode == 1 and "127.0.0.1:1/nothing" in failed.stderr


def test_database_url_in_dotenv_wins_over_the_config_file(tmp_path: Path, db_url: str) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={db_url}\n")
    (tmp_path / "kongtask.toml").write_text('connection = "postgresql://nobody@127.0.0.1:1/nothing"\n')
    assert run("migrate", cwd=tmp_path, env=clean_env()).returncode == 0


def test_libpq_variables_are_honoured(tmp_path: Path, db_url: str) -> None:
    result = run("migrate", "--schema", "s_libpq", cwd=tmp_path, env=clean_env(**pg_environment(db_url)))
    assert result.returncode == 0, result.stderr
    assert schemas(db_url) == {"s_libpq"}


def test_libpq_variables_in_dotenv_are_honoured(tmp_path: Path, db_url: str) -> None:
    lines = [f"{name}={value}" for name, value in pg_environment(db_url).items()]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    assert run("migrate", "--schema", "s_libpq", cwd=tmp_path, env=clean_env()).returncode == 0
    assert schemas(db_url) == {"s_libpq"}


def test_env_file_names_another_file(tmp_path: Path, db_url: str) -> None:
    (tmp_path / ".env").write_text("KONGTASK_SCHEMA=s_dotenv\n")
    (tmp_path / "staging.env").write_text(f"DATABASE_URL={db_url}\nKONGTASK_SCHEMA=s_staging\n")
    assert run("migrate", "--env-file", "staging.env", cwd=tmp_path, env=clean_env()).returncode == 0
    assert run("migrate", cwd=tmp_path, env=clean_env(KONGTASK_ENV_FILE="staging.env",
                                                      KONGTASK_SCHEMA="s_env")).returncode == 0
    assert schemas(db_url) == {"s_staging", "s_env"}
    missing = run("migrate", "--env-file", "nope.env", cwd=tmp_path, env=clean_env())
    assert missing.returncode == 2 and "nope.env" in one_line(missing.stderr)


def test_dotenv_variables_reach_tasks_but_never_override_the_environment(tmp_path: Path, migrated_url: str) -> None:
    write_task(tmp_path / "tasks", "show_env", body="""
        import json, os

        def task(payload, helpers):
            with open(os.environ["KT_TEST_OUT"], "a") as out:
                out.write(json.dumps({"payload": {k: os.environ.get(k) for k in ("FROM_DOTENV", "BOTH")}}) + "\\n")
    """)
    (tmp_path / ".env").write_text("FROM_DOTENV=dotenv\nBOTH=dotenv\n")
    env = clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(tmp_path / "out.jsonl"), BOTH="environment")
    assert run("add-job", "show_env", cwd=tmp_path, env=env).returncode == 0
    assert run("worker", "--once", cwd=tmp_path, env=env).returncode == 0
    assert [r["payload"] for r in runs(tmp_path / "out.jsonl")] == [{"FROM_DOTENV": "dotenv", "BOTH": "environment"}]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("kongtask.toml", 'schema = "s_file"\n'),
        ("pyproject.toml", '[project]\nname = "app"\n\n[tool.kongtask]\nschema = "s_file"\n'),
        ("settings.json", '{"schema": "s_file"}'),
        ("settings.yaml", "schema: s_file\n"),
        ("other.toml", 'schema = "s_file"\n'),
    ],
)
def test_config_file_formats(tmp_path: Path, db_url: str, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    args = [] if name in ("kongtask.toml", "pyproject.toml") else ["--config", name]
    result = run("migrate", "-c", db_url, *args, cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert schemas(db_url) == {"s_file"}


def test_kongtask_toml_is_preferred_to_pyproject(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.kongtask]\nschema = "s_pyproject"\n')
    (tmp_path / "kongtask.toml").write_text('schema = "s_kongtask"\n')
    assert run("migrate", "-c", db_url, cwd=tmp_path, env=clean_env()).returncode == 0
    assert schemas(db_url) == {"s_kongtask"}


def test_tasks_folder_in_a_config_file_is_relative_to_that_file(tmp_path: Path, migrated_url: str) -> None:
    write_task(tmp_path / "deploy" / "jobs", "record")
    (tmp_path / "deploy" / "kongtask.json").write_text(json.dumps({"tasks": "jobs", "once": True}))
    env = clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(tmp_path / "out.jsonl"))
    assert run("add-job", "record", cwd=tmp_path, env=env).returncode == 0
    result = run("worker", "--config", "deploy/kongtask.json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert len(runs(tmp_path / "out.jsonl")) == 1


@pytest.mark.parametrize(
    ("files", "env", "fragments"),
    [
        ({"kongtask.toml": "jobz = 3\n"}, {}, ["kongtask.toml", "'jobz'"]),
        ({"kongtask.toml": "jobs = 'many'\n"}, {}, ["jobs in", "kongtask.toml", "'many'"]),
        ({"kongtask.toml": "jobs = [\n"}, {}, ["kongtask.toml", "not valid TOML"]),
        ({".env": "KONGTASK_JOBS=lots\n"}, {}, ["KONGTASK_JOBS in .env", "'lots'"]),
        ({}, {"KONGTASK_POLL_INTERVAL": "soon"}, ["KONGTASK_POLL_INTERVAL", "'soon'"]),
        ({}, {"KONGTASK_CONFIG": "missing.toml"}, ["missing.toml", "does not exist"]),
        ({"s.yml": "- a\n- b\n"}, {"KONGTASK_CONFIG": "s.yml"}, ["s.yml", "table of settings"]),
    ],
)
def test_bad_settings_exit_2_and_name_their_source(
    tmp_path: Path, files: dict[str, str], env: dict[str, str], fragments: list[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run("worker", "--once", "-c", "postgresql://x@127.0.0.1:1/x", cwd=tmp_path, env=clean_env(**env))
    assert result.returncode == 2
    line = one_line(result.stderr)
    for fragment in fragments:
        assert fragment in line


def test_config_command_shows_each_value_and_its_source(tmp_path: Path) -> None:
    (tmp_path / "kongtask.toml").write_text('schema = "from_config"\njobs = 2\nlog_format = "json"\n')
    (tmp_path / ".env").write_text("KONGTASK_JOBS=5\nDATABASE_URL=postgresql://app:pw-in-dotenv@db/app\n")
    env = clean_env(KONGTASK_LOG_LEVEL="warning")
    result = run("config", "--poll-interval", "250", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'connection = "postgresql://app:***@db/app"  # DATABASE_URL in .env' in lines
    assert 'schema = "from_config"  # schema in ' + str(tmp_path / "kongtask.toml") in lines
    assert "jobs = 5  # KONGTASK_JOBS in .env" in lines
    assert "poll_interval = 250  # --poll-interval" in lines
    assert 'log_level = "warning"  # KONGTASK_LOG_LEVEL' in lines
    assert 'tasks = "tasks"  # default' in lines
    assert "pw-in-dotenv" not in result.stdout + result.stderr
