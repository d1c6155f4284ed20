"""Prometheus metrics of one running pool: jobs run and how long they took, the database's jobs by
state, the worker itself, and its outages.

:class:`Metrics` is the workers' :class:`~kongtask._observer.Observer` when metrics are on. Its
instruments live in a registry of its own, never prometheus_client's global one, so two runners in
one process (tests, or an app that runs two) keep their numbers apart. :mod:`kongtask._probes`
serves the registry on ``/metrics``.

The hooks run on the event loop twice per job and count in plain numbers, under one lock; a scrape
turns them into Prometheus families. The ``kongtask_jobs`` gauge is the database's, not this
process's: it is counted by ``job_gauges`` when a scrape asks for it, at most every
:data:`JOB_COUNTS_EVERY_S` (and less often when counting takes long), whatever the scrape rate.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ._checkouts import CHECKOUT_TIMEOUT_S
from ._job import Job
from ._observer import Observer
from ._schema import DatabaseSchema

log = logging.getLogger("kongtask.metrics")

#: Task durations, in seconds: quick jobs (ms) to long ones (an hour).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: From a job's run_at to its start, in seconds: a worker that keeps up (ms) to a backlog (hours).
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)

#: The states of the kongtask_jobs gauge; every job is in exactly one.
JOB_STATES = ("due", "scheduled", "locked", "dead")

#: The jobs are counted at most this often (seconds), however often Prometheus scrapes.
JOB_COUNTS_EVERY_S = 15.0
#: ... and, when counting takes long (a huge table), at most this share of the time: a count of
#: 2 s waits 40 s for the next.
JOB_COUNTS_SHARE = 0.05
#: A count still running after this is cancelled (in the server too); the gauge is left out.
JOB_COUNTS_TIMEOUT_S = 10.0
#: How long a scrape waits for a count it started; past that it gets the previous one, if any,
#: and the count carries on for the next scrape.
JOB_COUNTS_WAIT_S = 5.0


class _TaskFigures:
    """One task's counts and sums, plain numbers: a prometheus_client counter or histogram takes a
    lock of its own per update, and the six a job needs took 9 µs a job where these, updated under
    one lock and read by :meth:`Metrics.collect`, take 3 µs (measured side by side)."""

    __slots__ = ("completed", "duration_sum", "durations", "failed", "lag_sum", "lags", "permanently_failed",
                 "started")

    def __init__(self) -> None:
        self.started = self.completed = self.failed = self.permanently_failed = 0
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.duration_sum = 0.0
        self.lags = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0

    def copy(self) -> _TaskFigures:
        twin = _TaskFigures()
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(twin, name, list(value) if isinstance(value, list) else value)
        return twin


class Metrics(Observer):
    """The instruments of one runner, in a registry of its own (:attr:`registry`).

    The job figures are counted by the hooks in plain numbers and turned into Prometheus families
    when scraped (:meth:`collect`); the rest are prometheus_client's own instruments.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._lock = threading.Lock()
        self._tasks: dict[str, _TaskFigures] = {}
        registry.register(self)
        self._outages = Counter(
            "kongtask_database_outages", "Times this worker lost the database.", registry=registry)
        self._reconnects = Counter(
            "kongtask_database_reconnects", "Times this worker reached the database again after an outage.",
            registry=registry)
        self._info = Info("kongtask_worker", "This worker: kongtask version, schema generation and name, lock id.",
                          registry=registry)
        self._concurrency = Gauge("kongtask_worker_concurrency", "How many jobs this worker runs at once.",
                                  registry=registry)
        ProcessCollector(registry=registry)
        self._at_stop: list[Callable[[], Awaitable[None]]] = []

    # --- the observer's hooks, on the event loop ------------------------------------------------------

    def job_started(self, job: Job) -> None:
        figures = self._tasks.get(job.task_identifier) or self._figures(job.task_identifier)
        try:
            lag = time.time() - job.run_at.timestamp()
        except (OverflowError, ValueError):
            lag = None  # a run_at Python cannot hold: its job runs, unmeasured
        with self._lock:
            figures.started += 1
            if lag is not None:
                lag = lag if lag > 0 else 0.0
                figures.lags[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
                figures.lag_sum += lag

    def job_finished(self, job: Job, seconds: float, failed: bool) -> None:
        figures = self._tasks.get(job.task_identifier) or self._figures(job.task_identifier)
        with self._lock:
            figures.durations[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
            figures.duration_sum += seconds
            if not failed:
                figures.completed += 1
            else:
                figures.failed += 1
                if job.attempts >= job.max_attempts:
                    figures.permanently_failed += 1

    def outage_began(self) -> None:
        self._outages.inc()

    def outage_ended(self) -> None:
        self._reconnects.inc()

    async def stopped(self) -> None:
        for close in self._at_stop:
            await close()

    def at_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Calls ``close`` when the workers have stopped (the server that serves these metrics)."""
        self._at_stop.append(close)

    def _figures(self, task: str) -> _TaskFigures:
        with self._lock:
            return self._tasks.setdefault(task, _TaskFigures())

    # --- what a scrape reads, on the server's threads ---------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            tasks = sorted((task, figures.copy()) for task, figures in self._tasks.items())
        by_task = ["task"]
        started = CounterMetricFamily("kongtask_jobs_started", "Jobs this worker started, by task.", labels=by_task)
        completed = CounterMetricFamily(
            "kongtask_jobs_completed", "Jobs this worker ran to success, by task.", labels=by_task)
        failed = CounterMetricFamily(
            "kongtask_jobs_failed", "Job attempts that failed on this worker, by task (permanent failures too).",
            labels=by_task)
        permanently_failed = CounterMetricFamily(
            "kongtask_jobs_permanently_failed",
            "Job attempts that failed on this worker with no attempt left, by task: the job is dead.", labels=by_task)
        duration = HistogramMetricFamily(
            "kongtask_job_duration_seconds", "How long tasks ran on this worker, by task.", labels=by_task)
        lag = HistogramMetricFamily(
            "kongtask_job_queue_lag_seconds",
            "From a job's run_at to its start on this worker, by task (the database's clock against this machine's).",
            labels=by_task)
        for task, figures in tasks:
            started.add_metric([task], figures.started)
            completed.add_metric([task], figures.completed)
            failed.add_metric([task], figures.failed)
            permanently_failed.add_metric([task], figures.permanently_failed)
            duration.add_metric([task], _cumulative(DURATION_BUCKETS, figures.durations), figures.duration_sum)
            lag.add_metric([task], _cumulative(LAG_BUCKETS, figures.lags), figures.lag_sum)
        return [started, completed, failed, permanently_failed, duration, lag]

    # --- set up once the workers run ------------------------------------------------------------------

    def describe_worker(self, *, database: DatabaseSchema, worker_id: str, concurrency: int,
                        task_names: Sequence[str]) -> None:
        """Fills in ``kongtask_worker_info`` and the concurrency; shows every task's series at 0."""
        from . import __version__  # the package is loaded by the time a pool runs

        self._info.info({
            "version": __version__, "generation": database.generation, "schema": database.name,
            "worker_id": worker_id,
        })
        self._concurrency.set(concurrency)
        for task in task_names:
            self._figures(task)

    def count_jobs(self, pool: AsyncConnectionPool, database: DatabaseSchema, loop: asyncio.AbstractEventLoop,
                   task_names: Sequence[str]) -> None:
        """Adds the ``kongtask_jobs`` gauge, counted through ``pool`` on ``loop``."""
        self.registry.register(JobCounts(pool, database, loop, task_names))


class JobCounts:
    """The ``kongtask_jobs`` gauge: the database's jobs by task and state, counted when a scrape
    wants them and the last count is older than :data:`JOB_COUNTS_EVERY_S`.

    Scrapes come on the server's threads; the count runs on the event loop, through the pool, one
    at a time. A task of this worker, or one seen in an earlier count, shows 0 in a state with no job
    rather than vanishing. A count that fails leaves the gauge out until the next succeeds.
    """

    def __init__(self, pool: AsyncConnectionPool, database: DatabaseSchema, loop: asyncio.AbstractEventLoop,
                 task_names: Iterable[str]) -> None:
        self._pool = pool
        self._statement = database.job_gauges
        self._loop = loop
        self._lock = threading.Lock()
        self._known = set(task_names)
        self._counts: dict[tuple[str, str], int] | None = None
        self._took: float | None = None
        self._next_at = 0.0
        self._counting: concurrent.futures.Future[None] | None = None

    def describe(self) -> list[Metric]:
        return []  # counted only when scraped, never at registration

    def collect(self) -> Iterable[Metric]:
        counts, took = self._current()
        if counts is not None:
            gauge = GaugeMetricFamily(
                "kongtask_jobs",
                "Jobs in the database, by task and state (due, scheduled, locked, dead): the same for every worker "
                "of one database, counted at most every 15 s.",
                labels=["task", "state"])
            for (task, state), count in sorted(counts.items()):
                gauge.add_metric([task, state], count)
            yield gauge
        if took is not None:
            yield GaugeMetricFamily(
                "kongtask_jobs_count_duration_seconds", "How long the last count of the kongtask_jobs gauge took.",
                value=took)

    def _current(self) -> tuple[dict[tuple[str, str], int] | None, float | None]:
        with self._lock:
            if time.monotonic() >= self._next_at and (self._counting is None or self._counting.done()):
                try:
                    self._counting = asyncio.run_coroutine_threadsafe(self._count(), self._loop)
                except RuntimeError:  # the loop is closed: the workers have stopped
                    self._counting = None
            counting = self._counting
        if counting is not None and not counting.done():
            try:
                counting.result(timeout=JOB_COUNTS_WAIT_S)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                pass  # the previous count, if any, serves this scrape
        with self._lock:
            return self._counts, self._took

    async def _count(self) -> None:
        started = time.monotonic()
        rows: list[tuple[Any, ...]] | None = None
        try:
            rows = await asyncio.wait_for(self._query(), JOB_COUNTS_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning(
                "counting the jobs for the kongtask_jobs gauge took over %gs and was cancelled; the gauge is left "
                "out until a count succeeds", JOB_COUNTS_TIMEOUT_S)
        except (psycopg.Error, PoolTimeout) as exc:
            log.debug("could not count the jobs for the kongtask_jobs gauge: %s", exc)
        took = time.monotonic() - started
        with self._lock:
            self._next_at = time.monotonic() + max(JOB_COUNTS_EVERY_S, took / JOB_COUNTS_SHARE)
            if rows is None:
                self._counts = None
                return
            self._took = took
            self._known.update(str(task) for task, _, _ in rows)
            counts = {(task, state): 0 for task in self._known for state in JOB_STATES}
            for task, state, count in rows:
                counts[(str(task), str(state))] = int(count)
            self._counts = counts

    async def _query(self) -> list[tuple[Any, ...]]:
        async with self._pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(self._statement, ())
            return await cursor.fetchall()


def _cumulative(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """A histogram's buckets as Prometheus has them: cumulative, ``le`` as text, ``+Inf`` last."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        total += count
        buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
    return buckets
