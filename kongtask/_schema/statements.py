"""Every statement kongtask sends to PostgreSQL: the named blocks of ``queries.sql``, rendered.

The file is read once; its statements are composed once per schema with psycopg's ``sql`` module, so the schema name is always
quoted as an identifier and values always travel as parameters. A batched fetch or release would be
one more attribute here, beside the single-job statements.
"""

from __future__ import annotations

import functools
import typing
from importlib import resources

from psycopg import sql

from ..errors import ConfigurationError

DEFAULT_SCHEMA = "graphile_worker"

#: The channel that the ``_900_notify_worker`` trigger notifies on every INSERT into jobs.
JOBS_INSERT_CHANNEL = "jobs:insert"

#: The optional arguments of ``<schema>.add_job``, in the order of its signature.
ADD_JOB_OPTIONS = ("queue_name", "run_at", "max_attempts")

#: Stands for the quoted schema name in the numbered migration files, where SQL code may hold a
#: name (kongtask._schema.migrate reads comments, strings and function bodies as PostgreSQL does).
MIGRATION_SCHEMA_TOKEN = ":KONGTASK_SCHEMA"

#: PostgreSQL silently cuts a longer name to its first NAMEDATALEN - 1 bytes.
MAX_NAME_BYTES = 63


def schema_name_problem(schema: str) -> str | None:
    """Why PostgreSQL cannot hold ``schema`` as it is (one line), or None when it can."""
    if not schema:
        return "the schema name must be non-empty, such as graphile_worker"
    if "\x00" in schema:
        return "the schema name holds a NUL character, which PostgreSQL names cannot; choose another"
    try:
        size = len(schema.encode("utf-8"))
    except UnicodeEncodeError:
        return "the schema name is not valid text (undecodable bytes); choose another"
    if size > MAX_NAME_BYTES:
        # Cut, two long names would share one schema and its jobs.
        shown = repr(schema if len(schema) <= 24 else schema[:24] + "...")
        return (
            f"the schema name {shown} is {size} bytes; PostgreSQL keeps only the first {MAX_NAME_BYTES} bytes"
            f" of a name, so choose one of at most {MAX_NAME_BYTES} bytes (UTF-8)"
        )
    return None


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
def named_statements() -> dict[str, str]:
    """The named blocks of ``queries.sql``, read once: ``{name: template}``, comment lines dropped."""
    text = (resources.files(__package__ or "kongtask._schema") / "queries.sql").read_text(encoding="utf-8")
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            name = line.removeprefix("-- name: ").strip()
            if name in blocks:
                raise AssertionError(f"queries.sql names {name} twice")
            current = blocks[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in blocks.items()}


class Queries:
    """The statements for one schema, rendered once and reused (so the server can prepare them).

    Each statement that names the schema is meant to be executed with parameters (an empty tuple
    when it takes none): only then does psycopg turn the "%%" of a name back into "%". The text of
    each is the block of the same name in ``queries.sql``.
    """

    # the job lifecycle: fetch, release (complete or fail)
    get_job: str
    complete_job: str
    fail_job: str
    complete_job_quietly: str
    fail_job_quietly: str
    complete_job_and_get_job: str
    fail_job_and_get_job: str
    fail_job_once: str
    return_stray_checkouts: str
    due_jobs_without_task: str
    heartbeat: str
    # admin
    list_jobs: str
    unlock_worker: str
    retry_job: str
    reschedule_job: str
    delete_job: str
    # NOTIFY wake-ups
    listen: str
    # migrations
    migrations_table: str
    latest_migration: str
    record_migration: str
    migration_lock: str
    create_schema: str
    create_migrations_table: str

    def __init__(self, schema: str) -> None:
        problem = schema_name_problem(schema)
        if problem:
            raise ConfigurationError(problem)
        self.schema = schema
        self.quoted_schema = sql.Identifier(schema).as_string(None)
        declared = set(typing.get_type_hints(Queries))
        templates = named_statements()
        missing = declared - set(templates)
        if missing:
            raise AssertionError(f"queries.sql lacks {sorted(missing)}")
        for name in declared:
            template = templates[name]
            rendered = template if name in _SENT_AS_WRITTEN else _render(template, schema, channel=JOBS_INSERT_CHANNEL)
            setattr(self, name, rendered)

    @functools.cache  # noqa: B019 - one Queries per schema lives for the process
    def add_job(self, options: tuple[str, ...]) -> str:
        """``add_job`` with named arguments for just the given options.

        Options left out take the SQL function's own defaults, so the defaults live in one place:
        the database.
        """
        args: list[sql.Composable] = [sql.SQL("identifier => %s"), sql.SQL("payload => %s::json")]
        args += [sql.SQL("{} => %s").format(sql.Identifier(name)) for name in options]
        return (
            sql.SQL("select * from {schema}.add_job({args})")
            .format(schema=_schema_in_statement(self.schema), args=sql.SQL(", ").join(args))
            .as_string(None)
        )


#: Installs what the schema's defaults need before the first migration (see ``queries.sql``).
INSTALL_EXTENSIONS = named_statements()["install_extensions"]


@functools.cache
def queries_for(schema: str) -> Queries:
    """The shared, rendered statements for ``schema``."""
    return Queries(schema)
