"""The settings object on its own: sources, parsing, and the options' declarations."""

from __future__ import annotations

import inspect
import sys
import typing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import kongtask
from kongtask import _defaults
from kongtask.errors import ConfigurationError
from kongtask.settings import ADD_JOB, COMMANDS, WORKER, Settings, display, library_arguments, options, resolve


@pytest.fixture(autouse=True)
def _empty_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env or kongtask.toml


def settings(command: str | None = WORKER, flags: dict | None = None, environ: dict | None = None,
             cwd: Path | None = None) -> Settings:
    return resolve(command, flags or {}, environ or {}, cwd).settings


def test_defaults(tmp_path: Path) -> None:
    s = settings(cwd=tmp_path)
    assert (s.connection, s.schema, s.jobs) == (None, _defaults.SCHEMA, _defaults.CONCURRENCY)
    assert (s.poll_interval, s.shutdown_timeout) == (_defaults.POLL_INTERVAL, _defaults.SHUTDOWN_TIMEOUT)
    assert (s.once, s.watch, s.tasks) == (False, False, Path("tasks"))
    assert (s.log_level, s.verbose, s.log_format) == ("info", 0, "text")
    assert set(s.sources.values()) == {"default"}


def test_every_option_has_an_environment_variable_named_after_it() -> None:
    for opt in options():
        assert opt.env_var == "KONGTASK_" + opt.name.upper()
        # The flag is the name, unless declared shorter for one command (migrate's --to; the dashboard's
        # --host, --port and --token).
        assert opt.flag == (opt.long or "--" + opt.name.replace("_", "-"))
        assert set(opt.commands) <= set(COMMANDS)
    assert [(o.name, o.flag) for o in options() if o.long] == [
        ("migrate_to", "--to"), ("dashboard_host", "--host"), ("dashboard_port", "--port"), ("dashboard_token", "--token"),
    ]


def _keywords_taken_by(fn: object) -> set[str]:
    # Named parameters, plus the keys of a ``**options: Unpack[SomeTypedDict]``.
    names = set(inspect.signature(fn).parameters)
    for hint in typing.get_type_hints(fn).values():
        for argument in typing.get_args(hint):
            if typing.is_typeddict(argument):
                names |= set(typing.get_type_hints(argument))
    return names


def test_library_arguments_are_parameters_of_the_library() -> None:
    for command, functions in {WORKER: [kongtask.run, kongtask.run_once], ADD_JOB: [kongtask.add_job]}.items():
        names = library_arguments(Settings(), command)
        assert names
        for fn in functions:
            assert set(names) <= _keywords_taken_by(fn), fn.__name__


def test_flags_then_environment_then_dotenv_then_config(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KONGTASK_JOBS=3\nKONGTASK_SCHEMA=dotenv\nKONGTASK_SHUTDOWN_TIMEOUT=5\n")
    (tmp_path / "kongtask.toml").write_text("jobs = 4\nschema = 'config'\nshutdown_timeout = 6\nlog_level = 'debug'\n")
    s = settings(flags={"jobs": "1"}, environ={"KONGTASK_SCHEMA": "env", "KONGTASK_JOBS": "2"}, cwd=tmp_path)
    assert (s.jobs, s.schema, s.shutdown_timeout, s.log_level) == (1, "env", 5.0, "debug")
    assert s.sources["jobs"] == "--jobs"
    assert s.sources["schema"] == "KONGTASK_SCHEMA"
    assert s.sources["shutdown_timeout"] == "KONGTASK_SHUTDOWN_TIMEOUT in .env"
    assert s.sources["log_level"] == f"log_level in {tmp_path / 'kongtask.toml'}"


def test_dotenv_is_returned_for_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SMTP_HOST=mail\nexport QUOTED='a b'\n")
    assert dict(resolve(WORKER, {}, {}, tmp_path).dotenv) == {"SMTP_HOST": "mail", "QUOTED": "a b"}


def test_database_url_is_an_alias_below_kongtask_connection(tmp_path: Path) -> None:
    assert settings(environ={"DATABASE_URL": "postgresql:///a"}, cwd=tmp_path).connection == "postgresql:///a"
    both = {"DATABASE_URL": "postgresql:///a", "KONGTASK_CONNECTION": "postgresql:///b"}
    assert settings(environ=both, cwd=tmp_path).connection == "postgresql:///b"


def test_libpq_variables_make_a_connection_without_the_password(tmp_path: Path) -> None:
    s = settings(environ={"PGHOST": "db", "PGDATABASE": "app", "PGPASSWORD": "secret"}, cwd=tmp_path)
    assert s.connection is not None and "secret" not in s.connection
    assert "host=db" in s.connection and "dbname=app" in s.connection
    assert s.sources["connection"] == "PGHOST, PGDATABASE (libpq environment)"
    assert settings(environ={"PGPASSWORD": "secret"}, cwd=tmp_path).connection is None


def test_config_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "k.toml").write_text("tasks = 'jobs'\n")
    assert settings(flags={"config": "conf/k.toml"}, cwd=tmp_path).tasks == tmp_path / "conf" / "jobs"
    assert settings(flags={"tasks": "jobs"}, cwd=tmp_path).tasks == Path("jobs")


def test_pyproject_without_a_kongtask_table_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert settings(cwd=tmp_path).config is None
    (tmp_path / "pyproject.toml").write_text("[tool.kongtask]\njobs = 2\n")
    s = settings(cwd=tmp_path)
    assert (s.jobs, s.sources["jobs"]) == (2, "jobs in pyproject.toml [tool.kongtask]")


def test_dashes_or_underscores_in_config_keys(tmp_path: Path) -> None:
    (tmp_path / "kongtask.toml").write_text("poll-interval = 500\nshutdown_timeout = 1.5\n")
    s = settings(cwd=tmp_path)
    assert (s.poll_interval, s.shutdown_timeout) == (0.5, 1.5)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bogus = 1\n", "unknown setting 'bogus'"),
        ("config = 'x.toml'\n", "unknown setting 'config'"),
        ("jobs = true\n", "whole number"),
        ("jobs = 1.5\n", "whole number"),
        ("once = 'maybe'\n", "not a boolean"),
        ("poll_interval = 0\n", "more than 0"),
        ("log_format = 'xml'\n", "text, json"),
        ("schema = ''\n", "non-empty"),
    ],
)
def test_bad_config_values_name_the_setting_and_file(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "kongtask.toml").write_text(text)
    with pytest.raises(ConfigurationError, match="kongtask.toml") as raised:
        settings(cwd=tmp_path)
    assert fragment in str(raised.value)


def test_values_of_other_commands_are_not_checked(tmp_path: Path) -> None:
    assert settings(ADD_JOB, environ={"KONGTASK_JOBS": "lots"}, cwd=tmp_path).queue is None
    with pytest.raises(ConfigurationError, match="KONGTASK_JOBS"):
        settings(WORKER, environ={"KONGTASK_JOBS": "lots"}, cwd=tmp_path)


def test_booleans_from_text() -> None:
    for text, value in [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("off", False)]:
        assert settings(environ={"KONGTASK_ONCE": text}).once is value


def test_run_at_reads_iso_8601_and_assumes_local_time_without_an_offset() -> None:
    utc = settings(ADD_JOB, flags={"run_at": "2030-01-31T09:00:00Z"}).run_at
    assert utc == datetime(2030, 1, 31, 9, tzinfo=timezone.utc)
    local = settings(ADD_JOB, flags={"run_at": "2030-01-31 09:00"}).run_at
    assert local is not None and local.tzinfo is not None
    assert local.replace(tzinfo=None) == datetime(2030, 1, 31, 9)
    offset = settings(ADD_JOB, flags={"run_at": "2030-01-31T09:00:00+02:00"}).run_at
    assert offset is not None and offset.utcoffset() == timedelta(hours=2)


def test_yaml_without_pyyaml_says_which_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k.yaml").write_text("jobs: 2\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigurationError, match=r"kongtask\[yaml\]"):
        settings(flags={"config": "k.yaml"}, cwd=tmp_path)


def test_passwords_are_masked_when_shown() -> None:
    s = settings(flags={"connection": "postgresql://app:hunter2@db/app"})
    assert "hunter2" not in repr(s)
    connection = next(o for o in options() if o.name == "connection")
    assert display(s, connection) == "postgresql://app:***@db/app"


@pytest.mark.parametrize(
    ("flags", "environ"),
    [
        ({"job_expiry": "30"}, {}),  # equal to the default heartbeat
        ({"job_expiry": "5"}, {"KONGTASK_HEARTBEAT_INTERVAL": "10"}),
        ({}, {"KONGTASK_HEARTBEAT_INTERVAL": "600"}),
    ],
)
def test_job_expiry_must_outlast_the_heartbeat(flags: dict, environ: dict) -> None:
    with pytest.raises(ConfigurationError, match="heartbeat interval") as raised:
        settings(WORKER, flags=flags, environ=environ)
    assert "job expiry" in str(raised.value)
    # add-job has neither option, so nothing to check there.
    settings(ADD_JOB, flags={}, environ=environ)


def test_job_expiry_just_above_the_heartbeat_is_fine() -> None:
    s = settings(WORKER, flags={"job_expiry": "31"})
    assert s.job_expiry == timedelta(seconds=31)


def test_log_success_has_a_flag_a_variable_and_honours_no_log_success(tmp_path: Path) -> None:
    assert settings().log_success is True
    assert settings(flags={"log_success": False}).log_success is False
    assert settings(environ={"KONGTASK_LOG_SUCCESS": "false"}).log_success is False
    upstream = settings(environ={"NO_LOG_SUCCESS": "1"})
    assert upstream.log_success is False and upstream.sources["log_success"] == "NO_LOG_SUCCESS"
    assert settings(environ={"NO_LOG_SUCCESS": ""}).log_success is True
    # kongtask's own variable and the flag win over upstream's.
    assert settings(environ={"NO_LOG_SUCCESS": "1", "KONGTASK_LOG_SUCCESS": "true"}).log_success is True
    assert settings(flags={"log_success": True}, environ={"NO_LOG_SUCCESS": "1"}).log_success is True
    (tmp_path / ".env").write_text("NO_LOG_SUCCESS=yes\n")
    from_dotenv = settings(cwd=tmp_path)
    assert from_dotenv.log_success is False and from_dotenv.sources["log_success"] == "NO_LOG_SUCCESS in .env"


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"max_attempts": "2147483648"}, "--max-attempts"),
        ({"queue": "q" * 129}, "--queue"),
        ({"run_at": "9999-12-31T23:59:59-05:00"}, "--run-at"),
        ({"run_at": "0001-01-01T00:00:00+01:00"}, "--run-at"),
    ],
)
def test_add_job_values_past_what_a_job_can_hold_are_refused(flags: dict, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        settings(ADD_JOB, flags=flags)


def test_add_job_values_at_the_limits_are_taken() -> None:
    s = settings(ADD_JOB, flags={"max_attempts": "2147483647", "queue": "q" * 128, "run_at": "9999-12-31T23:59:59Z"})
    assert (s.max_attempts, s.queue, s.run_at) == (2147483647, "q" * 128, datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
