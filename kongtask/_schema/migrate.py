"""Brings a database to the newest schema kongtask knows, safely under concurrency.

The migrations are the numbered files ``migrations/NNNNNN.sql`` beside this module. Each is applied once, in order, and
recorded in ``<schema>.migrations``; a database already migrated by graphile-worker is accepted as
it is, because the same numbers mean the same schema.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from ..errors import MigrationError
from .generation import MIGRATION_SCHEMA_TOKEN
from .v0_1 import INSTALL_EXTENSIONS, schema_named

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


async def migrate_connection(conn: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    """Applies the pending migrations over ``conn`` and returns their numbers.

    Everything happens in one transaction under an advisory lock, so many processes starting at
    once apply each migration exactly once, and a refused database is left untouched.
    """
    queries = schema_named(schema)
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
            await conn.execute(queries.create_schema, ())
            await conn.execute(queries.create_migrations_table, ())
            latest = 0
        else:
            await cursor.execute(queries.latest_migration, ())
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
