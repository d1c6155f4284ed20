"""The CLI's settings: one object, built as defaults < config file < .env < environment < flags.

Every option is declared once, as a field of :class:`Settings`. The declaration gives its default,
its flags, the commands that take it and how a value is parsed; the option's environment variable
is derived from its name (``jobs`` is ``KONGTASK_JOBS``). The CLI builds its flags and ``--help``
from these fields, so adding an option is adding one field.

Values from every source go through the same parser: a flag, an environment variable, a ``.env``
line and a config-file entry are checked alike, and an error names where the bad value came from.
A flag that was not typed counts as absent, so a flag's default never hides a config-file value.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import _defaults
from ._schema.generation import schema_name_problem
from ._schema.jobs import MAX_ATTEMPTS, MAX_NAME_LENGTH
from .errors import ConfigurationError

ENV_PREFIX = "KONGTASK_"
WORKER, ADD_JOB, ADD_JOBS, MIGRATE, JOBS, CRON = "worker", "add-job", "add-jobs", "migrate", "jobs", "cron"
DASHBOARD = "dashboard"
COMMANDS = (WORKER, ADD_JOB, ADD_JOBS, MIGRATE, JOBS, CRON, DASHBOARD)

#: libpq's own variables that say where the database is. When one is set and no connection is
#: configured, kongtask connects with libpq's defaults instead of starting an embedded server.
LIBPQ_TARGET_VARIABLES = {
    "PGHOST": "host", "PGHOSTADDR": "hostaddr", "PGPORT": "port",
    "PGDATABASE": "dbname", "PGUSER": "user", "PGSERVICE": "service",
}

CONFIG_FILE = "kongtask.toml"
PYPROJECT = "pyproject.toml"
DOTENV = ".env"


# --- parsing: each parser takes a string (flags, environment) or a native value (config files) ---


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _schema_name(value: Any) -> str:
    # Taken as given, not stripped: " jobs" is a legal name, and another schema than "jobs".
    if not isinstance(value, str):
        raise ValueError("expected a string")
    problem = schema_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _whole_number(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a whole number") from None
        if isinstance(value, float) and value != number:
            raise ValueError(f"{value!r} is not a whole number")
        if number < minimum:
            raise ValueError(f"{number} is less than {minimum}")
        if maximum is not None and number > maximum:
            raise ValueError(f"{number} is more than {maximum}")
        return number

    return parse


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _milliseconds_as_seconds(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return number / 1000


def _as_milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:g}"


def _seconds(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError(f"{value!r} must not be negative")
    return number


def _positive_seconds(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return number


def _seconds_as_duration(value: Any) -> timedelta:
    return timedelta(seconds=_positive_seconds(value))


def _as_seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g}"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _migration_target(value: Any) -> int | str:
    from ._schema.migrate import LATEST, load_migrations, resolve_target  # the files, only when given

    try:
        number = resolve_target(value if isinstance(value, (int, str)) else str(value), load_migrations()[-1].number)
    except ConfigurationError as exc:
        raise ValueError(str(exc).removeprefix(f"cannot migrate to {value!r}: ")) from None
    return LATEST if isinstance(value, str) and value.strip().lower() == LATEST else number


def _name(value: Any) -> str:
    text = _text(value)
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"{len(text)} characters is too long; at most {MAX_NAME_LENGTH} are allowed")
    return text


def _job_key(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    if not 1 <= len(text) <= 512:
        raise ValueError("expected a key of 1 to 512 characters")
    return text


def _job_key_mode(value: Any) -> str:
    from ._job import JOB_KEY_MODES

    text = _text(value)
    if text not in JOB_KEY_MODES:
        raise ValueError(f"{text!r} is not a mode; choose {', '.join(JOB_KEY_MODES)}")
    return text


def _flag_list(value: Any) -> list[str]:
    items = value if isinstance(value, list) else _text(value).split(",")
    flags = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if len(flags) != len(items):
        raise ValueError("expected flag names separated by commas, such as slow,external-api")
    return flags


def _conninfo(value: Any) -> str:
    text = _text(value)
    from ._connections import connection_kwargs  # psycopg, only when a connection is given

    try:
        connection_kwargs(text)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None
    return text


def _path(value: Any) -> Path:
    return Path(_text(value)).expanduser()


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 time; without an offset it is local time."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = _text(str(value))
        if text[-1] in "zZ":  # Python 3.10's fromisoformat does not read a trailing Z
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 time; write e.g. 2030-01-31T09:00:00+00:00 or 2030-01-31 09:00"
            ) from None
    # PostgreSQL would store a time that is past 9999 or BC in UTC, but Python could not read it back.
    try:
        moment = moment if moment.tzinfo is not None else moment.astimezone()
        moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise ValueError(
            f"{value!r} falls outside years 1 to 9999 in UTC; "
            "give a time between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
        ) from None
    return moment


# --- declaring options --------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """How one field of :class:`Settings` is set from the outside."""

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any]
    commands: tuple[str, ...]
    short: str | None = None
    kind: str = "value"  # "value", "flag" (--x/--no-x) or "count" (-vv)
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # further environment variables, after KONGTASK_<NAME>
    # Environment variables that turn a flag off when set to anything (upstream's NO_LOG_SUCCESS),
    # below the option's own variables.
    negated_aliases: tuple[str, ...] = ()
    shown_default: str | None = None  # for --help, when the default is not a plain value
    show: Callable[[Any], str] = str  # a value in the unit users write it in
    secret: bool = False
    long: str | None = None  # the flag, when it is not derived from the name
    in_config_file: bool = True
    relative_to_config: bool = False
    passes_as: str | None = None  # the library argument that takes the value, if any

    @property
    def flag(self) -> str:
        return self.long or "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (self.env_var, *self.aliases)


def option(default: Any, short: str | None = None, **spec: Any) -> Any:
    """A :class:`Settings` field that is also a command-line option."""
    return field(default=default, metadata={"option": spec | {"short": short}})


_ALL = COMMANDS
#: The commands that use the database (`cron list` only reads the crontab).
_WITH_DATABASE = (WORKER, ADD_JOB, ADD_JOBS, MIGRATE, JOBS, DASHBOARD)


@dataclass(frozen=True)
class Settings:
    """What a kongtask command runs with. Build it with :func:`resolve`."""

    connection: str | None = option(
        None, "-c", metavar="URL", commands=_WITH_DATABASE, aliases=("DATABASE_URL",), secret=True, parse=_conninfo,
        help="PostgreSQL connection URL. libpq's PG* variables fill in what it leaves out. When no "
        "connection is configured anywhere, kongtask uses an embedded PostgreSQL of this project "
        "(pip install 'kongtask[embedded]').",
        shown_default="embedded",
    )
    schema: str = option(
        _defaults.SCHEMA, metavar="NAME", commands=_WITH_DATABASE, parse=_schema_name, passes_as="schema",
        help="Database schema that holds the job tables.",
    )
    jobs: int = option(
        _defaults.CONCURRENCY, "-j", metavar="N", commands=(WORKER,), parse=_whole_number(1), passes_as="concurrency",
        help="How many jobs run at the same time.",
    )
    poll_interval: float = option(
        _defaults.POLL_INTERVAL, metavar="MS", commands=(WORKER,), parse=_milliseconds_as_seconds,
        show=_as_milliseconds,
        passes_as="poll_interval",
        help="Milliseconds between checks for jobs that became due; new jobs start at once anyway.",
    )
    batch_size: int = option(
        _defaults.BATCH_SIZE, metavar="N", commands=(WORKER,), parse=_whole_number(1, 10_000), passes_as="batch_size",
        help="The most jobs one fetch checks out (1 to 10000). Fetches adapt below it: quick jobs go "
        "in batches, slow ones and a quiet queue one at a time. 1 turns batching off.",
    )
    once: bool = option(
        False, kind="flag", commands=(WORKER,), parse=_boolean,
        help="Run the jobs that are due, then exit.",
    )
    watch: bool = option(
        False, "-w", kind="flag", commands=(WORKER,), parse=_boolean,
        help="Restart the worker when a file in the tasks folder changes (for development).",
    )
    tasks: Path = option(
        Path("tasks"), metavar="DIR", commands=(WORKER, ADD_JOB, ADD_JOBS, JOBS, CRON), parse=_path,
        relative_to_config=True,
        help="Folder of task files: tasks/send_email.py defines the task send_email.",
    )
    crontab: Path | None = option(
        None, metavar="PATH", commands=(WORKER, CRON), parse=_path, relative_to_config=True,
        shown_default="crontab beside the tasks folder, if there is one",
        help="Crontab file of recurring jobs, one a line, in UTC: `0 4 * * * task ?fill=1d {payload}` (see the "
        "README). Needs graphile-worker's 0.18 schema. Not read with --once.",
    )
    shutdown_timeout: float = option(
        _defaults.SHUTDOWN_TIMEOUT, metavar="SECONDS", commands=(WORKER,), parse=_seconds, passes_as="shutdown_timeout",
        help="On SIGINT or SIGTERM, how long running jobs may take to finish before they are "
        "failed (and so retried).",
    )
    job_expiry: timedelta = option(
        _defaults.JOB_EXPIRY, metavar="SECONDS", commands=(WORKER,), parse=_seconds_as_duration, show=_as_seconds,
        passes_as="job_expiry",
        help="A queue locked longer than this without a heartbeat is taken to belong to a dead worker, "
        "and its job is retried. Keep it above the longest job of any Node graphile-worker sharing "
        "the queue (they send no heartbeat).",
    )
    heartbeat_interval: float = option(
        _defaults.HEARTBEAT_INTERVAL, metavar="SECONDS", commands=(WORKER,), parse=_positive_seconds,
        passes_as="heartbeat_interval",
        help="How often running jobs refresh their queue's lock; must be shorter than --job-expiry.",
    )
    task_timeout: float | None = option(
        _defaults.TASK_TIMEOUT, metavar="SECONDS", commands=(WORKER,), parse=_positive_seconds,
        shown_default="none", passes_as="task_timeout",
        help="Fail a task that runs longer than this (a task file may set its own `timeout`).",
    )
    log_success: bool = option(
        True, kind="flag", commands=(WORKER,), parse=_boolean, negated_aliases=("NO_LOG_SUCCESS",),
        passes_as="log_success",
        help="Log a `Completed task ...` line for each job that succeeds (NO_LOG_SUCCESS=1 turns it off too).",
    )
    forbidden_flags: list[str] | None = option(
        None, metavar="NAME,...", commands=(WORKER,), parse=_flag_list, show=",".join, shown_default="none",
        passes_as="forbidden_flags",
        help="Leave jobs carrying any of these flags (comma-separated) to other workers. Needs the 0.18 schema.",
    )
    metrics_port: int | None = option(
        _defaults.METRICS_PORT, metavar="PORT", commands=(WORKER,), parse=_whole_number(0, 65535), shown_default="off",
        passes_as="metrics_port",
        help="Serve Prometheus metrics (/metrics) and health probes (/healthz, /readyz) on this port "
        "while the worker runs; 0 picks a free port.",
    )
    metrics_host: str = option(
        _defaults.METRICS_HOST, metavar="ADDRESS", commands=(WORKER,), parse=_text, passes_as="metrics_host",
        help="The address the metrics server listens on: 127.0.0.1 is this machine only; in a container, "
        "0.0.0.0 lets Prometheus and Kubernetes' probes reach it.",
    )
    queue: str | None = option(
        None, metavar="NAME", commands=(ADD_JOB,), parse=_name, shown_default="a queue of its own",
        passes_as="queue_name",
        help="Queue name: jobs in one queue run one at a time, in order.",
    )
    run_at: datetime | None = option(
        None, metavar="TIME", commands=(ADD_JOB,), parse=parse_timestamp, shown_default="now", passes_as="run_at",
        help="When the job may run, in ISO 8601 (2030-01-31T09:00:00+00:00; without an offset, local time).",
    )
    max_attempts: int | None = option(
        None, metavar="N", commands=(ADD_JOB,), parse=_whole_number(1, MAX_ATTEMPTS), shown_default="25",
        passes_as="max_attempts",
        help="How many times the job is tried before it is given up.",
    )
    priority: int | None = option(
        None, metavar="N", commands=(ADD_JOB,), parse=_whole_number(-32768, 32767), shown_default="0",
        passes_as="priority",
        help="A smaller number runs first (-32768 to 32767).",
    )
    job_key: str | None = option(
        None, metavar="KEY", commands=(ADD_JOB,), parse=_job_key, passes_as="job_key",
        help="At most one waiting job has this key; adding another changes it (--job-key-mode). "
        "Needs the 0.18 schema.",
    )
    job_key_mode: str | None = option(
        None, metavar="MODE", commands=(ADD_JOB,), parse=_job_key_mode, shown_default="replace",
        passes_as="job_key_mode",
        help="replace (debounce: the new job replaces the waiting one), preserve_run_at (throttle: the same, "
        "keeping its run_at) or unsafe_dedupe (keep the existing job as it is).",
    )
    flags: list[str] | None = option(
        None, metavar="NAME,...", commands=(ADD_JOB,), parse=_flag_list, show=",".join, shown_default="none",
        passes_as="flags",
        help="Flags a worker may refuse to run (its forbidden flags), comma-separated. Needs the 0.18 schema.",
    )
    migrate_to: int | str | None = option(
        None, long="--to", metavar="N|latest", commands=(MIGRATE,), parse=_migration_target, passes_as="to",
        shown_default="1, graphile-worker v0.1.0's schema",
        help="The migration to bring the database to: latest (20, graphile-worker 0.18's schema; job ids "
        "change on the way, and Node graphile-worker 0.1.0 workers cannot run on it) or a number. A "
        "database past it is left as it is.",
    )
    dashboard_host: str = option(
        "127.0.0.1", long="--host", metavar="ADDRESS", commands=(DASHBOARD,), parse=_text,
        help="Address the dashboard listens on; anything but loopback (127.0.0.1, ::1, localhost) needs --token.",
    )
    dashboard_port: int = option(
        8000, long="--port", metavar="PORT", commands=(DASHBOARD,), parse=_whole_number(0, 65535),
        help="Port the dashboard listens on (0: any free port; the start line says which).",
    )
    dashboard_token: str | None = option(
        None, long="--token", metavar="TOKEN", commands=(DASHBOARD,), parse=_text, secret=True,
        show=lambda token: "***", shown_default="none",
        help="Asked of every request to the dashboard: the browser asks for it as the password (any user "
        "name), or send it as `Authorization: Bearer TOKEN`. At least 16 characters.",
    )
    read_only: bool = option(
        False, kind="flag", commands=(DASHBOARD,), parse=_boolean,
        help="Show the dashboard without its actions (retry, delete, reschedule, unlock).",
    )
    log_level: str = option(
        "info", metavar="LEVEL", commands=_ALL, parse=_choice("debug", "info", "warning", "error"),
        help="Least severe log level shown: debug, info, warning or error.",
    )
    verbose: int = option(
        0, "-v", kind="count", commands=_ALL, parse=_whole_number(0),
        help="More detail: -v shows kongtask's debug messages, -vv every library's too.",
    )
    log_format: str = option(
        "text", metavar="text|json", commands=_ALL, parse=_choice("text", "json"),
        help="Log lines as text, or as JSON objects one per line (for containers).",
    )
    config: Path | None = option(
        None, metavar="PATH", commands=_ALL, parse=_path, in_config_file=False,
        shown_default=f"./{CONFIG_FILE}, else [tool.kongtask] in ./{PYPROJECT}",
        help="Config file to read (TOML, JSON, or YAML with kongtask[yaml]).",
    )
    env_file: Path | None = option(
        None, metavar="PATH", commands=_ALL, parse=_path, in_config_file=False, shown_default=f"./{DOTENV}",
        help="File of environment variables to load; the real environment wins over it.",
    )

    #: Where each value came from: ``--jobs``, ``KONGTASK_JOBS``, ``.env (DATABASE_URL)``, ...
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        shown = ", ".join(f"{o.name}={display(self, o)}" for o in options())
        return f"Settings({shown})"


def options(command: str | None = None) -> list[Option]:
    """The options of ``command`` (every option when ``None``), in declaration order."""
    found = []
    for f in dataclasses.fields(Settings):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        opt = Option(name=f.name, default=f.default, **spec)
        if command is None or command in opt.commands:
            found.append(opt)
    return found


def library_arguments(settings: Settings, command: str) -> dict[str, Any]:
    """The settings of ``command`` that the library takes, under the library's argument names."""
    return {o.passes_as: getattr(settings, o.name) for o in options(command) if o.passes_as}


def display(settings: Settings, opt: Option) -> str:
    """A value as a user would write it, with any password masked."""
    value = getattr(settings, opt.name)
    if value is None:
        return "(not set)"
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = opt.show(value)
    if opt.secret:
        from ._masking import mask_password

        text = mask_password(text)
    return text


# --- sources ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One source of values: the raw values it holds, and how to name it in messages."""

    values: Mapping[str, Any]
    describe: Callable[[str], str]
    base: Path | None = None  # what relative paths are relative to


def _env_layer(environ: Mapping[str, str], label: str | None, opts: list[Option]) -> _Layer:
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for opt in opts:
        for var in opt.env_vars:
            if environ.get(var, "") != "":
                values[opt.name], names[opt.name] = environ[var], var
                break
        else:
            for var in opt.negated_aliases:
                if environ.get(var, "") != "":
                    values[opt.name], names[opt.name] = False, var
                    break
    return _Layer(values, lambda name: names[name] if label is None else f"{names[name]} in {label}")


def _read_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values  # only when there is a file to read

    try:
        return {k: v for k, v in dotenv_values(path, encoding="utf-8").items() if v is not None}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read env file {path}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigurationError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _read_toml(path)
            if path.name == PYPROJECT:
                data = data.get("tool", {}).get("kongtask", {})
        elif suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{path} is not valid JSON: {exc}") from None
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise ConfigurationError(
                    f"reading {path} needs PyYAML: pip install 'kongtask[yaml]' (or use TOML or JSON)"
                ) from None
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigurationError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        else:
            raise ConfigurationError(f"config file {path} must end in .toml, .json, .yaml or .yml")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path} must hold a table of settings, not {type(data).__name__}")
    return data


def _config_layer(path: Path, data: Mapping[str, Any]) -> _Layer:
    known = {o.name: o for o in options()}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        opt = known.get(name)
        if opt is None or not opt.in_config_file:
            allowed = ", ".join(o.name for o in known.values() if o.in_config_file)
            raise ConfigurationError(f"{path}: unknown setting {key!r}; the settings are: {allowed}")
        values[name] = value
    label = f"{path.name} [tool.kongtask]" if path.name == PYPROJECT else str(path)
    return _Layer(values, lambda name: f"{name} in {label}", base=path.parent)


def _discover_config(cwd: Path) -> Path | None:
    own = cwd / CONFIG_FILE
    if own.is_file():
        return own
    pyproject = cwd / PYPROJECT
    if pyproject.is_file() and "kongtask" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def is_project_folder(folder: Path) -> bool:
    """Whether ``folder`` holds what marks a kongtask project (see :func:`find_project_root`)."""
    if (folder / CONFIG_FILE).is_file() or (folder / DOTENV).is_file() or (folder / "tasks").is_dir():
        return True
    pyproject = folder / PYPROJECT
    if not pyproject.is_file():
        return False
    try:
        return "kongtask" in _read_toml(pyproject).get("tool", {})
    except (ConfigurationError, OSError):
        return True  # resolve() reports what is wrong with it, from this folder


def find_project_root(cwd: Path) -> Path:
    """The project folder that ``cwd`` is in, found the way git finds its repository.

    The nearest folder, from ``cwd`` up, holding ``kongtask.toml``, a ``pyproject.toml`` with
    ``[tool.kongtask]``, ``.env`` or a ``tasks/`` folder; the search stops at the filesystem root
    or at the home folder (its parent is not searched). Without one, ``cwd`` itself.
    """
    cwd = cwd.absolute()
    home_parent = Path.home().absolute().parent
    for folder in (cwd, *cwd.parents):
        if folder == home_parent and folder != cwd:
            break
        if is_project_folder(folder):
            return folder
    return cwd


# --- resolving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """The settings, and the ``.env`` variables to add to the environment (never overriding it)."""

    settings: Settings
    dotenv: Mapping[str, str]


def _first_given(name: str, layers: list[_Layer]) -> tuple[Any, _Layer] | None:
    for layer in layers:
        if name in layer.values and layer.values[name] is not None:
            return layer.values[name], layer
    return None


def _parse(opt: Option, raw: Any, layer: _Layer) -> Any:
    try:
        value = opt.parse(raw)
    except ValueError as exc:
        raise ConfigurationError(f"invalid value for {layer.describe(opt.name)}: {exc}") from None
    if opt.relative_to_config and layer.base is not None and not value.is_absolute():
        value = layer.base / value
    return value


def resolve(
    command: str | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Resolved:
    """Builds the settings of ``command`` (every option when ``None``) from all sources.

    ``flags`` holds only the flags that were typed. Raises :class:`ConfigurationError`, naming the
    source, for a value that does not parse or a config file that cannot be used.
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    opts = options(command)
    flag_layer = _Layer({k: v for k, v in flags.items() if v is not None}, lambda name: _named(name).flag)
    env_layer = _env_layer(environ, None, opts)
    env_path = _file_named("env_file", [flag_layer, env_layer], cwd) or _existing(cwd / DOTENV)
    dotenv = _read_dotenv(env_path) if env_path is not None else {}
    dotenv_layer = _env_layer(dotenv, _shown_path(env_path, cwd) if env_path else DOTENV, opts)
    config_path = _file_named("config", [flag_layer, env_layer, dotenv_layer], cwd) or _discover_config(cwd)
    config_layer = _config_layer(config_path, _read_config_file(config_path)) if config_path else _Layer({}, str)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in opts:
        found = _first_given(opt.name, [flag_layer, env_layer, dotenv_layer, config_layer])
        if found is not None:
            values[opt.name], sources[opt.name] = _parse(opt, *found), found[1].describe(opt.name)
        else:
            sources[opt.name] = "default"
    for name, path in (("env_file", env_path), ("config", config_path)):
        if path is not None:
            values[name] = path
            if sources[name] == "default":
                sources[name] = "found in the working folder"
    _check_heartbeat_fits_expiry(command, values, sources)
    if "connection" in sources and "connection" not in values:
        libpq = _libpq_target({**dotenv, **environ})
        if libpq is not None:
            values["connection"], sources["connection"] = libpq
    return Resolved(Settings(**values, sources=sources), dotenv)


def _check_heartbeat_fits_expiry(command: str | None, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """A worker whose locks expire before its heartbeat refreshes them would lose its own jobs."""
    if command != WORKER:
        return
    expiry = values.get("job_expiry", _named("job_expiry").default)
    heartbeat = values.get("heartbeat_interval", _named("heartbeat_interval").default)
    if expiry.total_seconds() <= heartbeat:
        raise ConfigurationError(
            f"job expiry ({expiry.total_seconds():g}s, from {sources['job_expiry']}) must be longer than "
            f"the heartbeat interval ({heartbeat:g}s, from {sources['heartbeat_interval']}), or live workers "
            "would lose their jobs; raise --job-expiry or lower --heartbeat-interval"
        )


def _named(name: str) -> Option:
    return next(o for o in options() if o.name == name)


def _shown_path(path: Path, cwd: Path) -> str:
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _file_named(name: str, layers: list[_Layer], cwd: Path) -> Path | None:
    """The file that option ``name`` names in ``layers``; it must exist."""
    found = _first_given(name, layers)
    if found is None:
        return None
    path: Path = _parse(_named(name), *found)
    path = path if path.is_absolute() else cwd / path
    if not path.is_file():
        raise ConfigurationError(f"{path} does not exist (given by {found[1].describe(name)})")
    return path


def _libpq_target(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """A connection string from libpq's PG* variables (the password stays in the environment)."""
    given = {var: environ[var] for var in LIBPQ_TARGET_VARIABLES if environ.get(var)}
    if not given:
        return None
    from psycopg.conninfo import make_conninfo

    conninfo = make_conninfo("", **{LIBPQ_TARGET_VARIABLES[var]: value for var, value in given.items()})
    return conninfo, ", ".join(given) + " (libpq environment)"
