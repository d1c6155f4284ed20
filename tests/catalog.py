"""Reads a kongtask schema back from pg_catalog as one line per object, bodies left out.

The same description serves the conformance test (against the contract written out in the test) and
the interop tests (kongtask's catalog against Node graphile-worker's). :func:`describe_v0_18` is the
0.18 contract's own query (``catalog_v0_18.sql``), compared with ``catalog_v0_18.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

_CATALOG_QUERIES = {
    "col": """
        select c.relname || '.' || a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || case when a.attnotnull then ' not null' else '' end
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where n.nspname = %(schema)s and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
    """,
    "con": """
        select c.relname || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
        from pg_constraint con
        join pg_class c on c.oid = con.conrelid
        join pg_namespace n on n.oid = c.relnamespace
        -- PostgreSQL 18 records NOT NULL as constraints too; columns already say "not null".
        where n.nspname = %(schema)s and con.contype <> 'n'
    """,
    "ext": """
        select e.extname || ' in ' || n.nspname
        from pg_extension e join pg_namespace n on n.oid = e.extnamespace
        where e.extname in ('pgcrypto', 'uuid-ossp')
    """,
    "fn": """
        select p.proname || '(' || pg_get_function_arguments(p.oid) || ') returns '
               || replace(pg_get_function_result(p.oid), quote_ident(%(schema)s) || '.', 'S.')
               || ' lang=' || l.lanname || ' vol=' || p.provolatile::text || ' secdef=' || p.prosecdef
        from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        join pg_language l on l.oid = p.prolang
        where n.nspname = %(schema)s
    """,
    "idx": """
        select replace(pg_get_indexdef(i.indexrelid), quote_ident(%(schema)s) || '.', 'S.')
        from pg_index i
        join pg_class c on c.oid = i.indrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %(schema)s
    """,
    "rel": """
        select c.relname || ' kind=' || c.relkind::text || ' rls=' || c.relrowsecurity
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %(schema)s
    """,
    "trg": """
        select replace(pg_get_triggerdef(t.oid), quote_ident(%(schema)s) || '.', 'S.')
        from pg_trigger t
        join pg_class c on c.oid = t.tgrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %(schema)s and not t.tgisinternal
    """,
}


def describe_schema(conn: psycopg.Connection[Any], schema: str = "graphile_worker") -> list[str]:
    """Every object of ``schema`` that the contract fixes, one sorted line each."""
    lines: list[str] = []
    for kind, query in _CATALOG_QUERIES.items():
        for (text,) in conn.execute(query, {"schema": schema}).fetchall():
            lines.append(f"{kind} {text}")
    migrations = conn.execute(
        sql.SQL("select id from {}.migrations order by id").format(sql.Identifier(schema))
    ).fetchall()
    lines.append("migrations " + ",".join(str(row[0]) for row in migrations))
    return sorted(lines)


_HERE = Path(__file__).resolve().parent

#: graphile-worker 0.18's catalog, as ``catalog_v0_18.sql`` prints it for a database that
#: ``graphile-worker@0.18.0 --schema-only`` migrated (a copy of the contract's reference).
EXPECTED_V0_18 = _HERE / "catalog_v0_18.txt"


def describe_v0_18(conn: psycopg.Connection[Any], schema: str = "graphile_worker") -> list[str]:
    """The 0.18 contract's catalog of ``schema``: one line per object, sorted (``S.`` for the schema)."""
    query = "\n".join(
        line for line in (_HERE / "catalog_v0_18.sql").read_text().splitlines() if not line.startswith("--")
    )
    return sorted(text for (text,) in conn.execute(query, {"s": schema}).fetchall())


def expected_v0_18() -> list[str]:
    return sorted(line for line in EXPECTED_V0_18.read_text().splitlines() if line)
