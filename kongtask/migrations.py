"""Brings a database to the newest schema kongtask knows, safely under concurrency.

The migrations are the numbered files ``sql/NNNNNN.sql``. Each is applied once, in order, and
recorded in ``<schema>.migrations``; a database already migrated by graphile-worker is accepted as
it is, because the same numbers mean the same schema.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from .errors import MigrationError
from .queries import INSTALL_EXTENSIONS, MIGRATION_SCHEMA_TOKEN, queries_for

log = logging.getLogger("kongtask.migrate")

_MIGRATION_NAME = re.compile(r"^(\d{6})\.sql$")


@dataclass(frozen=True)
class Migration:
    number: int
    text: str

    def for_schema(self, schema: str) -> str:
        return self.text.replace(MIGRATION_SCHEMA_TOKEN, sql.Identifier(schema).as_string(None))


def _migrations_folder() -> Path:
    # The wheel carries the files inside the package; a source checkout keeps them at the top.
    packaged = resources.files("kongtask") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "sql"


def load_migrations() -> list[Migration]:
    """Every numbered migration, in order."""
    folder = _migrations_folder()
    found = []
    for path in folder.iterdir():
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.read_text(encoding="utf-8")))
    if not found:
        raise MigrationError(f"no migration files found in {folder}; the kongtask install is broken")
    return sorted(found, key=lambda m: m.number)


async def migrate_connection(conn: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    """Applies the pending migrations over ``conn`` and returns their numbers.

    Everything happens in one transaction under an advisory lock, so many processes starting at
    once apply each migration exactly once, and a refused database is left untouched.
    """
    queries = queries_for(schema)
    migrations = load_migrations()
    newest_known = migrations[-1].number
    applied: list[int] = []
    # Plain tuples whatever the connection's row factory (a caller's pool may use dict rows).
    cursor = conn.cursor(row_factory=tuple_row)
    async with conn.transaction():
        await cursor.execute(queries.migration_lock, (f"kongtask-migrate:{schema}",))
        await cursor.execute(queries.migrations_table, (f"{queries.quoted_schema}.migrations",))
        table = await cursor.fetchone()
        if table is None or table[0] is None:
            log.info("installing the kongtask schema %s", schema)
            await conn.execute(INSTALL_EXTENSIONS)
            await conn.execute(queries.create_schema)
            await conn.execute(queries.create_migrations_table)
            latest = 0
        else:
            await cursor.execute(queries.latest_migration)
            row = await cursor.fetchone()
            latest = row[0] if row else 0
        if latest > newest_known:
            raise MigrationError(
                f"database schema {schema!r} is at migration {latest}, newer than the newest this "
                f"kongtask knows ({newest_known}); upgrade kongtask, or use another --schema"
            )
        for migration in migrations:
            if migration.number <= latest:
                continue
            log.info("applying migration %06d to schema %s", migration.number, schema)
            await conn.execute(migration.for_schema(schema))
            await conn.execute(queries.record_migration, (migration.number,))
            applied.append(migration.number)
    return applied
