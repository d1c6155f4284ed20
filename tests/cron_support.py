"""What the cron tests share: a clock they move by hand, and the rows cron leaves in a 0.18 database."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

SCHEMA = "graphile_worker"


@dataclass
class _Sleeper:
    deadline: float  # on the clock's elapsed time
    wake: asyncio.Future[None]


class FakeClock:
    """A clock for :class:`kongtask._cron_scheduler.CronScheduler` that moves only when told, as
    upstream's tests move theirs (jest's fake timers):

    - moving forward runs the timers (sleeps) due on the way, in order, each at its own time, and
      waits until every scheduler on the clock sleeps again before going on;
    - moving back only changes the time read: a sleep still ends after as much time has passed as
      it asked for, as the timers of jest's ``setSystemTime`` do.

    ``schedulers`` is how many schedulers sleep on it when idle (see :meth:`settle`).
    """

    def __init__(self, now: datetime, schedulers: int = 1) -> None:
        self._now = now
        self._elapsed = 0.0
        self._sleepers: list[_Sleeper] = []
        self.schedulers = schedulers

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        sleeper = _Sleeper(self._elapsed + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(sleeper)
        try:
            await sleeper.wake
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    async def settle(self, timeout: float = 15.0) -> None:
        """Waits until every scheduler on this clock sleeps (its work for the time so far done)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self._sleepers) < self.schedulers:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {self.schedulers} scheduler(s) to sleep")
            await asyncio.sleep(0.005)

    async def set_time(self, moment: datetime) -> None:
        """Moves the clock to ``moment``, running every sleep that ends on the way (see the class)."""
        await self.settle()
        if moment <= self._now:
            self._now = moment
            return
        target = self._elapsed + (moment - self._now).total_seconds()
        while self._sleepers:
            first = min(sleeper.deadline for sleeper in self._sleepers)
            if first > target:
                break
            self._now += timedelta(seconds=first - self._elapsed)
            self._elapsed = first
            for sleeper in [s for s in self._sleepers if s.deadline == first]:
                self._sleepers.remove(sleeper)
                sleeper.wake.set_result(None)
            await self.settle()
        self._now += timedelta(seconds=target - self._elapsed)
        self._elapsed = target


@dataclass(frozen=True)
class CronJob:
    id: int
    task: str
    key: str | None
    payload: Any
    run_at: datetime
    queue_name: str | None
    max_attempts: int
    priority: int


def cron_jobs(url: str) -> list[CronJob]:
    """Every job in the 0.18 database at ``url``, in id order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select j.id, t.identifier, j.key, j.payload, j.run_at, q.queue_name, j.max_attempts, j.priority"
            f" from {SCHEMA}._private_jobs j join {SCHEMA}._private_tasks t on t.id = j.task_id"
            f" left join {SCHEMA}._private_job_queues q on q.id = j.job_queue_id order by j.id"
        ).fetchall()
    return [CronJob(row[0], row[1], row[2], row[3] if not isinstance(row[3], str) else json.loads(row[3]), *row[4:])
            for row in rows]


def known_crontabs(url: str) -> list[tuple[str, datetime, datetime | None]]:
    """``_private_known_crontabs``, as upstream's ``getKnown`` orders it."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"select identifier, known_since, last_execution from {SCHEMA}._private_known_crontabs"
            " order by known_since, identifier"
        ).fetchall()
