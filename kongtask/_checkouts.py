"""Jobs between the database and the workers: batched fetch, the local buffer, batched release.

One :class:`Checkouts` per running pool. Its *fetcher* checks out due jobs in batches (``get_jobs``)
under the pool's one lock id and hands them to waiting workers; what no worker waits for yet stays
in a small local buffer. Workers hand back each job's outcome; the *flusher* releases every
outcome gathered so far in one statement (``release_jobs``), so releases batch themselves under load
and go alone, at once, when the queue is quiet.

Every job checked out is *held* until its release lands: the heartbeat keeps held jobs' queues
locked, a stop gives buffered jobs back at once (``return_jobs``), and after a SIGKILL their locks
expire like any dead worker's. A named queue stays strictly serial: its row stays locked from the
checkout of one of its jobs until that job's release, wherever the job waits in between.

The buffer adapts to the work: it aims to hold what the workers get through in about 50 ms at
their measured pace (or two fetch round trips, if longer), so a backlog of quick jobs goes in
batches of up to ``batch_size``, while slow jobs, or a quiet queue, are fetched one wake-up at a
time and are not hoarded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg_pool import PoolTimeout

from ._job import Job
from ._options import ForbiddenFlags
from ._outages import Backoff, OutageLog
from ._resources import SharedResources
from ._schema import jobs
from ._schema.v0_1 import JOBS_INSERT_CHANNEL

log = logging.getLogger("kongtask.worker")

#: How long a statement waits for a pool connection before trying again; short, so a forced stop
#: during an outage is not held up by the pool's own 30 s default.
CHECKOUT_TIMEOUT_S = 5.0

#: What a lost or unusable connection looks like: retried, never fatal.
CONNECTION_ERRORS = (psycopg.OperationalError, PoolTimeout)

#: How much work the buffer aims to hold, in seconds of the workers' measured pace. Each statement
#: costs the worker about as much CPU as a quick job, so quick jobs need batches to go fast; a
#: job that waits this long in the buffer instead of running elsewhere costs little.
BUFFERED_WORK_S = 0.05

#: A buffered job that waited this long (the workers' pace fell, say slow jobs came after quick
#: ones) goes back to the database, where another worker may be free for it.
BUFFER_TTL_S = 1.0

#: How long an outcome may wait for others to share its release statement, while the workers
#: have jobs to go on with. A named queue's next job waits for its release, so this stays short.
RELEASE_DELAY_S = 0.005

#: The most outcomes one release statement carries.
_RELEASE_BATCH_MAX = 1000


class Stopping(Protocol):
    """What the checkouts ask of the pool."""

    @property
    def stopping(self) -> bool: ...

    @property
    def outage(self) -> OutageLog: ...

    def release_abandoned(self) -> bool:
        """Whether a release that keeps failing should be given up (a forced end)."""


class Lent(Protocol):
    """A buffered job a worker took ahead of time (see :meth:`Checkouts.lend`)."""

    job: Job

    def take_back(self) -> bool:
        """Takes the job back unless it has started; says whether it did."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    job: Job
    #: None for a success, else what ``last_error`` records.
    error: str | None
    #: A failed batch job's payload for its retry (its failed items), as JSON; None keeps it.
    payload: str | None = None


class Checkouts:
    """The pool's jobs in hand: fetched in batches, buffered, handed to workers, released in batches."""

    def __init__(
        self,
        pool: Stopping,
        resources: SharedResources,
        queries: Any,
        *,
        lock_id: str,
        task_names: list[str],
        job_expiry_s: float,
        batch_size: int,
        once: bool,
        tolerant: bool,
        forbidden_flags: ForbiddenFlags | None = None,
    ) -> None:
        self.lock_id = lock_id
        self._pool = pool
        self._resources = resources
        self._queries = queries
        self._batch_size = batch_size
        self._once = once
        self._tolerant = tolerant
        self._fetch_params: dict[str, Any] = {
            "worker_id": lock_id,
            "task_names": jobs.text_array_literal(task_names),
            "job_expiry": f"{job_expiry_s} seconds",
            "forbidden_flags": None if forbidden_flags is None or callable(forbidden_flags) else list(forbidden_flags),
        }
        self._flags_source = forbidden_flags if callable(forbidden_flags) else None
        self._buffer: collections.deque[Job] = collections.deque()
        self._fetched_at: dict[int, float] = {}  # of buffered jobs, by id
        self._waiters: collections.deque[asyncio.Future[Job | None]] = collections.deque()
        self._lent: list[Lent] = []
        self._lent_at: dict[int, float] = {}  # of lent jobs, by id
        #: Every job checked out and not yet released or given back, by id.
        self._held: dict[int, Job] = {}
        self._outcomes: list[_Outcome] = []
        self._outcome_ready = asyncio.Event()
        # Set when the outcomes gathered so far should go now rather than wait for more company.
        self._release_now = asyncio.Event()
        self._fetch_wanted = asyncio.Event()
        # Wake-ups (NOTIFY, poll, a release) since the last fetch began: a fetch that found less
        # than it asked for says "nothing more is due" only if none came while it ran.
        self._wakes = 0
        self._maybe_due = True
        self._exhausted = False  # once: a fetch found nothing while nothing was held
        self._closing = False
        self._parked = False  # the fetcher waits for a wake-up: nothing was due at its last look
        # The adaptive buffer: jobs handed out, the rate they go at, and the fetch round trip.
        self._handed_out = 0
        self._sample_count = 0
        self._sample_at = time.monotonic()
        self._rate = 0.0
        self._fetch_s = 0.0
        self._target = 0

    # --- what workers call ---------------------------------------------------------------------

    async def next_job(self) -> Job | None:
        """The next job to run, waiting for one; None when the worker should stop."""
        if self._buffer and not self._pool.stopping:
            job = self._take()
            if self._refill_wanted():
                # Workers whose tasks never wait would run the whole buffer before the fetcher
                # gets a turn: let it send the next fetch now, so it overlaps with their work.
                await asyncio.sleep(0)
            return job
        if self._pool.stopping or self._exhausted:
            return None
        for item in self._lent:
            # A job another worker took ahead but has not started: better run now, here.
            if item.take_back():
                self.unlend(item)
                return item.job
        waiter: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._fetch_wanted.set()
        # A worker with nothing to do: the releases may unlock the queue that holds its next job.
        self._release_now.set()
        return await waiter

    def lend(self, wanted: Callable[[Job], bool]) -> Job | None:
        """The next buffered job if ``wanted`` and no worker waits for one, for a busy worker to
        queue behind its current job; register it with :meth:`lent` so it can be taken back."""
        if not self._buffer or self._pool.stopping or self._waiting() or not wanted(self._buffer[0]):
            return None
        job = self._take()
        self._refill_wanted()
        return job

    def _take(self) -> Job:
        job = self._buffer.popleft()
        self._fetched_at.pop(job.id, None)
        self._handed_out += 1
        return job

    def _refill_wanted(self) -> bool:
        """Wakes the fetcher when the buffer falls to half its aim; says whether it did."""
        if self._low() and self._maybe_due and not self._fetch_wanted.is_set():
            self._fetch_wanted.set()
            return True
        return False

    def _low(self) -> bool:
        """Whether the buffer, aiming at some jobs, holds half of them or fewer: time to refill."""
        return self._target > 0 and len(self._buffer) <= self._target // 2

    def lent(self, item: Lent) -> None:
        self._lent.append(item)
        self._lent_at[item.job.id] = time.monotonic()

    def unlend(self, item: Lent) -> None:
        if item in self._lent:
            self._lent.remove(item)
        self._lent_at.pop(item.job.id, None)

    def release(self, job: Job, error: str | None, payload: Any = None) -> None:
        """Queues the job's release (complete, or fail with ``error``, its payload becoming
        ``payload`` unless that is None); the flusher sends it."""
        self._outcomes.append(_Outcome(job, error, None if payload is None else jobs.encode_payload(payload)))
        self._outcome_ready.set()
        if len(self._outcomes) >= self._batch_size:
            self._release_now.set()

    # --- what the pool calls -------------------------------------------------------------------

    def wake(self) -> None:
        """Jobs may be due (a NOTIFY, the poll interval, a reconnect): fetch if anyone waits."""
        self._wakes += 1
        self._maybe_due = True
        self._fetch_wanted.set()

    def stop(self) -> None:
        """No more jobs are handed out: waiting workers get None, and the fetcher winds down."""
        self._dismiss_waiters()
        # Jobs workers took ahead but have not started go back with the buffer.
        self._buffer.extend(item.job for item in self._lent if item.take_back())
        self._lent.clear()
        self._lent_at.clear()
        self._fetch_wanted.set()

    @property
    def idle_workers(self) -> int:
        """How many workers wait for a job while the fetcher waits for a wake-up (for tests and logs)."""
        return self._waiting() if self._parked else 0

    @property
    def held(self) -> list[Job]:
        """Every job checked out and not yet released: running, buffered or being released."""
        return list(self._held.values())

    async def close(self) -> None:
        """After the workers: releases what they handed back, until it lands or the stop is forced."""
        self._closing = True
        self._outcome_ready.set()
        self._release_now.set()

    # --- the fetcher -----------------------------------------------------------------------------

    def _wanted(self) -> int:
        waiting = self._waiting()
        if waiting:
            want = waiting + self._target
        elif self._low():
            want = self._target - len(self._buffer)
        else:
            return 0
        return min(want, self._batch_size)

    async def run_fetcher(self, poll_interval: float) -> None:
        """Checks out jobs while workers want them; gives back the buffer when the pool stops."""
        try:
            while not self._pool.stopping:
                want = self._wanted() if self._maybe_due else 0
                if want == 0:
                    self._fetch_wanted.clear()
                    self._parked = True
                    stale_in = self._stale_in()
                    try:
                        await asyncio.wait_for(self._fetch_wanted.wait(), min(poll_interval, stale_in))
                    except asyncio.TimeoutError:
                        if stale_in >= poll_interval:
                            self._maybe_due = True  # the poll: jobs may have come due without a NOTIFY
                    finally:
                        self._parked = False
                    if self._stale_in() <= 0:
                        # The pace that sized the buffer is gone: fetch for waiting workers only,
                        # until the next fetches measure it again.
                        self._target = 0
                        await self._give_back(self._stale_jobs())
                    continue
                await self._fetch(want)
        finally:
            await self._give_back_buffer()

    async def _fetch(self, want: int) -> None:
        wakes_before = self._wakes
        held_before = len(self._held)
        if self._flags_source is not None:
            await self._ask_forbidden_flags(self._flags_source)
        params = dict(self._fetch_params, limit=want)
        started = time.monotonic()
        backoff = Backoff()
        while True:
            try:
                async with self._resources.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    rows = await jobs.fetch_rows(conn, self._queries.get_jobs, params, tolerant=self._tolerant)
                self._pool.outage.recovered()
                break
            except CONNECTION_ERRORS as exc:
                self._pool.outage.failed(exc)
                if isinstance(exc, psycopg.OperationalError):
                    # The checkout may have committed with its reply lost.
                    await self._return_strays()
                if self._pool.stopping:
                    return
                await asyncio.sleep(backoff.next())
        fetched = sorted((Job(*row[:-1]) for row in rows), key=_fetch_order)
        scanned = rows[0][-1] if rows else 0
        self._learn(time.monotonic() - started)
        for job in fetched:
            self._held[job.id] = job
        if fetched and log.isEnabledFor(logging.DEBUG):
            for job in fetched:
                log.debug("fetched job %s (%s), attempt %d of %d", job.id, job.task_identifier, job.attempts,
                          job.max_attempts)
        # A scan that found fewer rows than it could means nothing else is due; a short batch
        # alone does not (a queue's jobs after its first, or rows another worker was locking).
        if (not fetched or scanned < want) and self._wakes == wakes_before:
            self._maybe_due = False
            if self._once and not fetched and held_before == 0 and not self._held:
                self._exhausted = True
        self._hand_out(fetched)

    async def _ask_forbidden_flags(self, source: Callable[[], Any]) -> None:
        """Asks the caller's function which flags to leave alone in this fetch; when it fails, the
        last answer stands (none, before the first), and the failure is logged."""
        try:
            answer = source()
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None and (isinstance(answer, str) or not all(isinstance(f, str) for f in answer)):
                raise TypeError(f"expected a list of flag names or None, got {answer!r}")
        except Exception:
            log.exception("the forbidden_flags function failed; fetching with its last answer")
            return
        self._fetch_params["forbidden_flags"] = None if answer is None else list(answer)

    def _hand_out(self, fetched: list[Job]) -> None:
        now = time.monotonic()
        for job in fetched:
            self._fetched_at[job.id] = now
        self._buffer.extend(fetched)
        while self._buffer and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._take())
        if self._exhausted:
            self._dismiss_waiters()

    def _dismiss_waiters(self) -> None:
        """Every waiting worker gets None: it stops."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _learn(self, fetch_s: float) -> None:
        """Sizes the buffer: what the workers take in :data:`BUFFERED_WORK_S`, or in two fetch
        round trips when those take longer."""
        now = time.monotonic()
        elapsed = now - self._sample_at
        if elapsed > 0:
            sample = (self._handed_out - self._sample_count) / elapsed
            self._rate = sample if self._rate == 0 else (self._rate + sample) / 2
        self._sample_at, self._sample_count = now, self._handed_out
        self._fetch_s = fetch_s if self._fetch_s == 0 else (self._fetch_s + fetch_s) / 2
        self._target = min(self._batch_size, round(self._rate * max(BUFFERED_WORK_S, 2 * self._fetch_s)))

    def _stale_in(self) -> float:
        """Seconds until the oldest job waiting here (buffered, or lent to a busy worker and not
        started) has waited :data:`BUFFER_TTL_S`; inf when none waits."""
        since = [self._fetched_at.get(self._buffer[0].id, 0.0)] if self._buffer else []
        since += [self._lent_at.get(self._lent[0].job.id, 0.0)] if self._lent else []
        return min(since) + BUFFER_TTL_S - time.monotonic() if since else float("inf")

    def _stale_jobs(self) -> list[Job]:
        stale: list[Job] = []
        deadline = time.monotonic() - BUFFER_TTL_S
        while self._buffer and self._fetched_at.get(self._buffer[0].id, 0.0) <= deadline:
            stale.append(self._buffer.popleft())
        for item in [i for i in self._lent if self._lent_at.get(i.job.id, 0.0) <= deadline]:
            if item.take_back():
                stale.append(item.job)
            self.unlend(item)
        return stale

    async def _give_back_buffer(self) -> None:
        given = list(self._buffer)
        self._buffer.clear()
        await self._give_back(given)

    async def _give_back(self, given: list[Job]) -> None:
        """Gives jobs never started back: their attempt restored, their queue unlocked."""
        for job in given:
            self._fetched_at.pop(job.id, None)
        if not given:
            return
        params = {
            "worker_id": self.lock_id,
            "job_ids": [j.id for j in given],
            "updated_at": [j.updated_at for j in given],
            "keys": [j.key for j in given],
            "channel": JOBS_INSERT_CHANNEL,
        }
        if await self._execute_until_done(self._queries.return_jobs, params, f"give back {len(given)} job(s)"):
            log.debug("gave back %d job(s) fetched but not started", len(given))
        for job in given:
            self._held.pop(job.id, None)

    async def _return_strays(self) -> None:
        held = self._held.values()
        params = {
            "worker_id": self.lock_id,
            "held_ids": sorted(j.id for j in held),
            "held_queues": sorted({j.queue_name for j in held if j.queue_name is not None}),
        }
        await self._execute_until_done(
            self._queries.return_stray_checkouts, params, "return jobs checked out unseen", until_stopping=True
        )

    # --- the flusher -----------------------------------------------------------------------------

    async def run_flusher(self) -> None:
        """Releases the outcomes workers hand back, all gathered so far in one statement each time.

        While workers have jobs to go on with, outcomes wait up to :data:`RELEASE_DELAY_S` for
        company (each statement costs the worker about as much as a quick job); a worker left
        without a job, a full batch, or the stop sends them at once.
        """
        while True:
            if not self._outcomes:
                if self._closing:
                    return
                self._outcome_ready.clear()
                await self._outcome_ready.wait()
                continue
            if not self._release_now.is_set() and not self._waiting():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._release_now.wait(), RELEASE_DELAY_S)
            self._release_now.clear()
            batch = self._outcomes[:_RELEASE_BATCH_MAX]
            del self._outcomes[:_RELEASE_BATCH_MAX]
            await self._release(batch)
            for outcome in batch:
                self._held.pop(outcome.job.id, None)
            # A release unlocks queues: their next jobs may be due now.
            self.wake()

    def _waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    async def _release(self, batch: list[_Outcome]) -> None:
        completed = [o.job.id for o in batch if o.error is None]
        failed = [o for o in batch if o.error is not None]
        params = {
            "worker_id": self.lock_id,
            "completed_lock_ids": [self.lock_id] * len(completed),
            "completed_ids": completed,
            "failed_lock_ids": [self.lock_id] * len(failed),
            "failed_ids": [o.job.id for o in failed],
            "failed_updated_at": [o.job.updated_at for o in failed],
            "failed_messages": [o.error for o in failed],
            "failed_payloads": [o.payload for o in failed],
        }
        what = f"release job {batch[0].job.id}" if len(batch) == 1 else f"release {len(batch)} jobs"
        if await self._execute_until_done(self._queries.release_jobs, params, what) and log.isEnabledFor(logging.DEBUG):
            for outcome in batch:
                log.debug("released job %s (%s)", outcome.job.id, "completed" if outcome.error is None else "failed")

    # --- statements retried through outages ---------------------------------------------------------

    async def _execute_until_done(self, query: str, params: Any, what: str, until_stopping: bool = False) -> bool:
        """Runs a statement that is safe to repeat, retrying through outages until it lands or the
        stop is forced (or, ``until_stopping``, until any stop). Returns whether it landed."""
        backoff = Backoff(ceiling=2.0)
        while True:
            try:
                async with self._resources.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    await jobs.fetch_rows(conn, query, params)
                self._pool.outage.recovered()
                return True
            except CONNECTION_ERRORS as exc:
                self._pool.outage.failed(exc)
                if until_stopping and self._pool.stopping:
                    return False
                if self._pool.release_abandoned():
                    log.error(
                        "could not %s before shutdown; their queues stay locked by %s until the job expiry passes",
                        what, self.lock_id,
                    )
                    return False
                await asyncio.sleep(backoff.next())


def _fetch_order(job: Job) -> tuple[Any, ...]:
    # get_job's order: a batch is handed out as its jobs would have been fetched one by one.
    return (job.priority, job.run_at, job.id)
