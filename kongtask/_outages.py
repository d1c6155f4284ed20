"""Database trouble, told apart and waited out: outages, busy pools, deadlocks, timeouts.

What the worker, the pool and the start-up retry share: which kind of trouble an error is, one
log line per outage however many callers notice it, and exponential backoff between tries.
"""

from __future__ import annotations

import logging
import time

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout

from ._masking import mask_password
from ._observer import NO_OBSERVER, Observer


def first_line(exc: BaseException) -> str:
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
        return "deadlock", f"PostgreSQL reported a deadlock ({mask_password(first_line(exc))}); retrying"
    if isinstance(exc, psycopg.errors.SerializationFailure):
        return "conflict", f"a serialization conflict ({mask_password(first_line(exc))}); retrying"
    if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)):
        return "timeout", (
            f"a statement was cancelled ({mask_password(first_line(exc))}); retrying. If the database "
            "or kongtask's role sets a low statement_timeout or lock_timeout, raise it for kongtask"
        )
    return "outage", f"lost the connection to PostgreSQL ({mask_password(first_line(exc))}); retrying with backoff"


class OutageLog:
    """Logs database trouble without flooding: an outage once (and its end once), however many
    callers notice it; other trouble (a busy pool, deadlocks, timeouts) at most once a minute each."""

    #: Seconds between two lines about the same kind of trouble, outages aside.
    REPEAT_AFTER_S = 60.0

    def __init__(self, logger: logging.Logger, pool_size: int | None = None, observer: Observer = NO_OBSERVER) -> None:
        self._logger = logger
        self._pool_size = pool_size
        self._observer = observer
        self._since: float | None = None
        self._last_said: dict[str, float] = {}

    def failed(self, exc: BaseException) -> None:
        kind, line = describe_trouble(exc, self._pool_size)
        now = time.monotonic()
        if kind == "outage":
            if self._since is None:
                self._since = now
                self._logger.warning(line)
                self._observer.outage_began()
            return
        last = self._last_said.get(kind)
        if last is None or now - last >= self.REPEAT_AFTER_S:
            self._last_said[kind] = now
            self._logger.warning(line)

    def recovered(self) -> None:
        if self._since is not None:
            self._logger.warning("connection to PostgreSQL restored after %.1fs", time.monotonic() - self._since)
            self._since = None
            self._observer.outage_ended()


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
