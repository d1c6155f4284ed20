"""Connections: opening them with readable errors, borrowing them, finding the database to use."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import conninfo as _conninfo

from ._masking import mask_password, secret_spans
from ._outages import first_line
from .errors import ConfigurationError, ConnectionFailed

#: How long opening a connection may take before we call the server unreachable. libpq waits
#: forever by default, which turns a typo in a host name into a hang.
CONNECT_TIMEOUT_S = 5

def connection_kwargs(conninfo: str) -> dict[str, Any]:
    """Checks ``conninfo`` and returns the keyword arguments every kongtask connection uses."""
    try:
        params = _conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the part it choked on, which may be the password itself.
        reason = first_line(exc)
        for start, end in secret_spans(conninfo, len(conninfo)):
            reason = reason.replace(f'"{conninfo[start:end]}"', '"***"')
        raise ConfigurationError(
            f"invalid connection string {mask_password(conninfo)!r}: {mask_password(reason)}; "
            f"expected a URL like postgres://HOST/DBNAME with USER:PASSWORD@ before the host, "
            f"{_PERCENT_ENCODE}"
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
    hosts = str(params.get("host") or "localhost").split(",")
    ports = str(params.get("port") or "").split(",")
    if len(ports) != len(hosts):
        ports = ports[:1] * len(hosts)  # libpq's rule: one port for every host
    # A failover string names several servers: each with its own port, in libpq's order.
    where = ",".join(f"{host or 'localhost'}:{port or '5432'}" for host, port in zip(hosts, ports, strict=True))
    dbname = str(params.get("dbname") or params.get("user") or "")
    return _hide_misplaced_userinfo(f"{where}/{dbname}", params)


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


_PERCENT_ENCODE = 'with special characters in the password percent-encoded ("@" as %40, space as %20, "/" as %2F)'


def connection_failed(conninfo: str, exc: BaseException) -> ConnectionFailed:
    """The one-line error for a connection that could not be opened."""
    reason = mask_password(first_line(exc)) or type(exc).__name__
    hint = "check DATABASE_URL or --connection, and that the server is running"
    try:
        params = _conninfo.conninfo_to_dict(conninfo)
        reason = _hide_misplaced_userinfo(reason, params)
        if any("@" in str(params.get(key) or "") for key in ("host", "dbname", "port")):
            # An unencoded "@" in the password: libpq took the rest of the password for the host.
            hint = f"the URL has more than one '@': write it {_PERCENT_ENCODE}"
    except psycopg.ProgrammingError:
        pass
    return ConnectionFailed(
        f"cannot connect to PostgreSQL at {describe_target(conninfo)}: {reason} ({hint})",
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
