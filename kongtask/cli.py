"""The ``kongtask`` command: parse arguments, build the settings, call the library, and turn errors
into exit codes: 0 success, 1 a runtime failure, 2 a usage error.

A user error is one line on stderr, without a traceback; a bug keeps its traceback. Passwords are
masked in everything printed. The options themselves are declared in :mod:`kongtask.settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import psycopg
import psycopg.errors
from click.core import ParameterSource

import kongtask

from . import settings as config
from ._connections import describe_target
from ._masking import mask_password
from ._options import ResolvedOptions
from ._outages import first_line
from ._run import start as start_workers
from ._schema import jobs as jobs_api
from ._watch import RELOAD_SIGNAL, supervise, supervisor_pid
from .errors import ConfigurationError, KongtaskError, PayloadError
from .settings import ADD_JOB, ADD_JOBS, CRON, DASHBOARD, JOBS, MIGRATE, WORKER, Option, Settings

log = logging.getLogger("kongtask.cli")

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_json_logs = False


# --- options: one click option per settings field -------------------------------------------------


def _shown_default(opt: Option) -> str:
    if opt.shown_default is not None:
        return opt.shown_default
    if isinstance(opt.default, bool):
        return "on" if opt.default else "off"
    shown = opt.show(opt.default)
    return shown[:-2] if shown.endswith(".0") else shown


def _click_option(opt: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    help_text = f"{opt.help} [env: {', '.join(opt.env_vars)}; default: {_shown_default(opt)}]"
    decls = [opt.short] if opt.short else []
    if opt.kind == "flag":
        decls.append(f"{opt.flag}/--no-{opt.flag[2:]}")
        return click.option(*decls, opt.name, default=None, help=help_text)
    decls.append(opt.flag)
    if opt.kind == "count":
        return click.option(*decls, opt.name, count=True, default=None, help=help_text)
    return click.option(*decls, opt.name, default=None, metavar=opt.metavar, help=help_text)


def _with_options(command: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    # The command's own options first, then those every command shares.
    ordered = sorted(config.options(command), key=lambda o: len(o.commands) == len(config.COMMANDS))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(ordered):
            fn = _click_option(opt)(fn)
        return fn

    return decorate


def _settings(ctx: click.Context, /, command: str | None, params: Mapping[str, Any]) -> Settings:
    """The command's settings; sets up logging and adds ``.env`` to the environment (never over it)."""
    typed = {k: v for k, v in params.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}
    here, root = Path.cwd(), _project_root()
    if root != here:
        # From a subfolder: files are found in the project folder, paths typed stay relative to here.
        typed = {k: str(here / v) if k in _PATH_OPTIONS and v and not Path(v).is_absolute() else v
                 for k, v in typed.items()}
    try:
        resolved = config.resolve(command, typed, cwd=root)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc), ctx) from None
    for name, value in resolved.dotenv.items():
        os.environ.setdefault(name, value)
    settings = resolved.settings
    if root != here and settings.sources.get("tasks") == "default":
        settings = dataclasses.replace(settings, tasks=root / settings.tasks)
    _configure_logging(settings)
    return settings


_PATH_OPTIONS = ("tasks", "crontab", "config", "env_file")


def _project_root() -> Path:
    """The project folder: the one a --watch supervisor named, else found from the working folder."""
    named = os.environ.get(_EMBEDDED_PROJECT_ENV)
    return Path(named) if named else config.find_project_root(Path.cwd())


# --- logging ----------------------------------------------------------------------------------------


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(source)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.source = record.name if job_id is None else f"{record.name}[{job_id}]"
        return mask_password(super().format(record))


#: The fields of a job's log records (the worker's lines and a task's own), as JSON keys.
_JOB_FIELDS = ("job_id", "task", "queue", "attempt", "max_attempts", "duration_ms", "error")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            # Masked before encoding, which turns line breaks and quotes into escapes that would
            # hide where a secret ends.
            "message": mask_password(record.getMessage()),
        }
        for attribute in _JOB_FIELDS:
            value = getattr(record, attribute, None)
            if value is not None:
                entry[attribute] = mask_password(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = mask_password(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _configure_logging(settings: Settings) -> None:
    global _json_logs
    _json_logs = settings.log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if _json_logs else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if settings.verbose >= 2 else settings.log_level.upper())
    if settings.verbose >= 1:
        logging.getLogger("kongtask").setLevel(logging.DEBUG)
    if settings.verbose < 2:
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # "1 change detected": ours says more
        # The pool retries a lost server every second or so; kongtask logs the outage once.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _print_error(message: str) -> None:
    message = mask_password(" ".join(message.split()))
    if _json_logs:
        logging.getLogger("kongtask").error(message)
    else:
        click.echo(f"kongtask: error: {message}", err=True)


# --- the database: configured, or the project's embedded server ----------------------------------


#: Set by a --watch supervisor in its worker's environment: the project whose embedded server the
#: worker uses (and holds, like any kongtask process), rather than a connection string.
_EMBEDDED_PROJECT_ENV = "_KONGTASK_EMBEDDED_PROJECT"


@contextlib.contextmanager
def _database(settings: Settings, announce: int = logging.DEBUG, may_create: bool = False) -> Iterator[str]:
    """The connection string to use while the block runs.

    ``announce``: the level of the lines that say which embedded server is used and that it
    stopped (a worker says them at INFO; a quick command only with -v). ``may_create``: a new
    embedded database may be made for a folder that is in no project (a worker's, which has
    tasks); a quick command there would add its job where no worker looks.
    """
    if settings.connection is not None:
        yield settings.connection
        return
    from ._embedded.project import embedded_database, has_database

    root = _project_root()
    if not (may_create or config.is_project_folder(root) or has_database(root)):
        raise ConfigurationError(
            f"no database configured, and {root} is in no kongtask project (no tasks/ folder, kongtask.toml, "
            ".env or [tool.kongtask] in it or above): run this in your project's folder, or set DATABASE_URL"
        )
    if os.environ.get(_EMBEDDED_PROJECT_ENV):
        announce = logging.DEBUG  # the --watch supervisor said it already
    with embedded_database(root, stop_level=announce) as db:
        log.log(
            announce,
            "no connection configured, so using this folder's embedded PostgreSQL (%s); data in %s; "
            "connect with: psql '%s'",
            "started" if db.started else "already running", db.data_dir, db.url,
        )
        yield db.url


def _run(coroutine: Any) -> Any:
    try:
        return asyncio.run(coroutine)
    finally:
        # asyncio resets SIGTERM to the default when it lets go of it; keep unwinding cleanly.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGHUP, _interrupt)


# --- commands -----------------------------------------------------------------------------------


@click.group(context_settings=_CONTEXT)
@click.version_option(kongtask.__version__, "--version", prog_name="kongtask", message="%(prog)s %(version)s")
def cli() -> None:
    """kongtask: a PostgreSQL job queue, compatible with graphile-worker v0.1.0.

    \b
    Quick start:
      kongtask worker --watch                     run the tasks in ./tasks
      kongtask add-job send_email '{"to": "a@example.com"}'
      kongtask add-jobs --file jobs.jsonl           many jobs, one JSON object per line

    Every option can also be set by an environment variable (shown in each command's --help), in
    ./.env, or in a config file (./kongtask.toml, or [tool.kongtask] in ./pyproject.toml). Flags win
    over the environment, the environment over .env, .env over the config file.
    """


@cli.command()
@_with_options(WORKER)
@click.pass_context
def worker(ctx: click.Context, /, **params: Any) -> None:
    """Run jobs with the tasks in the tasks folder, until SIGINT or SIGTERM.

    A first signal lets running jobs finish (up to --shutdown-timeout); a second stops them at
    once, failing them so they are retried.
    """
    settings = _settings(ctx, WORKER, params)
    if settings.watch and settings.once:
        raise click.UsageError("--watch and --once cannot be used together: --watch keeps running", ctx)
    if settings.watch and settings.metrics_port is not None:
        raise click.UsageError(
            f"--watch and a metrics port ({settings.sources.get('metrics_port', '--metrics-port')}) cannot be used "
            "together: --watch starts each new worker beside the old one, and two cannot listen on one port; "
            "serve metrics from a worker without --watch", ctx)
    if settings.watch and supervisor_pid() is None:
        ctx.exit(_supervise(ctx, settings))
    if supervisor_pid() is not None:
        signal.signal(RELOAD_SIGNAL, _interrupt)  # retired before it is up: unwind as on SIGTERM
    tasks = _load_tasks(settings.tasks)
    cron_items = [] if settings.once else _load_cron_items(settings)  # upstream's --once runs no cron either
    try:
        with _database(settings, announce=logging.INFO, may_create=True) as conninfo:
            try:
                _run(_work(settings, tasks, cron_items, conninfo))
            finally:
                _stop_leftover_children()
    finally:
        from ._children import bound_exit

        # A thread a task started and never ended would keep the interpreter from exiting.
        error = sys.exc_info()[1]
        bound_exit(0 if error is None else 130 if isinstance(error, KeyboardInterrupt) else 1)


def _stop_leftover_children() -> None:
    """Processes tasks started and left running end with the worker, rather than linger."""
    from ._children import stop_children

    stopped = stop_children()
    if stopped:
        log.warning("stopped %d child process(es) that tasks had left running", stopped)


def _load_tasks(folder: Path) -> dict[str, Any]:
    from .tasks import load_task_directory

    tasks = load_task_directory(folder)
    if not tasks:
        raise ConfigurationError(
            f"no task files in {str(folder).rstrip('/')}/: add a file such as {folder / 'send_email.py'} "
            "that defines `def task(payload, helpers):`"
        )
    return tasks


def _crontab_path(settings: Settings) -> tuple[Path, bool]:
    """The crontab file, and whether it was asked for (else it is the optional one beside the tasks)."""
    if settings.crontab is not None:
        return settings.crontab, True
    return settings.tasks.parent / "crontab", False


def _load_cron_items(settings: Settings, required: bool = False) -> list[kongtask.CronItem]:
    """The crontab's items: none when there is no crontab beside the tasks, unless ``required``."""
    path, asked_for = _crontab_path(settings)
    if not path.exists():
        if asked_for:
            raise KongtaskError(f"crontab file {path} does not exist (given by {settings.sources['crontab']})")
        if required:
            raise KongtaskError(f"no crontab here: {path} does not exist; write one (a line such as "
                                "`0 4 * * * task`), or pass --crontab PATH")
        return []
    return kongtask.load_crontab(path)


async def _work(settings: Settings, tasks: dict[str, Any], cron_items: list[kongtask.CronItem], conninfo: str) -> None:
    # A continuous worker waits, with backoff and a log line, for a server that does not answer
    # yet (it may be starting beside us); --once, a refused login or a bad host fail in one line.
    options = config.library_arguments(settings, WORKER)
    started = (
        "worker started on %s (graphile-worker %s schema): tasks %s from %s; %d job(s) at a time, up to %d per fetch"
    )
    if settings.once:
        # Started (migrated, its schema read) before "worker started" is said of it.
        once = await start_workers(
            ResolvedOptions(task_list=tasks, connection_string=conninfo, handle_signals=True, **options), once=True
        )
        log.info(started, describe_target(conninfo), once.schema_generation, ", ".join(sorted(tasks)), settings.tasks,
                 settings.jobs, settings.batch_size)
        await once.wait()
        return
    runner = await kongtask.run(
        task_list=tasks, cron_items=cron_items, connection_string=conninfo, handle_signals=True, **options
    )
    # Its lock id is what `kongtask jobs list --state locked` and `jobs unlock` name.
    log.info(started + "; locks as %s", describe_target(conninfo), runner.schema_generation, ", ".join(sorted(tasks)),
             settings.tasks, settings.jobs, settings.batch_size, runner.worker_ids[0])
    if cron_items:
        log.info("cron: %d item(s) from %s: %s", len(cron_items), _crontab_path(settings)[0],
                 ", ".join(item.identifier for item in cron_items))
    parent = supervisor_pid()
    follower = asyncio.ensure_future(_stop_when_orphaned(runner, parent)) if parent else None
    loop = asyncio.get_running_loop()
    if parent:
        loop.add_signal_handler(RELOAD_SIGNAL, _retire, runner, settings.shutdown_timeout)
    try:
        await runner.wait()
    finally:
        if follower is not None:
            follower.cancel()
        if parent:
            loop.remove_signal_handler(RELOAD_SIGNAL)
            signal.signal(RELOAD_SIGNAL, _interrupt)


def _retire(runner: kongtask.Runner, shutdown_timeout: float) -> None:
    """The supervisor started a fresh worker: a routine reload, not a shutdown to warn about."""
    log.info("reloading: this worker finishes its running jobs (up to %gs) and exits", shutdown_timeout)
    stopping = asyncio.ensure_future(runner.stop())
    # What stops the runner is raised by runner.wait() in _work; this one need not report it too.
    stopping.add_done_callback(lambda task: task.cancelled() or task.exception())


async def _stop_when_orphaned(runner: kongtask.Runner, supervisor: int) -> None:
    """A worker started by --watch stops when its supervisor is gone (killed outright, say)."""
    while os.getppid() == supervisor:
        await asyncio.sleep(0.5)
    log.warning("the --watch supervisor is gone: stopping")
    await runner.stop()


def _supervise(ctx: click.Context, /, settings: Settings) -> int:
    from .tasks import check_task_directory

    check_task_directory(settings.tasks)
    with _database(settings, announce=logging.INFO, may_create=True) as conninfo:
        _run(kongtask.migrate(connection_string=conninfo, schema=settings.schema))  # fails fast
        env = dict(os.environ)
        if settings.connection is None:
            # The worker takes its own hold on the embedded server, so the server outlives this
            # supervisor for as long as the worker needs it.
            env[_EMBEDDED_PROJECT_ENV] = str(_project_root())
        return supervise(settings.tasks, ctx.obj["argv"], env, settings.shutdown_timeout,
                         crontab=_crontab_path(settings)[0])


@cli.command("add-job")
@click.argument("task")
@click.argument("payload_json", required=False, metavar="[PAYLOAD_JSON]")
@_with_options(ADD_JOB)
@click.pass_context
def add_job(ctx: click.Context, /, task: str, payload_json: str | None, **params: Any) -> None:
    """Add a job for TASK and print its id.

    PAYLOAD_JSON is any JSON value (default {}); - reads it from standard input.
    """
    payload = _parse_payload(ctx, payload_json)
    settings = _settings(ctx, ADD_JOB, params)
    # Every value is checked here, before a server is started or anything is written.
    if not task.strip():
        raise click.BadParameter("must not be empty", ctx, param_hint="TASK")
    options = config.library_arguments(settings, ADD_JOB)
    schema = options.pop("schema")
    try:
        planned = jobs_api.plan_add_job(schema, task, payload, **options)
    except PayloadError as exc:
        raise click.UsageError(str(exc), ctx) from None
    _warn_if_no_task_file(settings.tasks, task)
    with _database(settings) as conninfo, _refusals_reported("the job was not added"):
        job = _run(_add_job(settings, conninfo, planned))
    click.echo(job.id)


def _local_task_names(folder: Path) -> set[str]:
    from .tasks import task_files

    return {path.stem for path in task_files(folder)}


def _warn_if_no_task_file(folder: Path, task: str) -> None:
    # Only where there is a tasks folder to go by: add-job is often run far from any worker's files.
    if folder.is_dir() and task not in _local_task_names(folder):
        log.warning(
            "no task file %s here; a worker without a task named %r will never run this job",
            folder / f"{task}.py", task,
        )


def _parse_payload(ctx: click.Context, /, text: str | None) -> Any:
    if text is None:
        return {}
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            """(quote it for the shell, e.g. '{"to": "a@example.com"}')""",
            ctx, param_hint="PAYLOAD_JSON",
        ) from None
    except RecursionError:
        raise click.BadParameter(
            "nested too deeply for Python to read; flatten it", ctx, param_hint="PAYLOAD_JSON"
        ) from None
    except ValueError as exc:  # e.g. a number past Python's limit on digits
        raise click.BadParameter(f"cannot be read: {str(exc).split(';')[0]}", ctx, param_hint="PAYLOAD_JSON") from None


async def _add_job(settings: Settings, conninfo: str, planned: jobs_api.AddJob) -> kongtask.Job:
    if settings.connection is None:
        # The embedded database may be brand new.
        await kongtask.migrate(connection_string=conninfo, schema=settings.schema)
    from ._connections import borrow

    async with borrow(conninfo) as conn:
        return await jobs_api.insert_job(conn, planned)


@cli.command("add-jobs")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Read the jobs from this file rather than from standard input.")
@_with_options(ADD_JOBS)
@click.pass_context
def add_jobs(ctx: click.Context, /, path: Path | None, **params: Any) -> None:
    """Add many jobs, all or none, from JSON lines; print how many were added.

    Each line of standard input (or --file) is one job: a JSON object with the keys "task" (the
    only one required), "payload" (any JSON, default {}), "queue", "run_at" (ISO 8601; without an
    offset, local time) and "max_attempts", as in add-job. Blank lines are skipped.

    \b
    Example:
      printf '%s\\n' '{"task": "send_email", "payload": {"to": "a@example.com"}}' \\
        '{"task": "send_email", "payload": {"to": "b@example.com"}, "queue": "mail", "max_attempts": 3}' \\
        | kongtask add-jobs
      kongtask add-jobs --file jobs.jsonl

    Every line is checked before anything is written; a bad one stops the command, naming its line.
    """
    from ._job_lines import JobLineError, read_job_lines

    settings = _settings(ctx, ADD_JOBS, params)
    try:
        lines = read_job_lines(_job_input(ctx, path))
        statements = jobs_api.add_jobs_statements(settings.schema, lines.specs, name_of=lines.name_of)
    except (JobLineError, PayloadError) as exc:
        raise click.UsageError(str(exc), ctx) from None
    if statements:
        _warn_if_no_task_files(settings.tasks, {spec.identifier for spec in lines.specs})
        with _database(settings) as conninfo, _refusals_reported("no job was added (all or nothing)"):
            added = _run(_add_jobs(settings, conninfo, statements))
    else:
        added = 0
    click.echo(f"added {added} job{'' if added == 1 else 's'}")


@contextlib.contextmanager
def _refusals_reported(outcome: str) -> Iterator[None]:
    """PostgreSQL refusing what was sent (a constraint, a trigger of the user's) is one line."""
    try:
        yield
    except psycopg.DatabaseError as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        said = exc.diag.message_primary or first_line(exc)
        if isinstance(exc, (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable,
                            psycopg.errors.UndefinedFunction)):
            outcome += "; run `kongtask migrate` first, or check --schema"
        raise click.ClickException(f"PostgreSQL refused it: {mask_password(said)}; {outcome}") from None


def _job_input(ctx: click.Context, /, path: Path | None) -> list[bytes]:
    if path is None:
        return sys.stdin.buffer.read().splitlines()
    try:
        return path.read_bytes().splitlines()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", ctx, param_hint="--file") from None


def _warn_if_no_task_files(folder: Path, tasks: set[str]) -> None:
    if not folder.is_dir():
        return
    missing = sorted(tasks - _local_task_names(folder))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        log.warning("no task file in %s for %s; a worker without those tasks will never run their jobs", folder, shown)


async def _add_jobs(settings: Settings, conninfo: str, statements: jobs_api.JobsToAdd) -> int:
    if settings.connection is None:
        # The embedded database may be brand new.
        await kongtask.migrate(connection_string=conninfo, schema=settings.schema)
    from ._connections import borrow

    async with borrow(conninfo) as conn:
        return await jobs_api.insert_jobs(conn, statements)


@cli.command()
@_with_options(MIGRATE)
@click.pass_context
def migrate(ctx: click.Context, /, **params: Any) -> None:
    """Create or update kongtask's tables in the database (workers do this too when they start).

    By default this is graphile-worker v0.1.0's schema, the one kongtask's worker runs on; --to latest
    upgrades to graphile-worker 0.18's schema (see the README before you do).
    """
    settings = _settings(ctx, MIGRATE, params)
    with _database(settings) as conninfo:
        applied = _run(kongtask.migrate(connection_string=conninfo, **config.library_arguments(settings, MIGRATE)))
    if applied:
        log.info("schema %s migrated: applied %s", settings.schema, ", ".join(f"{n:06d}" for n in applied))
    else:
        log.info("schema %s is up to date: nothing to apply", settings.schema)


@cli.group()
def jobs() -> None:
    """Look after jobs: list them; complete, fail, reschedule or retry them; unlock a dead worker's.

    \b
      kongtask jobs list --state dead                   jobs whose attempts are used up
      kongtask jobs list --task send_email --flag slow  filter by task, queue, state, flag
      kongtask jobs reschedule 12 13 --run-at 2030-01-31T09:00:00Z --attempts 0
      kongtask jobs fail 12 --reason "customer left"    never run it again
      kongtask jobs complete 12 13                      done, without running them
      kongtask jobs unlock worker-1a2b3c...             a dead worker's jobs run again now

    On graphile-worker 0.18's schema these call its SQL admin functions (complete_jobs,
    permanently_fail_jobs, reschedule_jobs, force_unlock_workers); on v0.1.0's, plain SQL to the
    same effect. complete, fail and reschedule leave a job that a worker is running alone and say so
    (on v0.1.0, every job of a locked queue counts as running).
    """


def _admin(ctx: click.Context, /, params: Mapping[str, Any], function: str, *args: Any, **kwargs: Any) -> Any:
    """Calls ``kongtask.admin.<function>`` on the configured database."""
    return _call_admin(_settings(ctx, JOBS, params), function, *args, **kwargs)


def _call_admin(settings: Settings, function: str, *args: Any, **kwargs: Any) -> Any:
    from . import admin

    with _database(settings) as conninfo:
        call = getattr(admin, function)
        return _run(call(*args, connection_string=conninfo, schema=settings.schema, **kwargs))


@jobs.command("list")
@click.option("--state", type=click.Choice(["all", "locked", "failed", "dead", "unknown-task"]), default="all",
              show_default=True,
              help="locked: held by a worker now; failed: will be retried; dead: attempts used up; "
              "unknown-task: no file for its task in the tasks folder (--tasks), so no worker of it runs them.")
@click.option("--task", "task", metavar="NAME", help="Only the jobs of this task.")
@click.option("--queue", "queue", metavar="NAME", help="Only the jobs in this queue.")
@click.option("--flag", "flag", metavar="NAME",
              help="Only the jobs carrying this flag (graphile-worker 0.18's schema; v0.1.0's jobs have none).")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True, help="At most this many jobs.")
@_with_options(JOBS)
@click.pass_context
def jobs_list(
    ctx: click.Context, /, state: str, task: str | None, queue: str | None, flag: str | None, limit: int,
    **params: Any,
) -> None:
    """List jobs, smallest priority and earliest run_at first: one tab-separated line each, with the
    lock on it (on v0.1.0, on its queue), its key and flags, and its last error."""
    settings = _settings(ctx, JOBS, params)
    known = None
    if state == "unknown-task":
        if not settings.tasks.is_dir():
            raise click.UsageError(
                f"--state unknown-task compares jobs with the task files in {settings.tasks}, which is not "
                "a folder here; run it in the project, or pass --tasks DIR", ctx,
            )
        known = _local_task_names(settings.tasks)
    rows = _call_admin(settings, "list_jobs", state, limit=limit, task=task, queue=queue, flag=flag,
                       known_tasks=known)
    click.echo("id\ttask\tqueue\tpriority\trun_at\tattempts\tlocked_by\tkey\tflags\tlast_error")
    for r in rows:
        error = (r.last_error or "").replace("\n", " ")[:200]
        run_at = r.run_at.isoformat() if r.run_at is not None else r.run_at_text
        flags = ",".join(sorted(r.flags or ()))
        click.echo(
            f"{r.id}\t{r.task_identifier}\t{r.queue_name or ''}\t{r.priority}\t{run_at}\t"
            f"{r.attempts}/{r.max_attempts}\t{r.locked_by or ''}\t{r.key or ''}\t{flags}\t{error}"
        )


def _report(changed: Any, given: tuple[int, ...], done: Callable[[kongtask.Job], str]) -> None:
    """One line per job given, in that order; a non-zero exit when any was skipped."""
    by_id = {job.id: job for job in changed.jobs}
    for job_id in dict.fromkeys(given):
        if job_id in by_id:
            click.echo(f"job {job_id} {done(by_id[job_id])}")
        elif job_id in changed.running:
            click.echo(f"job {job_id} skipped: a worker is running it (see `kongtask jobs list --state locked`)")
        else:
            click.echo(f"job {job_id} skipped: no such job")
    skipped = len(changed.running) + len(changed.missing)
    if skipped:
        raise KongtaskError(f"{skipped} of {len(by_id) + skipped} job(s) skipped, as listed above")


_JOB_IDS = click.argument("job_ids", metavar="JOB_ID...", nargs=-1, required=True, type=click.IntRange(1))


@jobs.command("complete")
@_JOB_IDS
@_with_options(JOBS)
@click.pass_context
def jobs_complete(ctx: click.Context, /, job_ids: tuple[int, ...], **params: Any) -> None:
    """Mark jobs done without running them: they are deleted, as after a success.

    A job that a worker is running is skipped, and so said; the exit is then 1.
    """
    _report(_admin(ctx, params, "complete_jobs", job_ids), job_ids, lambda job: "completed")


@jobs.command("delete")
@_JOB_IDS
@_with_options(JOBS)
@click.pass_context
def jobs_delete(ctx: click.Context, /, job_ids: tuple[int, ...], **params: Any) -> None:
    """Delete jobs (the same as `complete`): a job that a worker is running is skipped."""
    _report(_admin(ctx, params, "complete_jobs", job_ids), job_ids, lambda job: "deleted")


@jobs.command("fail")
@_JOB_IDS
@click.option("--reason", metavar="TEXT", help="Their last_error.  [default: Manually marked as failed]")
@_with_options(JOBS)
@click.pass_context
def jobs_fail(ctx: click.Context, /, job_ids: tuple[int, ...], reason: str | None, **params: Any) -> None:
    """Fail jobs for good: their attempts are used up and --reason becomes their last error.

    They stay listed (`jobs list --state dead`) until you complete them, or reschedule them with
    more attempts (`jobs reschedule ID --max-attempts N`). A job that a worker is running is skipped.
    """
    _report(_admin(ctx, params, "permanently_fail_jobs", job_ids, reason), job_ids,
            lambda job: f"failed for good: {job.last_error}")


@jobs.command("reschedule")
@_JOB_IDS
@click.option("--run-at", "run_at", metavar="TIME", help="New run_at, ISO 8601 (without an offset: local time).")
@click.option("--priority", type=click.IntRange(-(2**15), 2**15 - 1), help="New priority: a smaller number runs first.")
@click.option("--attempts", type=click.IntRange(0, 2**15 - 1),
              help="New count of attempts made: 0 gives a job all its attempts again.")
@click.option("--max-attempts", "max_attempts", type=click.IntRange(1, 2**15 - 1), help="New max_attempts.")
@_with_options(JOBS)
@click.pass_context
def jobs_reschedule(
    ctx: click.Context, /, job_ids: tuple[int, ...], run_at: str | None, priority: int | None,
    attempts: int | None, max_attempts: int | None, **params: Any,
) -> None:
    """Change the run_at, priority, attempts or max_attempts of waiting jobs (what is given only).

    \b
      kongtask jobs reschedule 12 --run-at 2030-01-31T09:00:00Z   not before then
      kongtask jobs reschedule 12 13 --priority -10               ahead of the others
      kongtask jobs reschedule 12 --attempts 0 --run-at 2030-01-31T09:00:00Z   a dead job, afresh

    A job that a worker is running is skipped, and so said. To run a job now with one more
    attempt, `jobs retry` it.
    """
    when = None
    if run_at is not None:
        try:
            when = config.parse_timestamp(run_at)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param_hint="--run-at") from None
    if when is None and priority is None and attempts is None and max_attempts is None:
        raise click.UsageError("give --run-at, --priority, --attempts or --max-attempts", ctx)
    changed = _admin(ctx, params, "reschedule_jobs", job_ids, run_at=when, priority=priority, attempts=attempts,
                     max_attempts=max_attempts)
    _report(changed, job_ids, lambda job: (
        f"runs at {job.run_at.isoformat()} with priority {job.priority}, attempts {job.attempts}/{job.max_attempts}"))


@jobs.command("unlock")
@click.argument("worker_ids", metavar="WORKER_ID...", nargs=-1, required=True)
@_with_options(JOBS)
@click.pass_context
def jobs_unlock(ctx: click.Context, /, worker_ids: tuple[str, ...], **params: Any) -> None:
    """Release the jobs and queues of workers you know are dead, so their jobs run again now rather
    than when the lock expires (--job-expiry).

    A WORKER_ID is the lock id a worker logs when it starts, and the locked_by column of
    `kongtask jobs list --state locked`. Unlocking a worker that is alive lets its running jobs run
    a second time elsewhere.
    """
    for unlocked in _admin(ctx, params, "force_unlock_workers", worker_ids):
        held = [f"{len(unlocked.job_ids)} job(s) ({', '.join(map(str, unlocked.job_ids))})"] if unlocked.job_ids else []
        if unlocked.queue_names:
            held.append(f"{len(unlocked.queue_names)} queue(s) ({', '.join(unlocked.queue_names)})")
        click.echo(f"{unlocked.worker_id}: " + (f"unlocked {' and '.join(held)}" if held else "held nothing"))


@jobs.command("retry")
@click.argument("job_id", type=int)
@_with_options(JOBS)
@click.pass_context
def jobs_retry(ctx: click.Context, /, job_id: int, **params: Any) -> None:
    """Make JOB_ID due now, with one more attempt (also a job whose attempts are used up)."""
    job = _admin(ctx, params, "retry_job", job_id)
    if job is None:
        raise KongtaskError(f"no job {job_id}, or a worker is running it; see `kongtask jobs list`")
    click.echo(f"job {job.id} is due now")


@cli.group()
def cron() -> None:
    """Show the recurring jobs of the crontab (a file named crontab beside the tasks folder, or
    --crontab PATH): `0 4 * * * task ?options {payload}` a line, in UTC. Workers add their jobs."""


@cron.command("list")
@click.option("--count", type=click.IntRange(1, 100), default=3, show_default=True,
              help="How many next run times to show for each item.")
@click.option("--from", "start", metavar="TIME", help="Show the run times from this time on (ISO 8601; default now).")
@_with_options(CRON)
@click.pass_context
def cron_list(ctx: click.Context, /, count: int, start: str | None, **params: Any) -> None:
    """List each cron item: its identifier, task, schedule, options, payload and next run times (UTC)."""
    settings = _settings(ctx, CRON, params)
    when = datetime.now(timezone.utc)
    if start is not None:
        try:
            when = config.parse_timestamp(start)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param_hint="--from") from None
    items = _load_cron_items(settings, required=True)
    click.echo("identifier\ttask\tschedule\toptions\tpayload\tnext runs (UTC)")
    for item in items:
        runs = ", ".join(f"{run:%Y-%m-%d %H:%M}" for run in item.next_runs(when, count)) or "none in 8 years"
        payload = json.dumps(item.payload, ensure_ascii=False) if item.payload is not None else ""
        click.echo(f"{item.identifier}\t{item.task}\t{item.match}\t{item.options}\t{payload}\t{runs}")


@cli.command()
@_with_options(DASHBOARD)
@click.pass_context
def dashboard(ctx: click.Context, /, **params: Any) -> None:
    """Serve a web dashboard of the queue: jobs by state, failures, locks, and actions on jobs.

    It listens on 127.0.0.1:8000 unless told otherwise; any address beyond this machine needs
    --token. Stop it with Ctrl-C. Needs pip install 'kongtask[dashboard]'.
    """
    settings = _settings(ctx, DASHBOARD, params)
    try:
        from . import dashboard as web
    except ImportError as exc:
        raise KongtaskError(f"the dashboard needs {exc.name}: pip install 'kongtask[dashboard]'") from None
    try:
        web.check_binding(settings.dashboard_host, settings.dashboard_token)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc), ctx) from None
    with _database(settings) as conninfo:
        _run(_serve_dashboard(settings, conninfo))


async def _serve_dashboard(settings: Settings, conninfo: str) -> None:
    from . import dashboard as web
    from ._connections import connect
    from ._schema import held_by

    async with await connect(conninfo) as conn:  # fails fast, in one line, on a database it cannot use
        generation = (await held_by(conn, settings.schema)).generation
    sock = web.listen(settings.dashboard_host, settings.dashboard_port)
    app = web.Dashboard(connection_string=conninfo, schema=settings.schema, read_only=settings.read_only,
                        token=settings.dashboard_token)
    notes = [note for note, on in (("read-only", settings.read_only), ("token required", settings.dashboard_token))
             if on]
    if settings.verbose < 1:
        logging.getLogger("uvicorn").setLevel(logging.WARNING)  # "Started server process": ours says more
    log.info("dashboard of %s (graphile-worker %s schema, schema %s) on %s%s", describe_target(conninfo), generation,
             settings.schema, web.url_of(sock), f" ({', '.join(notes)})" if notes else "")
    await web.serve(app, sock, access_log=settings.verbose >= 1)


@cli.command("config")
@_with_options(None)
@click.pass_context
def show_config(ctx: click.Context, /, **params: Any) -> None:
    """Show the settings kongtask would use here, and where each one comes from."""
    settings = _settings(ctx, None, params)
    for opt in config.options():
        source = settings.sources.get(opt.name, "default")
        if getattr(settings, opt.name) is None:
            note = ""
            if opt.name == "connection":
                from ._embedded.project import project_home

                note = f": the embedded PostgreSQL in {project_home(_project_root())} is used"
            click.echo(f"# {opt.name} is not set{note}")
            continue
        value = config.display(settings, opt)
        # As TOML would have it: numbers (durations too) and booleans bare, everything else quoted.
        bare = isinstance(getattr(settings, opt.name), (bool, int, float, timedelta))
        shown = value if bare else json.dumps(value)
        click.echo(f"{opt.name} = {shown}  # {source}")
    click.echo(f"# database: {_run(_describe_database(settings))}")


async def _describe_database(settings: Settings) -> str:
    """What the configured database holds, in words; never an error (config only shows)."""
    from ._connections import connect
    from ._schema import describe_held

    if settings.connection is None:
        return "the embedded PostgreSQL; its schema is read when a worker starts"
    try:
        conn = await connect(settings.connection, connect_timeout=3)
    except (KongtaskError, psycopg.Error) as exc:
        return f"not reachable ({mask_password(first_line(exc))})"
    async with conn:
        try:
            return await describe_held(conn, settings.schema)
        except psycopg.Error as exc:
            return f"cannot read its schema ({mask_password(first_line(exc))})"


@cli.group()
def embedded() -> None:
    """List and remove the embedded PostgreSQL databases kongtask made (one per project folder)."""


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


@embedded.command("list")
def embedded_list() -> None:
    """Show each embedded database: project folder, data folder, size, and whether it runs."""
    from ._embedded.project import list_embedded

    click.echo("project\tdata\tsize\tstate")
    for db in list_embedded():
        state = f"running, used by {db.users} kongtask process(es)" if db.users else (
            "running" if db.running else "stopped")
        click.echo(f"{db.project or '(unknown)'}\t{db.data_dir}\t{_megabytes(db.size)}\t{state}")


@embedded.command("remove")
@click.argument("project", required=False, type=click.Path(file_okay=False, path_type=Path))
def embedded_remove(project: Path | None) -> None:
    """Delete the embedded database of PROJECT (default: this project) for good.

    PROJECT is a project folder, or the data folder `kongtask embedded list` shows (for a database
    whose project is unknown). It is refused while a kongtask process uses the database.
    """
    from ._embedded.project import home_of, remove_embedded

    removed = remove_embedded(home_of(project if project is not None else _project_root()))
    click.echo(f"removed the embedded database of {removed.project or removed.home} ({_megabytes(removed.size)})")


# --- the entry point ------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """The ``kongtask`` console script."""
    sys.exit(run_cli(sys.argv[1:] if argv is None else list(argv)))


def run_cli(args: list[str]) -> int:
    """Runs the command line ``args`` and returns the exit code."""
    # Until a command takes the signals over, SIGTERM and SIGHUP (a closed terminal) unwind like
    # Ctrl-C, so an embedded server started on the way is released.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        result = cli.main(args=args, prog_name="kongtask", standalone_mode=False, obj={"argv": args})
        return result if isinstance(result, int) else 0
    except click.exceptions.NoArgsIsHelpError as exc:  # plain `kongtask`: the help, as it is
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
        return 2
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _print_error(exc.format_message() + hint)
        return 2
    except click.ClickException as exc:
        _print_error(exc.format_message())
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        return 130
    except KongtaskError as exc:
        _print_error(str(exc))
        return 1
    except Exception:  # noqa: BLE001 - a bug keeps its traceback (masked), then a non-zero exit
        sys.stderr.write(mask_password(traceback.format_exc()))
        return 1
