"""The cron scheduler: one per running pool, adding each cron item's job once per due minute.

It works as graphile-worker 0.18's does, so that kongtask and Node workers share one crontab:

1. At start, items no worker knew are recorded with ``known_since`` = now; items already known
   are backfilled: each due minute up to ``fill`` ago, but not before the item's last execution
   (or, never run, its ``known_since``), gets its job, marked ``backfilled``, oldest minute first.
2. Then, at each minute boundary (UTC), the items due that minute get their jobs.

Each minute's jobs are added by one statement (``schedule_cron_jobs``) that first moves each
item's ``last_execution`` forward to the minute, and adds the job only where that succeeded: of
any number of workers, only the first for a given item and minute adds its job.

Time comes from a :class:`Clock`, so tests can move it (forward, back, in jumps) at will. A timer
that fires early (the clock went back) waits again; one that fires late (a busy loop, or the clock
jumped on) catches up minute by minute. A database error restarts the scheduler after a backoff,
backfill included, as upstream does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Protocol

from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from ._outages import first_line
from ._schema.v0_18 import SchemaV0_18
from .crontab import CronItem

log = logging.getLogger("kongtask.cron")

MINUTE = timedelta(minutes=1)
#: A timer is set this far past the minute boundary, so that it fires in the new minute.
_PAST_THE_BOUNDARY_S = 0.001
#: After an error, the first restart waits about this long (s); each next one 1.5 times longer, up to a minute.
_RETRY_FIRST_S, _RETRY_GROWTH, _RETRY_CEILING_S = 0.2, 1.5, 60.0
#: How long the scheduler waits for a pooled connection before that counts as an error (s).
_CONNECTION_TIMEOUT_S = 30.0


class Clock(Protocol):
    """Where the scheduler gets the time and waits: the system clock, or a test's."""

    def now(self) -> datetime:
        """The time now, aware, in UTC."""

    async def sleep(self, seconds: float) -> None:
        """Returns after ``seconds`` have passed on this clock."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def round_to_minute(moment: datetime, up: bool = False) -> datetime:
    """The minute ``moment`` is in (``up``: the next minute boundary, unless on one)."""
    rounded = moment.replace(second=0, microsecond=0)
    return rounded + MINUTE if up and rounded != moment else rounded


def cron_timestamp(minute: datetime) -> str:
    """A minute as upstream writes it in ``_cron.ts``: JavaScript's ``toISOString()``."""
    return minute.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def job_payload(item: CronItem, minute: datetime, backfilled: bool) -> str:
    """The JSON payload of ``item``'s job for ``minute``: its own payload plus ``_cron``, written
    without spaces as JavaScript's ``JSON.stringify`` writes it (the json column keeps the text)."""
    payload = {**(item.payload or {}), "_cron": {"ts": cron_timestamp(minute), "backfilled": backfilled}}
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _retry_delay(attempt: int) -> float:
    # With jitter, so that the workers of a fleet do not all come back at once.
    return min(_RETRY_FIRST_S * _RETRY_GROWTH ** (attempt - 1), _RETRY_CEILING_S) * random.uniform(0.5, 1.5)


class CronScheduler:
    """Adds the jobs of ``items`` on the 0.18 schema ``statements`` holds; :meth:`run` until :meth:`stop`.

    ``started`` is set once registering and backfilling are done. For tests and logs, ``scheduled``
    lists each minute sent to the database, ``(minute, backfilled, identifiers)``, and ``added`` the
    jobs this scheduler won, ``(minute, identifier, job id)``.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        statements: SchemaV0_18,
        items: Sequence[CronItem],
        clock: Clock | None = None,
    ) -> None:
        self._pool = pool
        self._statements = statements
        self._items = tuple(items)
        self._clock: Clock = clock or SystemClock()
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.scheduled: list[tuple[datetime, bool, tuple[str, ...]]] = []
        self.added: list[tuple[datetime, str, int]] = []
        self._failures = 0

    def stop(self) -> None:
        """Ends :meth:`run` once the statement under way (if any) is done."""
        self._stopping.set()

    async def run(self) -> None:
        """Registers and backfills the items, then adds their jobs each due minute, until stopped.

        Registering is done even when a stop comes meanwhile, as upstream does: an item a worker
        started with is known from then on. Errors restart it, after a growing pause.
        """
        while True:
            try:
                await self._run()
                return
            except Exception as exc:  # noqa: BLE001 - upstream restarts on any error; so do we, saying why
                if self._stopping.is_set():
                    return
                self._failures += 1
                delay = _retry_delay(self._failures)
                log.error("cron hit an error; restarting in %.1fs (attempt %d): %s", delay, self._failures,
                          first_line(exc))
                if not await self._sleep(delay):
                    return

    async def _run(self) -> None:
        start = self._clock.now()
        await self._register_and_backfill(start)
        if self._failures:
            log.warning("cron is running again after %d failed attempt(s)", self._failures)
            self._failures = 0
        self.started.set()
        # Continue from where this run started, as fast as the database allows: minutes the
        # backfill took count as on time, not as backfilled.
        next_minute = round_to_minute(start, up=True)
        while not self._stopping.is_set():
            wait = (next_minute - self._clock.now()).total_seconds() + _PAST_THE_BOUNDARY_S
            if not await self._sleep(max(wait, _PAST_THE_BOUNDARY_S)):
                return
            now = self._clock.now()
            if round_to_minute(now) < next_minute:
                log.debug("cron woke %.3fs before %s (the clock went back?); waiting again",
                          (next_minute - now).total_seconds(), cron_timestamp(next_minute))
                continue
            if round_to_minute(now) > next_minute:
                log.debug("cron is %s behind; catching up", now - next_minute)
            due = [item for item in self._items if item.matches(next_minute)]
            if due:
                await self._schedule(due, next_minute, backfilled=False)
            next_minute += MINUTE

    async def _sleep(self, seconds: float) -> bool:
        """Sleeps on the clock; False when a stop came first."""
        if self._stopping.is_set():
            return False
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, stopper):
                waiter.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return not self._stopping.is_set()

    async def _register_and_backfill(self, start: datetime) -> None:
        identifiers = [item.identifier for item in self._items]
        async with self._pool.connection(timeout=_CONNECTION_TIMEOUT_S) as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(self._statements.known_crontabs, {"identifiers": identifiers})
            known = {row[0]: (row[1], row[2]) for row in await cursor.fetchall()}
            unknown = [identifier for identifier in identifiers if identifier not in known]
            if unknown:
                await conn.execute(self._statements.register_crontabs,
                                   {"identifiers": unknown, "known_since": start})
        # Only items known before this start are backfilled, from their last execution (or since
        # they were first known) on, over their own fill, oldest minute first: a later minute
        # claimed first would make the earlier ones unclaimable.
        since = {identifier: last_execution or known_since
                 for identifier, (known_since, last_execution) in known.items()}
        longest = max((item.fill for item in self._items), default=timedelta(0))
        if not longest or not since:
            return
        minute = round_to_minute(start - longest, up=True)
        while minute < start:
            ago = start - minute
            due = [item for item in self._items
                   if item.identifier in since and item.fill >= ago and minute >= since[item.identifier]
                   and item.matches(minute)]
            if due:
                await self._schedule(due, minute, backfilled=True)
            minute += MINUTE

    async def _schedule(self, items: list[CronItem], minute: datetime, backfilled: bool) -> None:
        self.scheduled.append((minute, backfilled, tuple(item.identifier for item in items)))
        params = {
            "ts": minute,
            "identifier": [item.identifier for item in items],
            "task": [item.task for item in items],
            "payload": [job_payload(item, minute, backfilled) for item in items],
            "queue_name": [item.queue_name for item in items],
            "max_attempts": [item.max_attempts for item in items],
            "priority": [item.priority for item in items],
            "job_key": [item.job_key for item in items],
            "job_key_mode": [item.job_key_mode for item in items],
        }
        async with self._pool.connection(timeout=_CONNECTION_TIMEOUT_S) as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(self._statements.schedule_cron_jobs, params)
            added = await cursor.fetchall()
        self.added.extend((minute, row[0], row[1]) for row in added)
        if added:
            log.debug("cron added %s for %s%s", ", ".join(f"{row[0]} (job {row[1]})" for row in added),
                      cron_timestamp(minute), " (backfilled)" if backfilled else "")
