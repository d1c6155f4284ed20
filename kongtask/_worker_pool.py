"""Many workers in one process: the shared pool, LISTEN/NOTIFY wake-ups, signals and shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import time
from collections.abc import Generator
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from . import _connections
from ._checkouts import CHECKOUT_TIMEOUT_S, CONNECTION_ERRORS, Checkouts
from ._cron_scheduler import CronScheduler
from ._outages import Backoff, OutageLog
from ._resources import SharedResources
from ._schema.v0_18 import MIGRATE_CHANNEL
from ._worker import Worker, WorkerConfig, WorkerTask, make_worker_id
from .errors import ConnectionFailed, SchemaChanged

log = logging.getLogger("kongtask.pool")

#: After a forced shutdown, how long releases may keep retrying before jobs are left to expire.
_FORCED_RELEASE_GRACE_S = 5.0

#: How often a running pool says which due jobs wait for tasks it does not have (seconds).
UNKNOWN_TASKS_REPORT_INTERVAL_S = 60.0


#: The signals a Runner made with ``handle_signals`` takes over.
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How many running Runners of this process hold them.
_signal_holders = 0
_reset_registered = False


def _reset_signals_in_child() -> None:
    """In a process forked while a Runner held the signals: give them back to the process.

    A forked child inherits the event loop's signal wake-up socket. Its SIGTERM (sent by
    ``Pool.terminate()``, say) would be written into that socket and read by the parent's loop
    as the worker's own SIGTERM; and the loop's handler would keep the child from dying of it.
    """
    global _signal_holders
    if _signal_holders == 0:
        return
    _signal_holders = 0
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what a new Python process has
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _hold_signals() -> None:
    global _signal_holders, _reset_registered
    if not _reset_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reset_signals_in_child)
        _reset_registered = True
    _signal_holders += 1


def _release_signals() -> None:
    global _signal_holders
    _signal_holders = max(0, _signal_holders - 1)


class Runner:
    """A running pool of workers.

    ``await runner.stop()`` stops it gracefully (running jobs finish within ``shutdown_timeout``,
    then are failed so they are retried); ``await runner`` (or ``await runner.wait()``) waits until
    it has stopped. ``runner.worker_ids`` lists the ids its jobs are locked under (``locked_by``):
    one per runner, shared by its workers.
    """

    def __init__(
        self,
        config: WorkerConfig,
        pool: AsyncConnectionPool,
        *,
        concurrency: int,
        once: bool,
        shutdown_timeout: float,
        heartbeat_interval: float,
        owns_pool: bool,
        handle_signals: bool,
        cron: CronScheduler | None = None,
    ) -> None:
        self._config = config
        self._pool = pool
        self._owns_pool = owns_pool
        self._once = once
        self._shutdown_timeout = shutdown_timeout
        self._heartbeat_interval = heartbeat_interval
        self._handle_signals = handle_signals
        self._loop = asyncio.get_running_loop()
        self._resources = SharedResources(pool, config.schema, self._loop, concurrency)
        self._outage = OutageLog(log, pool_size=pool.max_size, observer=config.observer)
        self._checkouts = Checkouts(
            self, self._resources, config.database, lock_id=make_worker_id(), task_names=config.task_names,
            job_expiry_s=config.job_expiry.total_seconds(), batch_size=config.batch_size, once=once,
            forbidden_flags=config.forbidden_flags,
            tolerant=config.decode_per_statement,
        )
        self._workers = [Worker(config, self._resources, self._checkouts, n) for n in range(1, concurrency + 1)]
        self._stopping = False
        self._forced_at: float | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._signals_seen = 0
        self._crash: BaseException | None = None
        if handle_signals:
            # Before any worker starts: off the main thread this raises, and nothing is running yet.
            for sig in _HANDLED_SIGNALS:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            _hold_signals()
        self._worker_tasks = [WorkerTask(w.run(), loop=self._loop) for w in self._workers]
        for task in self._worker_tasks:
            task.add_done_callback(self._on_worker_done)
        self._fetcher = asyncio.ensure_future(self._checkouts.run_fetcher(config.poll_interval))
        self._flusher = asyncio.ensure_future(self._checkouts.run_flusher())
        self._listener = None if once else asyncio.ensure_future(self._listen())
        self._heartbeat = asyncio.ensure_future(self._beat())
        self._expirer = (
            asyncio.ensure_future(self._expire_locks()) if config.database.expire_locks is not None else None
        )
        self._reporter = None if once else asyncio.ensure_future(self._report_jobs_without_task())
        self._cron = cron
        self._cron_task = None if cron is None else asyncio.ensure_future(cron.run())
        self._done = asyncio.ensure_future(self._supervise())

    # --- what the checkouts and workers ask of the pool -----------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def outage(self) -> OutageLog:
        return self._outage

    def release_abandoned(self) -> bool:
        return self._forced_at is not None and time.monotonic() - self._forced_at > _FORCED_RELEASE_GRACE_S

    # --- public surface ----------------------------------------------------------------------------

    @property
    def schema_generation(self) -> str:
        """Which graphile-worker schema the database holds, as read at start: ``"v0.1.0"`` or ``"0.18"``."""
        return self._config.database.generation

    @property
    def worker_ids(self) -> list[str]:
        return [self._checkouts.lock_id]

    async def stop(self) -> None:
        """Stops fetching, lets running jobs finish within the shutdown timeout, and waits."""
        self._begin_stop("stop()")
        await self.wait()

    async def wait(self) -> None:
        """Waits until every worker has stopped and the pool is closed.

        Raises what stopped a worker, should one have ended on an unexpected error.
        """
        await asyncio.shield(self._done)

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    # --- internals ----------------------------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            running = sum(w.current_job is not None for w in self._workers)
            if running:
                log.warning(
                    "%s received: finishing %d running job(s) (up to %gs; send it again to stop now)",
                    sig.name, running, self._shutdown_timeout,
                )
            else:
                log.warning("%s received: no job is running, stopping", sig.name)
            self._begin_stop(sig.name)
        else:
            log.warning("%s received again: stopping now", sig.name)
            self._force(sig.name)

    def _begin_stop(self, reason: str) -> None:
        if self._cron is not None:
            self._cron.stop()  # no new cron jobs from a pool that is stopping, as upstream
        if self._stop_task is None:
            self._stopping = True
            self._checkouts.stop()
            self._stop_task = asyncio.ensure_future(self._graceful_stop(reason))

    async def _graceful_stop(self, reason: str) -> None:
        # Running jobs finish and every release lands within the timeout, or the stop is forced.
        _, pending = await asyncio.wait([*self._worker_tasks, self._flusher], timeout=self._shutdown_timeout)
        if pending:
            running = sum(w.current_job is not None for w in self._workers)
            log.warning("shutdown timeout (%gs) passed with %d job(s) running", self._shutdown_timeout, running)
            self._force(reason)

    def _force(self, reason: str) -> None:
        self._stopping = True
        self._checkouts.stop()
        if self._forced_at is None:
            self._forced_at = time.monotonic()
        for worker in self._workers:
            worker.abort(f"Forced worker shutdown due to {reason}")

    def _on_worker_done(self, task: asyncio.Future[None]) -> None:
        # A worker only ends on its own through a bug: stop the others (their jobs finish or are
        # failed and retried) rather than run on quietly with fewer workers.
        if task.cancelled():
            # Cancelled from outside (kongtask never cancels its workers): stop the rest too, and
            # say so in wait(), so that a process supervisor restarts a worker that stopped early.
            if not self._stopping and self._crash is None:
                self._crash = RuntimeError("a worker was cancelled from outside kongtask")
                log.error("a worker was cancelled from outside kongtask; stopping the others")
                self._begin_stop("cancellation")
            return
        if task.exception() is None or self._crash is not None:
            return
        self._crash = task.exception()
        log.error("a worker stopped on an unexpected error; stopping the others", exc_info=self._crash)
        self._begin_stop("a worker crash")

    async def _supervise(self) -> None:
        try:
            await asyncio.gather(*self._worker_tasks, return_exceptions=True)
            # Every worker is done (a stop, or once with nothing left): give back what was fetched
            # but not started, and release everything the workers handed back.
            self._stopping = True
            self._checkouts.stop()
            await asyncio.gather(self._fetcher, return_exceptions=True)
            await self._checkouts.close()
            await asyncio.gather(self._flusher, return_exceptions=True)
            if self._cron is not None and self._cron_task is not None:
                # Let it finish the statement under way (its registration at start, say).
                self._cron.stop()
                await asyncio.wait([self._cron_task], timeout=CHECKOUT_TIMEOUT_S)
            if self._crash is not None:
                raise self._crash
        finally:
            self._stopping = True
            if self._stop_task is not None and not self._stop_task.done():
                self._stop_task.cancel()
            tasks = (self._fetcher, self._flusher, self._listener, self._heartbeat, self._reporter, self._expirer,
                     self._cron_task)
            background = [t for t in tasks if t is not None]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._handle_signals:
                for sig in _HANDLED_SIGNALS:
                    self._loop.remove_signal_handler(sig)
                _release_signals()
            await asyncio.to_thread(self._resources.close_sync_pool)
            await self._config.observer.stopped()
            if self._owns_pool:
                await self._pool.close()

    async def _listen(self) -> None:
        """Keeps a dedicated connection listening for new jobs, reconnecting when it drops."""
        listen = self._config.database.listen
        conninfo, kwargs = _connections.pool_conninfo(self._pool)
        backoff = Backoff()
        while not self._stopping:
            try:
                conn = await _connections.connect(conninfo, **kwargs)
                async with conn:
                    await conn.execute(listen)
                    self._outage.recovered()
                    backoff.reset()
                    # Anything added while we were not listening is waiting now.
                    self._checkouts.wake()
                    async for notify in conn.notifies():
                        if notify.channel == MIGRATE_CHANNEL:
                            self._on_migration(notify.payload)
                        else:
                            log.debug("new job notified")
                            self._checkouts.wake()
            except (*CONNECTION_ERRORS, ConnectionFailed) as exc:
                self._outage.failed(exc)
            if not self._stopping:
                await asyncio.sleep(backoff.next())

    def _on_migration(self, payload: str) -> None:
        """Another process migrated the database: after a breaking migration this pool's statements
        may no longer fit the schema, so it stops gracefully, as upstream's pools do, and says why.
        A restart runs on the new schema."""
        try:
            migration = json.loads(payload)
            number, breaking = int(migration["migrationNumber"]), bool(migration["breaking"])
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a worker:migrate notification that is not graphile-worker's: %.200r", payload)
            return
        if not breaking:
            log.info("another process applied migration %d (not breaking); carrying on", number)
            return
        message = (
            f"another process applied breaking migration {number} to schema {self._config.schema!r}; this worker "
            "stopped so that it does not run statements of the old schema: start it again to run on the new one"
        )
        if self._crash is None:
            self._crash = SchemaChanged(message)
        log.warning("%s (finishing running jobs first)", message)
        self._begin_stop("a breaking migration")

    async def _report_jobs_without_task(self) -> None:
        """Says, at most once a minute, which due jobs wait for tasks this pool does not have.

        Quiet while there are none: a job added for a task nobody has must not wait in silence,
        but in a fleet whose workers have different tasks, an empty report is no news.
        """
        query = self._config.database.due_jobs_without_task
        names = list(self._config.task_names)
        while True:
            try:
                async with self._pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    cursor = conn.cursor(row_factory=tuple_row)
                    await cursor.execute(query, (names,))
                    rows = await cursor.fetchall()
            except (*CONNECTION_ERRORS, psycopg.Error):
                rows = []  # the workers report outages; this report waits for the next round
            if rows:
                total = sum(int(row[1]) for row in rows)
                shown = ", ".join(f"{row[0]} ({row[1]})" for row in rows)
                log.warning(
                    "%d due job(s) wait for tasks this worker does not have: %s%s; a worker with those tasks "
                    "runs them (see `kongtask jobs list --state unknown-task`)",
                    total, shown, " and more" if len(rows) == 10 else "",
                )
            await asyncio.sleep(UNKNOWN_TASKS_REPORT_INTERVAL_S)

    async def _beat(self) -> None:
        """Refreshes ``locked_at`` of the queue of every job held (running, buffered, being released),
        one statement per beat.

        On a connection of its own: tasks may hold every pooled connection, and a heartbeat that
        waits for one lets a live job's lock expire.
        """
        heartbeat = self._config.database.heartbeat
        conninfo, kwargs = _connections.pool_conninfo(self._pool)
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                await asyncio.sleep(self._heartbeat_interval)
                held = self._checkouts.held
                if not held:
                    continue
                params = {
                    "worker_id": self._checkouts.lock_id,
                    "job_ids": [job.id for job in held],
                    "queue_names": sorted({job.queue_name for job in held if job.queue_name is not None}),
                }
                try:
                    if conn is None or conn.closed:
                        conn = await _connections.connect(conninfo, **kwargs)
                    await conn.execute(heartbeat, params)
                except (psycopg.Error, ConnectionFailed) as exc:
                    self._outage.failed(exc)
                    if conn is not None:
                        await conn.close()
                    conn = None
        finally:
            if conn is not None:
                await conn.close()

    async def _expire_locks(self) -> None:
        """Unlocks jobs and queues whose lock is older than the job expiry: a dead pool's, on a
        schema where fetching does not take them over (0.18). About twice per expiry, at a random
        moment, so that the pools of a fleet do not all sweep at once."""
        statement = self._config.database.expire_locks
        assert statement is not None
        expiry_s = self._config.job_expiry.total_seconds()
        params = {"job_expiry": f"{expiry_s} seconds"}
        while True:
            await asyncio.sleep(expiry_s / 2 * random.uniform(0.8, 1.2))
            try:
                async with self._pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    cursor = conn.cursor(row_factory=tuple_row)
                    await cursor.execute(statement, params)
                    row = await cursor.fetchone()
            except (*CONNECTION_ERRORS, psycopg.Error):
                continue  # the workers report outages; the next sweep tries again
            if row and (row[0] or row[1]):
                log.warning(
                    "unlocked %d job(s) and %d queue(s) locked for more than %gs: their worker is gone, so they "
                    "run again", row[0], row[1], expiry_s,
                )
