"""What the database holds, behind one seam: :class:`DatabaseSchema`.

- :mod:`.generation`: the seam itself (:class:`DatabaseSchema`, :class:`Capabilities`) and the
  rules every schema name follows;
- :mod:`.v0_1` and ``v0_1.sql``: the v0.1.0 generation (the default), its statements;
- :mod:`.v0_18` and ``v0_18.sql``: upstream 0.18's generation (opt-in), its statements;
- :mod:`.jobs`: the job calls from Python (add, get, complete, fail) and row decoding;
- :mod:`.migrate` and ``migrations/``: the numbered migrations, one history for every generation.

A worker or an admin call asks :func:`held_by` which generation a database holds, once, and then
sends that generation's statements only.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import tuple_row

from ..errors import MigrationError
from . import v0_1, v0_18
from .generation import Capabilities, DatabaseSchema
from .migrate import describe_level

__all__ = ["Capabilities", "DatabaseSchema", "describe_held", "held_by", "schema_named"]

def schema_named(name: str) -> v0_1.SchemaV0_1:
    """The default generation's (v0.1.0) statements under ``name``: what ``migrate`` installs on an
    empty database, what the SQL API functions call, and the check of the name itself."""
    return v0_1.schema_named(name)


async def held_by(conn: psycopg.AsyncConnection[Any], name: str) -> DatabaseSchema:
    """The generation the database behind ``conn`` holds under ``name``, read from its migrations.

    Called when a worker starts, after migrating, and by each admin call: the one place that looks
    before choosing.
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
    if latest <= v0_1.LAST_MIGRATION:
        return v0_1.schema_named(name)
    if latest < v0_18.FIRST_RUNNABLE_MIGRATION:
        raise MigrationError(
            f"this database holds {describe_level(latest)} (migration {latest}) in schema {name!r}, part way "
            "between the two schemas kongtask runs on; finish the upgrade with `kongtask migrate --to latest`"
        )
    # 19 (0.17) or 20 (0.18); past 20, only by migrations that are not breaking: migrating refuses
    # the others, and warns.
    return v0_18.schema_named(name)


async def describe_held(conn: psycopg.AsyncConnection[Any], name: str) -> str:
    """What the database behind ``conn`` holds under ``name``, in words, for ``kongtask config``."""
    cursor = conn.cursor(row_factory=tuple_row)
    try:
        await cursor.execute(schema_named(name).latest_migration, ())
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return f"no kongtask schema named {name!r} yet: `kongtask migrate` (or a worker) installs v0.1.0's"
    row = await cursor.fetchone()
    latest = row[0] if row else 0
    return f"{describe_level(latest)} (migration {latest}) in schema {name!r}"
