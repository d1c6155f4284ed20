"""Small helpers the tests share: URLs, rows and jobs through real connections, waiting with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import make_conninfo

import kongtask

T = TypeVar("T")


def url_with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at another database; URLs stay URLs (Node clients need one)."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + dbname))
    return make_conninfo(url, dbname=dbname)


def query_rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """The rows of one statement, run on a connection of its own (each statement commits)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


async def add_job_to(url: str, identifier: str, payload: Any = None, **options: Any) -> kongtask.Job:
    """Adds a job through the library, as application code does."""
    return await kongtask.add_job(identifier, payload, connection_string=url, **options)


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> T:
    """Polls ``condition`` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], T | Awaitable[T]], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """The async twin of :func:`wait_until`; ``condition`` may return a value or an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
