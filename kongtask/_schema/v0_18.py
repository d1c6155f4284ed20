"""graphile-worker's 0.18 schema (migrations 2 to 20): every statement kongtask sends to it, the
named blocks of ``v0_18.sql``.

:class:`SchemaV0_18` is this generation's :class:`~kongtask._schema.generation.DatabaseSchema`: the
worker's batched fetch and release on the private tables, the admin calls through upstream's SQL
admin functions, and the statements that migrating to it needs.
"""

from __future__ import annotations

import functools

from psycopg import sql

from .generation import Capabilities, schema_name_problem
from .v0_1 import declared_statements, read_named_blocks, render_statement

#: The highest migration of this generation, the newest kongtask knows.
LAST_MIGRATION = 20

#: The lowest migration this generation's statements run on: 19, graphile-worker 0.17's schema
#: (20 only changes what add_job and add_jobs insert), so kongtask joins 0.17 fleets as they are.
FIRST_RUNNABLE_MIGRATION = 19

#: The migrations after which workers of the earlier ones must stop (graphile-worker's list).
BREAKING_MIGRATIONS = frozenset({1, 3, 11, 13, 14, 16, 19})

#: Sent on ``worker:migrate`` after each migration, as graphile-worker does.
MIGRATE_CHANNEL = "worker:migrate"

_SENT_AS_WRITTEN = frozenset({"migrations_columns", "notify_migrated"})


class SchemaV0_18:
    """The 0.18 schema under one name: its statements, rendered once, and its capabilities."""

    generation = "0.18"
    capabilities = Capabilities(job_keys=True, flags=True, jobs_view=True, pool_locks=True, cron=True)

    # the job lifecycle: fetch, release (complete or fail), and their recovery
    register_tasks: str
    get_jobs: str
    release_jobs: str
    return_jobs: str
    return_stray_checkouts: str
    heartbeat: str
    expire_locks: str
    due_jobs_without_task: str
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
    # adding and removing jobs
    add_job: str
    remove_job: str
    add_jobs: str
    analyze_jobs: str
    # cron: what the fleet knows of each item, and one minute's jobs claimed and added at once
    known_crontabs: str
    register_crontabs: str
    schedule_cron_jobs: str
    # migrations
    migrations_columns: str
    applied_migrations: str
    applied_migrations_breaking: str
    add_breaking_column: str
    mark_breaking: str
    record_migration: str
    notify_migrated: str

    def __init__(self, schema: str) -> None:
        problem = schema_name_problem(schema)
        if problem:
            raise AssertionError(problem)  # checked by the v0.1.0 schema first, always
        self.name = schema
        self.quoted_schema = sql.Identifier(schema).as_string(None)
        templates = read_named_blocks("v0_18.sql")
        for name in statement_names():
            template = templates[name]
            setattr(self, name, template if name in _SENT_AS_WRITTEN else render_statement(template, schema))


def statement_names() -> set[str]:
    """The statements :class:`SchemaV0_18` declares (its str attributes)."""
    return declared_statements(SchemaV0_18)


@functools.cache
def schema_named(schema: str) -> SchemaV0_18:
    """The shared, rendered 0.18 migration statements for ``schema``."""
    return SchemaV0_18(schema)
