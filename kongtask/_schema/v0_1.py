"""The v0.1.0 generation: every statement kongtask sends to it, the named blocks of ``v0_1.sql``.

The file is read once; its statements are composed once per schema name with psycopg's ``sql``
module, so the name is always quoted as an identifier and values always travel as parameters.
:class:`SchemaV0_1` is this generation's :class:`~kongtask._schema.generation.DatabaseSchema`.
"""

from __future__ import annotations

import functools
import typing
from importlib import resources

from psycopg import sql

from ..errors import ConfigurationError
from .generation import Capabilities, schema_name_problem

#: The channel that the ``_900_notify_worker`` trigger notifies on every INSERT into jobs.
JOBS_INSERT_CHANNEL = "jobs:insert"

#: The optional arguments of ``<schema>.add_job``, in the order of its signature.
ADD_JOB_OPTIONS = ("queue_name", "run_at", "max_attempts")

#: The highest migration of this generation: a database at or below it holds v0.1.0.
LAST_MIGRATION = 1


def _render(template: str, schema: str, **identifiers: str) -> str:
    # psycopg reads "%" as a placeholder even inside a quoted name, so the schema name's "%"
    # goes as "%%" (the statements naming the schema always run with parameters).
    parts = {name: sql.Identifier(value) for name, value in identifiers.items()}
    return sql.SQL(template).format(schema=_schema_in_statement(schema), **parts).as_string(None)


def _schema_in_statement(schema: str) -> sql.SQL:
    return sql.SQL(sql.Identifier(schema).as_string(None).replace("%", "%%"))


#: The statements that name no schema and so are sent as they are.
_SENT_AS_WRITTEN = frozenset({"migration_lock", "install_extensions"})


@functools.cache
def read_named_blocks(filename: str) -> dict[str, str]:
    """The named blocks of one statements file beside this module, read once: ``{name: template}``,
    comment lines dropped."""
    text = (resources.files("kongtask._schema") / filename).read_text(encoding="utf-8")
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            name = line.removeprefix("-- name: ").strip()
            if name in blocks:
                raise AssertionError(f"{filename} names {name} twice")
            current = blocks[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in blocks.items()}


def named_statements() -> dict[str, str]:
    """The named blocks of ``v0_1.sql``, read once: ``{name: template}``, comment lines dropped."""
    return read_named_blocks("v0_1.sql")


def render_statement(template: str, schema: str) -> str:
    """``template`` with ``{schema}`` (and ``{channel}``) filled in, to run with parameters."""
    return _render(template, schema, channel=JOBS_INSERT_CHANNEL)


class SchemaV0_1:
    """The v0.1.0 schema under one name: its statements, rendered once and reused (so the server
    can prepare them), and its capabilities (none beyond the contract).

    Each statement that names the schema is meant to be executed with parameters (an empty tuple
    when it takes none): only then does psycopg turn the "%%" of a name back into "%". The text of
    each is the block of the same name in ``v0_1.sql``.
    """

    generation = "v0.1.0"
    capabilities = Capabilities()

    # the job lifecycle: fetch, release (complete or fail)
    get_job: str
    complete_job: str
    fail_job: str
    get_jobs: str
    release_jobs: str
    return_jobs: str
    return_stray_checkouts: str
    due_jobs_without_task: str
    heartbeat: str
    # metrics
    job_gauges: str
    # admin
    list_jobs: str
    force_unlock_workers: str
    complete_jobs: str
    permanently_fail_jobs: str
    reschedule_jobs: str
    present_jobs: str
    retry_job: str
    # the dashboard's reads (kongtask.dashboard)
    dashboard_counts: str
    dashboard_count_settings: str
    dashboard_task_estimates: str
    dashboard_table_stats: str
    dashboard_lock_holders: str
    dashboard_locked_queues: str
    dashboard_jobs_older: str
    dashboard_jobs_newer: str
    dashboard_job: str
    # NOTIFY wake-ups
    listen: str
    # migrations
    migrations_table: str
    latest_migration: str
    record_migration: str
    migration_lock: str
    create_schema: str
    create_migrations_table: str
    # adding jobs (add_job itself is composed: see add_job())
    add_job_with_priority: str
    add_jobs: str
    analyze_jobs: str
    # what only the 0.18 schema needs: v0.1.0 has no task table, and fetching takes over expired locks
    register_tasks: str | None = None
    expire_locks: str | None = None

    def __init__(self, schema: str) -> None:
        problem = schema_name_problem(schema)
        if problem:
            raise ConfigurationError(problem)
        self.name = schema
        self.quoted_schema = sql.Identifier(schema).as_string(None)
        declared = statement_names()
        templates = named_statements()
        missing = declared - set(templates)
        if missing:
            raise AssertionError(f"v0_1.sql lacks {sorted(missing)}")
        for name in declared:
            template = templates[name]
            rendered = template if name in _SENT_AS_WRITTEN else render_statement(template, schema)
            setattr(self, name, rendered)

    @functools.cache  # noqa: B019 - one SchemaV0_1 per schema name lives for the process
    def add_job(self, options: tuple[str, ...]) -> str:
        """``add_job`` with named arguments for just the given options.

        Options left out take the SQL function's own defaults, so the defaults live in one place:
        the database.
        """
        args: list[sql.Composable] = [sql.SQL("identifier => %s"), sql.SQL("payload => %s::json")]
        args += [sql.SQL("{} => %s").format(sql.Identifier(name)) for name in options]
        return (
            sql.SQL("select * from {schema}.add_job({args})")
            .format(schema=_schema_in_statement(self.name), args=sql.SQL(", ").join(args))
            .as_string(None)
        )


#: Installs what the schema's defaults need before the first migration (see ``v0_1.sql``).
INSTALL_EXTENSIONS = named_statements()["install_extensions"]


def declared_statements(cls: type) -> set[str]:
    """The statements a schema class renders: the str attributes it declares, but its own names."""
    return {name for name, hint in typing.get_type_hints(cls).items() if hint is str} - {"generation", "name"}


def statement_names() -> set[str]:
    """The statements this generation renders: the str attributes :class:`SchemaV0_1` declares."""
    return declared_statements(SchemaV0_1)


@functools.cache
def schema_named(schema: str) -> SchemaV0_1:
    """The shared, rendered v0.1.0 schema named ``schema``."""
    return SchemaV0_1(schema)
