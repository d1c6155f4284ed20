"""graphile-worker's 0.18 schema (migrations 2 to 20), so far only as a migration target.

kongtask installs and upgrades to it when asked (``kongtask migrate --to latest``), but its worker
runs on the v0.1.0 schema only: this module holds just the statements that migrating needs, the
named blocks of ``v0_18.sql``. It is not a :class:`~kongtask._schema.generation.DatabaseSchema`;
the worker's statements for this schema are a later step.
"""

from __future__ import annotations

import functools

from psycopg import sql

from .generation import schema_name_problem
from .v0_1 import declared_statements, read_named_blocks, render_statement

#: The highest migration of this generation, the newest kongtask knows.
LAST_MIGRATION = 20

#: The migrations after which workers of the earlier ones must stop (graphile-worker's list).
BREAKING_MIGRATIONS = frozenset({1, 3, 11, 13, 14, 16, 19})

#: Sent on ``worker:migrate`` after each migration, as graphile-worker does.
MIGRATE_CHANNEL = "worker:migrate"

_SENT_AS_WRITTEN = frozenset({"migrations_columns", "notify_migrated"})


class SchemaV0_18:
    """The migration statements of the 0.18 schema under one name, rendered once."""

    generation = "0.18"

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
