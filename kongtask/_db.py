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
from psycopg import conninfo as _conninfo

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


def connection_failed(conninfo: str, exc: BaseException) -> ConnectionFailed:
    """The one-line error for a connection that could not be opened."""
    reason = mask_password(_first_line(exc)) or type(exc).__name__
    text = str(exc)
    # The server answering FATAL (bad password, user or database) or a host name that does not
    # resolve will not fix itself; silence (refused, no socket, timeout) may be a server starting.
    refused_by_server = "FATAL:" in text or "failed to resolve host" in text or "could not translate host" in text
    return ConnectionFailed(
        f"cannot connect to PostgreSQL at {describe_target(conninfo)}: {reason} "
        "(check DATABASE_URL or --connection, and that the server is running)",
        transient=not refused_by_server,
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


class OutageLog:
    """Logs a lost database once, and its recovery once, however many callers notice them."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning(
                "lost the connection to PostgreSQL (%s); retrying with backoff", mask_password(_first_line(exc))
            )

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
