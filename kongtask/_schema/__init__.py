"""What the database holds, behind one seam: :class:`DatabaseSchema`.

- :mod:`.generation`: the seam itself (:class:`DatabaseSchema`, :class:`Capabilities`) and the
  rules every schema name follows;
- :mod:`.v0_1` and ``v0_1.sql``: the v0.1.0 generation, its statements and capabilities;
- :mod:`.jobs`: the job calls from Python (add, get, complete, fail) and row decoding;
- :mod:`.v0_18` and ``v0_18.sql``: upstream 0.18's schema, so far only as a migration target;
- :mod:`.migrate` and ``migrations/``: the numbered migrations, one history for every generation.

The worker for the 0.18 schema is one more class beside ``SchemaV0_1`` that satisfies
:class:`DatabaseSchema`, and one more entry in :data:`GENERATIONS`; until then :func:`held_by`
refuses a database past migration 1.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import tuple_row

from ..errors import MigrationError
from . import v0_1
from .generation import Capabilities, DatabaseSchema
from .migrate import describe_level

__all__ = ["GENERATIONS", "Capabilities", "DatabaseSchema", "held_by", "schema_named"]

#: Every generation kongtask speaks, oldest first, with the highest migration each ends at.
GENERATIONS = ((v0_1.LAST_MIGRATION, v0_1.schema_named),)


def schema_named(name: str) -> DatabaseSchema:
    """The newest generation kongtask installs, under ``name``: what ``migrate`` brings a database to."""
    _, named = GENERATIONS[-1]
    return named(name)


async def held_by(conn: psycopg.AsyncConnection[Any], name: str) -> DatabaseSchema:
    """The generation the database behind ``conn`` holds under ``name``, read from its migrations.

    Called when a worker starts, after migrating: the one place that looks before choosing.
    """
    migrations = schema_named(name)
    cursor = conn.cursor(row_factory=tuple_row)
    try:
        await cursor.execute(migrations.latest_migration, ())
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        raise MigrationError(
            f"this database has no kongtask schema named {name!r}: run `kongtask migrate` (workers migrate "
            "when they start), or check --schema / KONGTASK_SCHEMA"
        ) from None
    row = await cursor.fetchone()
    latest = row[0] if row else 0
    for last_migration, named in GENERATIONS:
        if latest <= last_migration:
            return named(name)
    raise MigrationError(
        f"this database holds {describe_level(latest)} (migration {latest}) in schema {name!r}; kongtask's "
        f"worker runs on the v0.1.0 schema only so far; use a database at migration {GENERATIONS[-1][0]}"
    )
