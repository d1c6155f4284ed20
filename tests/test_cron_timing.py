"""The cron scheduler against time moved by hand: a port of upstream graphile-worker 0.18's
``__tests__/cron-timing.test.ts``, then kongtask's own (several schedulers racing for each minute).

Upstream runs a whole runner under jest's fake timers and counts its ``cron:schedule`` events;
kongtask runs the scheduler itself (``kongtask._cron_scheduler.CronScheduler``, what a runner runs)
on a real 0.18 database with :class:`tests.cron_support.FakeClock`, and counts the minutes it sent
(``scheduler.scheduled``, recorded before the statement, as upstream's event is emitted before it).
The database's own clock is real: only the cron timestamps are in 2021.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

from psycopg_pool import AsyncConnectionPool

from kongtask._cron_scheduler import CronScheduler
from kongtask._schema import v0_18
from kongtask.crontab import CronItem, parse_crontab
from tests.cron_support import FakeClock, cron_jobs

SECOND, MINUTE, HOUR = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)
#: 1st January 2021, 00:00:00 UTC
REFERENCE_TIMESTAMP = datetime(2021, 1, 1, tzinfo=timezone.utc)


@asynccontextmanager
async def schedulers(url: str, clock: FakeClock, items: Sequence[CronItem], count: int = 1
                     ) -> AsyncIterator[list[CronScheduler]]:
    """``count`` schedulers of ``items`` running on ``clock``, each on a pool of its own (as
    separate workers would), started (registered and backfilled) and asleep."""
    clock.schedulers = count
    pools = [AsyncConnectionPool(url, min_size=1, max_size=2, open=False) for _ in range(count)]
    for pool in pools:
        await pool.open()
    running = [CronScheduler(pool, v0_18.schema_named("graphile_worker"), items, clock=clock) for pool in pools]
    tasks = [asyncio.ensure_future(scheduler.run()) for scheduler in running]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.started.wait() for s in running)), 15)
        await clock.settle()
        yield running
    finally:
        for scheduler in running:
            scheduler.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        for pool in pools:
            await pool.close()


def on_time(scheduler: CronScheduler) -> list[tuple[datetime, bool, tuple[str, ...]]]:
    """The minutes the scheduler sent that were not backfilled: upstream's ``cron:schedule`` events."""
    return [sent for sent in scheduler.scheduled if not sent[1]]


# --- cron-timing.test.ts ---------------------------------------------------------------------------


def test_check_timestamp_is_correct() -> None:
    clock = FakeClock(REFERENCE_TIMESTAMP)
    assert clock.now().isoformat().startswith("2021-01-01T00:00:0")


def test_executes_job_when_expected(modern_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock(REFERENCE_TIMESTAMP + HOUR)  # 1am
        async with schedulers(modern_url, clock, parse_crontab("0 */4 * * * my_task")) as (scheduler,):
            assert on_time(scheduler) == []

            await clock.set_time(REFERENCE_TIMESTAMP + 3 * HOUR + 1 * SECOND)  # 3:00:01am
            assert on_time(scheduler) == []

            await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR + 1 * SECOND)  # 4:00:01am
            assert on_time(scheduler) == [(REFERENCE_TIMESTAMP + 4 * HOUR, False, ("my_task",))]

            # After this, the jobs should exist in the DB
            jobs = cron_jobs(modern_url)
            assert [(job.task, job.run_at) for job in jobs] == [("my_task", REFERENCE_TIMESTAMP + 4 * HOUR)]

    asyncio.run(scenario())


def test_doesnt_schedule_tasks_twice_when_system_clock_reverses(modern_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock(REFERENCE_TIMESTAMP + HOUR)  # 1am
        async with schedulers(modern_url, clock, parse_crontab("0 */4 * * * my_task")) as (scheduler,):
            assert len(on_time(scheduler)) == 0
            await clock.set_time(REFERENCE_TIMESTAMP + 3 * HOUR + 1 * SECOND)  # 3:00:01am
            assert len(on_time(scheduler)) == 0
            await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR + 1 * SECOND)  # 4:00:01am
            assert len(on_time(scheduler)) == 1

            # REWIND TIME!
            await clock.set_time(REFERENCE_TIMESTAMP + 3 * HOUR + 1 * SECOND)
            # Advance time again
            await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR + 1 * SECOND)
            # Although the time was matched again, no tasks should have been scheduled
            assert len(on_time(scheduler)) == 1
            assert len(cron_jobs(modern_url)) == 1

    asyncio.run(scenario())


def test_clock_skew_doesnt_prevent_task_from_being_scheduled_at_the_right_time(modern_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock(REFERENCE_TIMESTAMP + HOUR)  # 1am
        async with schedulers(modern_url, clock, parse_crontab("0 */4 * * * my_task")) as (scheduler,):
            assert len(on_time(scheduler)) == 0
            await clock.set_time(REFERENCE_TIMESTAMP + 3 * HOUR + 1 * SECOND)  # 3:00:01am
            assert len(on_time(scheduler)) == 0

            # Advance time
            await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR - 30 * SECOND)  # 3:59:30am
            assert len(on_time(scheduler)) == 0

            # Jump back and forward a few times
            for _ in range(10):
                await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR - 1 * MINUTE)  # 3:59:00am
                assert len(on_time(scheduler)) == 0
                await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR - 30 * SECOND)  # 3:59:30am
                assert len(on_time(scheduler)) == 0

            # Finally advance the clock to cron firing
            await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR + 1 * SECOND)  # 4:00:01am
            assert on_time(scheduler) == [(REFERENCE_TIMESTAMP + 4 * HOUR, False, ("my_task",))]

    asyncio.run(scenario())


def test_does_not_schedule_duplicate_jobs_when_a_job_key_is_supplied(modern_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock(REFERENCE_TIMESTAMP + HOUR)  # 1am
        async with schedulers(modern_url, clock, parse_crontab("0 */4 * * * my_task ?jobKey=foo")) as (scheduler,):
            # Allow the first copy of the job to get scheduled
            await clock.set_time(REFERENCE_TIMESTAMP + 4 * HOUR + 1 * SECOND)  # 4:00:01am
            assert len(on_time(scheduler)) == 1
            jobs = cron_jobs(modern_url)
            assert [(job.task, job.key) for job in jobs] == [("my_task", "foo")]

            # Allow the system to reschedule the job after seeing it wasn't picked up
            await clock.set_time(REFERENCE_TIMESTAMP + 8 * HOUR + 1 * SECOND)  # 8:00:01am
            assert len(on_time(scheduler)) == 2
            jobs2 = cron_jobs(modern_url)
            assert [(job.task, job.key, job.id) for job in jobs2] == [("my_task", "foo", jobs[0].id)]
            # Original job at 4am
            assert jobs[0].payload["_cron"]["ts"] == "2021-01-01T04:00:00.000Z"
            # Check the job is actually updated, should be 8am now
            assert jobs2[0].payload["_cron"]["ts"] == "2021-01-01T08:00:00.000Z"

    asyncio.run(scenario())


# --- kongtask's own --------------------------------------------------------------------------------


def test_schedulers_racing_for_each_minute_add_each_job_once(modern_url: str) -> None:
    """Four schedulers (four workers' pools) wake together at every minute boundary of an hour and
    race for the same items: each minute's job exists exactly once, whichever won it."""
    crontab = parse_crontab("* * * * * every_minute\n*/5 * * * * every_five ?id=five {n: 5}")

    async def scenario() -> list[CronScheduler]:
        clock = FakeClock(REFERENCE_TIMESTAMP + 30 * SECOND)
        async with schedulers(modern_url, clock, crontab, count=4) as running:
            for minute in range(1, 61):
                await clock.set_time(REFERENCE_TIMESTAMP + minute * MINUTE + 1 * SECOND)
            return running

    running = asyncio.run(scenario())
    jobs = cron_jobs(modern_url)
    slots = Counter((job.task, job.payload["_cron"]["ts"]) for job in jobs)
    assert [slot for slot, n in slots.items() if n > 1] == []
    minutes = [REFERENCE_TIMESTAMP + m * MINUTE for m in range(1, 61)]
    assert {ts for task, ts in slots if task == "every_minute"} == {f"{m:%Y-%m-%dT%H:%M}:00.000Z" for m in minutes}
    assert {ts for task, ts in slots if task == "every_five"} == {
        f"{m:%Y-%m-%dT%H:%M}:00.000Z" for m in minutes if m.minute % 5 == 0}
    assert all(job.run_at == datetime.fromisoformat(job.payload["_cron"]["ts"].replace("Z", "+00:00")) for job in jobs)
    # every scheduler tried every minute; between them they won each job once
    assert all(len(on_time(s)) == 60 for s in running)
    assert len(jobs) == 60 + 12
    assert sorted(job_id for s in running for _, _, job_id in s.added) == [job.id for job in jobs]


def test_a_late_timer_catches_up_every_minute_it_missed_as_on_time(modern_url: str) -> None:
    async def scenario() -> CronScheduler:
        clock = FakeClock(REFERENCE_TIMESTAMP + 30 * SECOND)
        async with schedulers(modern_url, clock, parse_crontab("* * * * * tick")) as (scheduler,):
            # The timer for 00:01 fires at 00:04:10 (a loop blocked for minutes, or a suspended host).
            clock._sleepers[0].deadline += 3 * 60 + 10
            await clock.set_time(REFERENCE_TIMESTAMP + 4 * MINUTE + 11 * SECOND)
            return scheduler

    scheduler = asyncio.run(scenario())
    assert [(ts.minute, backfilled) for ts, backfilled, _ in scheduler.scheduled] == [
        (1, False), (2, False), (3, False), (4, False)]
    assert len(cron_jobs(modern_url)) == 4
