"""Brings a database to the schema asked for, safely under concurrency: graphile-worker v0.1.0's
(migration 1, the default) or, when asked, a later one up to graphile-worker 0.18's (migration 20).

The migrations are the numbered files ``migrations/NNNNNN.sql`` beside this module. Each is applied once, in order, and
recorded in ``<schema>.migrations``; a database already migrated by graphile-worker is accepted as
it is, because the same numbers mean the same schema.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from ..errors import ConfigurationError, MigrationError
from . import v0_1, v0_18
from .generation import MIGRATION_SCHEMA_TOKEN
from .v0_1 import INSTALL_EXTENSIONS

log = logging.getLogger("kongtask.migrate")

_MIGRATION_NAME = re.compile(r"^(\d{6})\.sql$")


@dataclass(frozen=True)
class Migration:
    number: int
    text: str

    def for_schema(self, schema: str) -> str:
        """The migration's SQL for ``schema``, the name escaped for each place it lands in.

        The schema name may be any identifier PostgreSQL accepts: newlines, quotes, ``--``, ``$$``.
        Pasted into the file as plain text it could end a comment, a string or a function body
        early and run the rest as SQL, so the file is read the way PostgreSQL reads it and the
        token is replaced only where a name may stand (see :func:`_render`).
        """
        try:
            return _render(self.text, sql.Identifier(schema).as_string(None))
        except _Misplaced as exc:
            raise MigrationError(
                f"migration {self.number:06d} is broken ({exc}); reinstall kongtask"
            ) from None


class _Misplaced(Exception):
    pass


_TOKEN = MIGRATION_SCHEMA_TOKEN
# PostgreSQL's identifier characters (any non-ASCII character is one); "$" only after the first.
_WORD = re.compile(r"[A-Za-z0-9_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
# Beside these, a quoted name would merge with its neighbour into another token.
_STICKY = frozenset("\"'$&:")


def _render(text: str, quoted: str) -> str:
    """``text`` with the token replaced by the quoted name where SQL code may hold a name.

    Comments and quoted identifiers are copied as they are (a name there is just text); a string
    literal gets the name escaped as a literal; a dollar-quoted body holding the token is rendered
    the same way, recursively, and re-quoted with a tag that the rendered body does not contain.
    """
    out: list[str] = []
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if text.startswith("--", i):
            stop = text.find("\n", i)
            stop = end if stop < 0 else stop + 1
            out.append(text[i:stop])
        elif text.startswith("/*", i):
            stop = _block_comment_end(text, i)
            out.append(text[i:stop])
        elif char == '"':
            stop = _quoted_end(text, i)
            out.append(text[i:stop])
        elif char == "'":
            stop = _quoted_end(text, i)
            out.append(_render_literal(text, i, stop, quoted))
        elif char == "$" and (tag := _DOLLAR_TAG.match(text, i)):
            close = text.find(tag.group(), tag.end())
            if close < 0:
                raise _Misplaced(f"unterminated {tag.group()} string")
            stop = close + len(tag.group())
            out.append(_render_dollar(tag.group(), text[tag.end():close], quoted))
        elif word := _WORD.match(text, i):
            stop = word.end()
            out.append(word.group())
            prefix = word.group().lower()
            if prefix in ("e", "b", "x", "n") and text.startswith("'", stop):
                # E'' reads backslash escapes, B'', X'' and N'' are no text: none may hold the name.
                literal_end = _quoted_end(text, stop, backslash_escapes=prefix == "e")
                if _TOKEN in text[stop:literal_end]:
                    raise _Misplaced(f"the schema token in a {word.group()}'' string")
                out.append(text[stop:literal_end])
                stop = literal_end
            elif prefix == "u" and text.startswith(("&'", '&"'), stop):
                literal_end = _quoted_end(text, stop + 1)
                if _TOKEN in text[stop:literal_end]:
                    raise _Misplaced("the schema token in a U& string or identifier")
                out.append(text[stop:literal_end])
                stop = literal_end
        elif text.startswith(_TOKEN, i) and (i == 0 or text[i - 1] != ":"):  # "::name" is a cast
            stop = i + len(_TOKEN)
            before = text[i - 1] if i else " "
            after = text[stop] if stop < end else " "
            if before in _STICKY or _WORD.match(before) or after in _STICKY or _WORD.match(after):
                raise _Misplaced(f"the schema token at offset {i} touches {before + after!r}")
            out.append(quoted)
        else:
            # Everything else (operators, punctuation, whitespace, a "::" cast) is copied as it is.
            stop = i + 1
            out.append(char)
        i = stop
    return "".join(out)


def _block_comment_end(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise _Misplaced("unterminated /* comment")


def _quoted_end(text: str, start: int, *, backslash_escapes: bool = False) -> int:
    """Where the quoted token opened by ``text[start]`` ends; a doubled quote is part of it."""
    quote, i = text[start], start + 1
    while i < len(text):
        if backslash_escapes and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            if not text.startswith(quote, i + 1):
                return i + 1
            i += 2
        else:
            i += 1
    raise _Misplaced(f"unterminated {quote} at offset {start}")


def _render_literal(text: str, start: int, stop: int, quoted: str) -> str:
    literal = text[start:stop]
    if _TOKEN not in literal:
        return literal
    value = literal[1:-1].replace("''", "'").replace(_TOKEN, quoted)
    escaped = value.replace("'", "''")
    if "\\" not in value:
        return f"'{escaped}'"
    # Read the same whatever standard_conforming_strings says (also at a function's run time).
    if _continues_a_literal(text, start, stop):
        raise _Misplaced("the schema token in a string literal continued over lines")
    space = " " if start and _WORD.match(text[start - 1]) else ""
    return space + "E'" + escaped.replace("\\", "\\\\") + "'"


def _continues_a_literal(text: str, start: int, stop: int) -> bool:
    # 'a'<newline>'b' is one literal to PostgreSQL, but 'a'<newline>E'b' is an error.
    before = text[:start].rstrip()
    after = text[stop:].lstrip()
    return ("\n" in text[len(before):start] and before.endswith("'")) or (
        "\n" in text[stop:len(text) - len(after)] and after.startswith("'")
    )


def _render_dollar(tag: str, body: str, quoted: str) -> str:
    if _TOKEN not in body:
        return tag + body + tag
    rendered = _render(body, quoted)
    # The body ends at the first occurrence of its tag, so pick one the rendered body lacks.
    candidates = itertools.chain([tag, "$kt$"], (f"$kt_{n}$" for n in itertools.count(1)))
    for candidate in candidates:
        if (rendered + candidate).find(candidate) == len(rendered):
            return candidate + rendered + candidate
    raise AssertionError("unreachable: the tags are endless")


def _migrations_folder() -> Path:
    # Package data, so an installed kongtask migrates without the source tree, from one place.
    return Path(str(resources.files("kongtask._schema") / "migrations"))


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


#: What ``to=`` may say besides a migration number: the newest kongtask knows.
LATEST = "latest"


def resolve_target(to: int | str | None, newest_known: int) -> int:
    """The migration number ``to`` names: ``None`` is the v0.1.0 schema (migration 1), kongtask's
    default; ``"latest"`` the newest kongtask knows; else a number from 1 to that."""
    if to is None:
        return v0_1.LAST_MIGRATION
    if isinstance(to, str) and to.strip().lower() == LATEST:
        return newest_known
    try:
        number = int(to)
    except (TypeError, ValueError):
        number = 0
    if isinstance(to, bool) or not 1 <= number <= newest_known:
        raise ConfigurationError(
            f"cannot migrate to {to!r}: give {LATEST!r} or a migration number from 1 to {newest_known} "
            f"(1 is graphile-worker v0.1.0's schema, {newest_known} its 0.18 schema)"
        )
    return number


@dataclass(frozen=True)
class _Applied:
    """The migrations a database records: the newest, and the newest breaking one."""

    latest: int
    latest_breaking: int
    has_breaking_column: bool


async def _read_applied(cursor: psycopg.AsyncCursor[Any], schema: str, newest_known: int) -> _Applied:
    v01, v018 = v0_1.schema_named(schema), v0_18.schema_named(schema)
    await cursor.execute(v018.migrations_columns, (f"{v01.quoted_schema}.migrations",))
    row = await cursor.fetchone()
    has_column = bool(row and row[0])
    if has_column:
        await cursor.execute(v018.applied_migrations_breaking, ())
        rows = [(number, bool(breaking)) for number, breaking in await cursor.fetchall()]
    else:
        # A table from before the column: the known breaking ones, and any unknown one to be safe.
        await cursor.execute(v018.applied_migrations, ())
        rows = [(number, number in v0_18.BREAKING_MIGRATIONS or number > newest_known)
                for (number,) in await cursor.fetchall()]
    latest = max((number for number, _ in rows), default=0)
    latest_breaking = max((number for number, breaking in rows if breaking), default=0)
    return _Applied(latest, latest_breaking, has_column)


def _check_not_newer(applied: _Applied, schema: str, newest_known: int) -> None:
    if applied.latest_breaking > newest_known:
        raise MigrationError(
            f"database schema {schema!r} is at migration {applied.latest}, which includes breaking "
            f"migration {applied.latest_breaking}, newer than the newest this kongtask knows "
            f"({newest_known}); upgrade kongtask, or use another --schema"
        )
    if applied.latest > newest_known:
        log.warning(
            "database schema %s is at migration %d, newer than the newest this kongtask knows (%d); "
            "the newer ones are not breaking, so kongtask carries on",
            schema, applied.latest, newest_known,
        )


def describe_level(latest: int) -> str:
    """Which schema a database at migration ``latest`` holds, in words."""
    if latest <= v0_1.LAST_MIGRATION:
        return "graphile-worker v0.1.0's schema"
    if latest >= v0_18.LAST_MIGRATION:
        return "graphile-worker's 0.18 schema"
    if latest == v0_18.FIRST_RUNNABLE_MIGRATION:
        return "graphile-worker's 0.17 schema"
    return "a schema between graphile-worker v0.1.0's and 0.18's"


async def migrate_connection(
    conn: psycopg.AsyncConnection[Any], schema: str, *, to: int | str | None = None
) -> list[int]:
    """Brings the database to migration ``to`` (see :func:`resolve_target`; by default the v0.1.0
    schema) over ``conn``, and returns the numbers of the migrations applied.

    A database already past ``to`` is left as it is: kongtask never downgrades. Each migration runs
    in a transaction of its own, under an advisory lock, so many processes starting at once apply
    each exactly once: the number is recorded first, then the migration runs, then
    ``worker:migrate`` is notified, then it commits. A refused database is left untouched.
    """
    queries = v0_1.schema_named(schema)
    migrations = load_migrations()
    newest_known = migrations[-1].number
    target = resolve_target(to, newest_known)
    lock_key = f"kongtask-migrate:{schema}"
    # Plain tuples whatever the connection's row factory (a caller's pool may use dict rows).
    cursor = conn.cursor(row_factory=tuple_row)
    async with conn.transaction():
        await cursor.execute(queries.migration_lock, (lock_key,))
        await cursor.execute(queries.migrations_table, (f"{queries.quoted_schema}.migrations",))
        table = await cursor.fetchone()
        if table is None or table[0] is None:
            log.info("installing the kongtask schema %s", schema)
            await conn.execute(INSTALL_EXTENSIONS)
            await conn.execute(queries.create_schema, ())
            await conn.execute(queries.create_migrations_table, ())
        applied = await _read_applied(cursor, schema, newest_known)
        _check_not_newer(applied, schema, newest_known)
    if applied.latest >= target:
        if applied.latest > target:
            log.info(
                "schema %s is at migration %d (%s); kongtask never downgrades, so it stays there",
                schema, applied.latest, describe_level(applied.latest),
            )
        return []
    done: list[int] = []
    for migration in migrations:
        if applied.latest < migration.number <= target and await _apply(conn, cursor, schema, migration, lock_key):
            done.append(migration.number)
    return done


async def _apply(
    conn: psycopg.AsyncConnection[Any], cursor: psycopg.AsyncCursor[Any], schema: str, migration: Migration,
    lock_key: str,
) -> bool:
    """Applies one migration in a transaction of its own; False when another process already had."""
    queries, modern = v0_1.schema_named(schema), v0_18.schema_named(schema)
    breaking = migration.number in v0_18.BREAKING_MIGRATIONS
    try:
        async with conn.transaction():
            await cursor.execute(queries.migration_lock, (lock_key,))
            await cursor.execute(queries.latest_migration, ())
            row = await cursor.fetchone()
            if row is not None and row[0] >= migration.number:
                return False  # another kongtask applied it while this one waited for the lock
            has_column = migration.number > v0_1.LAST_MIGRATION
            if has_column:
                await cursor.execute(modern.add_breaking_column, ())
                await cursor.execute(modern.mark_breaking, (sorted(v0_18.BREAKING_MIGRATIONS),))
                await cursor.execute(modern.record_migration, (migration.number, breaking))
            else:
                await cursor.execute(queries.record_migration, (migration.number,))
            log.info("applying migration %06d to schema %s", migration.number, schema)
            await conn.execute(migration.for_schema(schema))
            notice = json.dumps({"migrationNumber": migration.number, "breaking": breaking}, separators=(",", ":"))
            await cursor.execute(modern.notify_migrated, (notice,))
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "migrations_pkey":
            raise
        # A migrator without kongtask's lock (a Node graphile-worker) recorded it first.
        log.debug("migration %06d of schema %s was applied by another process", migration.number, schema)
        return False
    except psycopg.DatabaseError as exc:
        if exc.sqlstate != _LOCKED_JOBS:
            raise
        raise MigrationError(
            f"migration {migration.number} cannot run while jobs are locked: stop every worker on schema "
            f"{schema!r} (let running jobs finish), unlock what dead workers left with `kongtask jobs "
            "unlock WORKER_ID`, then migrate again"
        ) from None
    return True


#: The SQLSTATE that migration 11 raises when a job is locked.
_LOCKED_JOBS = "KT011"
