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

# The password is whatever lies between "user:" and the last "@" of the URL: a password may hold
# unencoded "/", "#", "?" or "@" that libpq still accepts.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<secret>\S*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\b(?:ssl)?password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.I)


def mask_password(text: str) -> str:
    """``text`` with any password in a connection URL or ``password=`` pair replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)


def connection_kwargs(conninfo: str) -> dict[str, Any]:
    """Checks ``conninfo`` and returns the keyword arguments every kongtask connection uses."""
    try:
        params = _conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"invalid connection string {mask_password(conninfo)!r}: {_first_line(exc)}; "
            "expected a URL like postgres://user:password@host:5432/dbname"
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
    return f"{host}:{port}/{dbname}"


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
    given = [n for n, v in (("connection_string", connection_string), ("pool", pool), ("connection", connection)) if v is not None]
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
