"""What every job of one run shares: the pool, the schema, the event loop, and a sync pool on demand."""

from __future__ import annotations

import asyncio
import threading

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ._connections import pool_conninfo


class SharedResources:
    """What every job of one run shares: the pool, the schema and the event loop."""

    def __init__(
        self, pool: AsyncConnectionPool, schema: str, loop: asyncio.AbstractEventLoop, concurrency: int = 1
    ) -> None:
        self.pool = pool
        self.concurrency = concurrency
        self.schema = schema
        self.loop = loop
        self._sync_pool: ConnectionPool | None = None
        self._sync_pool_lock = threading.Lock()

    def sync_pool(self) -> ConnectionPool:
        """A pool of blocking connections for sync tasks, opened the first time one asks."""
        with self._sync_pool_lock:
            if self._sync_pool is None:
                conninfo, kwargs = pool_conninfo(self.pool)
                self._sync_pool = ConnectionPool(
                    conninfo, kwargs=kwargs, min_size=0, max_size=max(1, self.concurrency), open=True
                )
            return self._sync_pool

    def close_sync_pool(self) -> None:
        with self._sync_pool_lock:
            if self._sync_pool is not None:
                self._sync_pool.close()
                self._sync_pool = None
