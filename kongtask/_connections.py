"""Connections: opening them with readable errors, and keeping passwords out of messages."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import conninfo as _conninfo
from psycopg_pool import PoolTimeout

from .errors import ConfigurationError, ConnectionFailed

#: How long opening a connection may take before we call the server unreachable. libpq waits
#: forever by default, which turns a typo in a host name into a hang.
CONNECT_TIMEOUT_S = 5

# Masking runs on every log line, in the event loop's thread, so its cost must stay linear in the
# text whatever the text holds. It looks only where a secret can start (after "//" or ":/" and a
# user name, or after "password="), and every pattern either has bounded repetition or consumes
# what it scans, so each character is examined a bounded number of times.

#: Text beyond this many characters is not shown: a log line that long is not read, only stored.
MASK_SCAN_LIMIT = 1_000_000
#: How far after "user:" a URL's "@" may be: the password may hold unencoded "@", "/" or spaces.
_URL_SECRET_MAX = 2048

# "scheme://user:", also malformed as "scheme//user:", "scheme:/user:" or "scheme:///user:".
_URL_USER = re.compile(r"(?::/{1,3}|/{2,3})[^\s:/?#@]{0,256}:")
_SPACE = re.compile(r"\s")
_WORD_WITH_AT = re.compile(r"\s+[^\s@]*@")
# "password=", "PGPASSWORD = ", "sslpassword=" ...
_PASSWORD_KEY = re.compile(r"password\s{0,32}=\s{0,32}", re.IGNORECASE)
# A quoted value runs to its closing quote, else to the end of the line; a bare one to a space.
# A value masked already stays "***", so masking a masked text again changes nothing.
_PASSWORD_VALUE = re.compile(r"""\*\*\*(?=['"\s]|$)|'[^'\\\n]*(?:\\.[^'\\\n]*)*'?|"[^"\\\n]*(?:\\.[^"\\\n]*)*"?|\S+""")


def mask_password(text: str) -> str:
    """``text`` with whatever looks like a password in a connection string replaced by ``***``.

    Also in strings that do not parse: ``user:secret@host`` after something URL-like (the secret
    may hold spaces or "@") and ``password=`` values. Beyond :data:`MASK_SCAN_LIMIT` characters
    the text is cut, with a note saying how much.
    """
    limit = min(len(text), MASK_SCAN_LIMIT)
    spans = _secret_spans(text, limit)
    if not spans and limit == len(text):
        return text
    pieces: list[str] = []
    shown = 0
    for start, end in spans:
        if start < shown:  # overlaps a secret already masked
            shown = max(shown, end)
            continue
        pieces += (text[shown:start], "***")
        shown = end
    cut = max(limit, shown)
    pieces.append(text[shown:cut])
    if cut < len(text):
        pieces.append(f" [... {len(text) - cut} more characters not shown]")
    return "".join(pieces)


def _secret_spans(text: str, limit: int) -> list[tuple[int, int]]:
    """Where the secrets starting before ``limit`` are, in order; they may overlap."""
    return sorted([*_url_secrets(text, limit), *_keyword_secrets(text, limit)])


def _url_secrets(text: str, limit: int) -> Iterator[tuple[int, int]]:
    """The spans from after ``user:`` to the "@" before the host.

    A password may hold unencoded "@" and spaces, so the secret runs to the last "@" of the first
    word after it that holds one, and on through each next word that holds an "@" ("u:p w@h/db",
    "u:p@ss@h/db", "u:p@ss w@h/db"), on the same line and within :data:`_URL_SECRET_MAX`
    characters.
    """
    end = len(text)
    # Caches: no scan below re-reads text an earlier one has passed.
    next_at = next_newline = -1
    pos = 0
    while pos < limit:
        head = _URL_USER.search(text, pos, limit + 262)
        if head is None or head.start() >= limit:
            return
        start = head.end()
        if next_at < start:
            next_at = text.find("@", start)
            if next_at < 0:
                return
        if next_newline < start:
            next_newline = text.find("\n", start)
            if next_newline < 0:
                next_newline = end
        window_end = min(next_newline, start + _URL_SECRET_MAX)
        if next_at >= window_end:
            pos = start - 1  # that ":" may begin the next "://"
            continue
        at = next_at
        while True:
            space = _SPACE.search(text, at, window_end)
            at = text.rfind("@", at, window_end if space is None else space.start())
            more = None if space is None else _WORD_WITH_AT.match(text, space.start(), window_end)
            if more is None:
                break
            at = more.end() - 1
        yield start, at
        pos = at


def _keyword_secrets(text: str, limit: int) -> Iterator[tuple[int, int]]:
    """The spans of the values of ``password=`` pairs."""
    pos = 0
    while pos < limit:
        key = _PASSWORD_KEY.search(text, pos, limit + 80)
        if key is None or key.start() >= limit:
            return
        value = _PASSWORD_VALUE.match(text, key.end())
        if value is None or value.end() == value.start():
            pos = key.end()
            continue
        yield value.start(), value.end()
        pos = value.end()


def connection_kwargs(conninfo: str) -> dict[str, Any]:
    """Checks ``conninfo`` and returns the keyword arguments every kongtask connection uses."""
    try:
        params = _conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the part it choked on, which may be the password itself.
        reason = _first_line(exc)
        for start, end in _secret_spans(conninfo, len(conninfo)):
            reason = reason.replace(f'"{conninfo[start:end]}"', '"***"')
        raise ConfigurationError(
            f"invalid connection string {mask_password(conninfo)!r}: {mask_password(reason)}; "
            "expected a URL like postgres://user:password@host:5432/dbname, with special characters "
            "in the password percent-encoded (e.g. \"@\" as %40, space as %20, \"/\" as %2F)"
        ) from None
    kwargs: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in params:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
    return kwargs


def describe_target(conninfo: str) -> str:
    """Where ``conninfo`` points, for messages: ``host:port/dbname``, never the password."""
    try:
        params = _conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "")
    return _hide_misplaced_userinfo(f"{host}:{port}/{dbname}", params)


def _hide_misplaced_userinfo(text: str, params: dict[str, Any]) -> str:
    """``text`` without the piece of a password that libpq took for a host or a database name.

    An unencoded "@" in a URL's password ("postgresql://u:p@ss@h/db") gives host "ss@h", and
    "postgres:///u:pw@h" gives database "u:pw@h".
    """
    for name in ("host", "dbname", "user"):
        value = str(params.get(name) or "")
        if "@" in value:
            text = text.replace(value, "***@" + value.rsplit("@", 1)[1])
    return text


#: What a server says at connect time when it means "not now" rather than "never": it is starting,
#: shutting down or recovering, or has no connection slot free. Worth waiting for, like silence.
_TRANSIENT_REFUSALS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
    "too many connections for",
    "terminating connection due to administrator command",
)


def refusal_is_transient(text: str) -> bool:
    """Whether a failed connection attempt, by its message, may succeed if tried again later.

    Silence (refused, no socket, timeout) and the replies in :data:`_TRANSIENT_REFUSALS` may end by
    themselves; any other server reply (a wrong password, user or database) and a host name that
    does not resolve will not.
    """
    if any(reply in text for reply in _TRANSIENT_REFUSALS):
        return True
    return not ("FATAL:" in text or "failed to resolve host" in text or "could not translate host" in text)


def connection_failed(conninfo: str, exc: BaseException) -> ConnectionFailed:
    """The one-line error for a connection that could not be opened."""
    reason = mask_password(_first_line(exc)) or type(exc).__name__
    try:
        reason = _hide_misplaced_userinfo(reason, _conninfo.conninfo_to_dict(conninfo))
    except psycopg.ProgrammingError:
        pass
    return ConnectionFailed(
        f"cannot connect to PostgreSQL at {describe_target(conninfo)}: {reason} "
        "(check DATABASE_URL or --connection, and that the server is running)",
        transient=refusal_is_transient(str(exc)),
    )


async def connect(conninfo: str, **overrides: Any) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection, or :class:`ConnectionFailed` with a readable reason."""
    kwargs = connection_kwargs(conninfo) | overrides
    try:
        return await psycopg.AsyncConnection.connect(conninfo, **kwargs)
    except psycopg.OperationalError as exc:
        raise connection_failed(conninfo, exc) from None


def connect_sync(conninfo: str, **overrides: Any) -> psycopg.Connection[Any]:
    """The synchronous twin of :func:`connect`."""
    kwargs = connection_kwargs(conninfo) | overrides
    try:
        return psycopg.Connection.connect(conninfo, **kwargs)
    except psycopg.OperationalError as exc:
        raise connection_failed(conninfo, exc) from None


def pool_conninfo(pool: Any) -> tuple[str, dict[str, Any]]:
    """The connection string and arguments a pool opens its connections with.

    kongtask opens a few connections of its own beside a pool (the LISTEN connection, blocking
    connections for sync tasks), so it needs them as plain values.
    """
    conninfo, kwargs = pool.conninfo, pool.kwargs or {}
    if not isinstance(conninfo, str) or not isinstance(kwargs, dict):
        raise ConfigurationError("kongtask needs a pool whose conninfo and kwargs are plain values, not callables")
    return conninfo, kwargs


def conninfo_or_environment(connection_string: str | None) -> str:
    """``connection_string``, else ``DATABASE_URL``, else a clear error."""
    conninfo = connection_string or os.environ.get("DATABASE_URL")
    if not conninfo:
        raise ConfigurationError("no database given: pass connection_string= or pool=, or set DATABASE_URL")
    return conninfo


def _check_one_target(connection_string: str | None, pool: Any, connection: Any) -> None:
    targets = (("connection_string", connection_string), ("pool", pool), ("connection", connection))
    given = [name for name, value in targets if value is not None]
    if len(given) > 1:
        raise ConfigurationError(f"give one of connection_string, pool or connection, not {' and '.join(given)}")


@asynccontextmanager
async def borrow(
    connection_string: str | None = None,
    pool: Any = None,
    connection: psycopg.AsyncConnection[Any] | None = None,
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection for one piece of work: the caller's, one from its pool, or a new one.

    A new one goes to ``connection_string``, else ``DATABASE_URL``, and is closed afterwards.
    """
    _check_one_target(connection_string, pool, connection)
    if connection is not None:
        yield connection
    elif pool is not None:
        async with pool.connection() as conn:
            yield conn
    else:
        async with await connect(conninfo_or_environment(connection_string)) as conn:
            yield conn


@contextmanager
def borrow_sync(
    connection_string: str | None = None,
    pool: Any = None,
    connection: psycopg.Connection[Any] | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """The blocking twin of :func:`borrow`."""
    _check_one_target(connection_string, pool, connection)
    if connection is not None:
        yield connection
    elif pool is not None:
        with pool.connection() as conn:
            yield conn
    else:
        with connect_sync(conninfo_or_environment(connection_string)) as conn:
            yield conn


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else ""


def describe_trouble(exc: BaseException, pool_size: int | None = None) -> tuple[str, str]:
    """What went wrong with a statement the worker retries: ``(kind, one line for the log)``.

    Only ``"outage"`` means the server is out of reach; the others are the database answering, or
    kongtask's own pool running dry, and each says what a user can change.
    """
    if isinstance(exc, PoolTimeout):
        held = f"all {pool_size} pooled connections" if pool_size else "every pooled connection"
        return "pool", (
            f"{held} stayed busy, so kongtask waited in vain for one: tasks are holding them "
            "(helpers.with_pg_client, long helpers.query calls); kongtask keeps retrying. Hold "
            "connections for shorter in tasks, or give such tasks a pool of their own"
        )
    if isinstance(exc, psycopg.errors.DeadlockDetected):
        return "deadlock", f"PostgreSQL reported a deadlock ({mask_password(_first_line(exc))}); retrying"
    if isinstance(exc, psycopg.errors.SerializationFailure):
        return "conflict", f"a serialization conflict ({mask_password(_first_line(exc))}); retrying"
    if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)):
        return "timeout", (
            f"a statement was cancelled ({mask_password(_first_line(exc))}); retrying. If the database "
            "or kongtask's role sets a low statement_timeout or lock_timeout, raise it for kongtask"
        )
    return "outage", f"lost the connection to PostgreSQL ({mask_password(_first_line(exc))}); retrying with backoff"


class OutageLog:
    """Logs database trouble without flooding: an outage once (and its end once), however many
    callers notice it; other trouble (a busy pool, deadlocks, timeouts) at most once a minute each."""

    #: Seconds between two lines about the same kind of trouble, outages aside.
    REPEAT_AFTER_S = 60.0

    def __init__(self, logger: logging.Logger, pool_size: int | None = None) -> None:
        self._logger = logger
        self._pool_size = pool_size
        self._since: float | None = None
        self._last_said: dict[str, float] = {}

    def failed(self, exc: BaseException) -> None:
        kind, line = describe_trouble(exc, self._pool_size)
        now = time.monotonic()
        if kind == "outage":
            if self._since is None:
                self._since = now
                self._logger.warning(line)
            return
        last = self._last_said.get(kind)
        if last is None or now - last >= self.REPEAT_AFTER_S:
            self._last_said[kind] = now
            self._logger.warning(line)

    def recovered(self) -> None:
        if self._since is not None:
            self._logger.warning("connection to PostgreSQL restored after %.1fs", time.monotonic() - self._since)
            self._since = None


class Backoff:
    """Exponential delays between retries: 0.1 s doubling to ``ceiling``."""

    def __init__(self, first: float = 0.1, ceiling: float = 5.0) -> None:
        self._first = first
        self._ceiling = ceiling
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._ceiling)
        return delay

    def reset(self) -> None:
        self._next = self._first
