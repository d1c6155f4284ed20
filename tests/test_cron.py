"""Cron in a running worker: a port of upstream graphile-worker 0.18's ``__tests__/cron.test.ts``, then
kongtask's own (backfill's limits, what a cron job carries, the Python form, the v0.1.0 refusal).

Real time and a real 0.18 database (``modern_url``); ``kongtask.run`` with ``cron_items`` is
upstream's ``run`` with ``crontab``. Upstream waits for its ``cron:started`` event; kongtask's tests
wait, with a deadline, for what that backfill leaves in ``_private_known_crontabs``. The runner has
no task for the cron jobs, so they stay in the table to be counted, as in upstream's tests.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask import App, CronItem, parse_crontab
from tests.cron_support import SCHEMA, cron_jobs, known_crontabs
from tests.support import wait_until_async

CRONTAB_DO_IT = """
0 */4 * * * do_it ?fill=1d
"""
FOUR_HOURS = timedelta(hours=4)


def other_task(payload: Any, helpers: Any) -> None:
    """The runner's only task: cron jobs for ``do_it`` wait in the table."""


async def run(url: str, items: list[CronItem]) -> kongtask.Runner:
    return await kongtask.run(task_list={"other": other_task}, connection_string=url, cron_items=items)


def remember(url: str, identifier: str, known_since: str, last_execution: str | None) -> None:
    """A known crontab row, its times as intervals before now (upstream's test inserts)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"insert into {SCHEMA}._private_known_crontabs (identifier, known_since, last_execution)"
            " values (%s, now() - %s::interval, now() - %s::interval)",
            (identifier, known_since, last_execution),
        )


def floor_to(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return moment - (moment - epoch) % step


async def backfilled_to(url: str, identifier: str, at_least: datetime) -> None:
    """Waits until the item's last execution reaches ``at_least``: its backfill is done."""

    def reached() -> bool:
        return any(row[0] == identifier and row[2] is not None and row[2] >= at_least for row in known_crontabs(url))

    await wait_until_async(reached, timeout=20, interval=0.05, what=f"{identifier} backfilled to {at_least}")


# --- cron.test.ts --------------------------------------------------------------------------------


def test_registers_identifiers(modern_url: str) -> None:
    assert known_crontabs(modern_url) == []

    async def scenario() -> None:
        runner = await run(modern_url, parse_crontab(CRONTAB_DO_IT))
        await runner.stop()

    asyncio.run(scenario())
    known = known_crontabs(modern_url)
    assert len(known) == 1
    identifier, known_since, last_execution = known[0]
    assert identifier == "do_it"
    assert known_since is not None
    assert last_execution is None
    assert cron_jobs(modern_url) == []


@pytest.mark.parametrize(("gap", "jobs_expected"), [("5 hours", (1, 2)), ("25 hours", (6, 7))])
def test_backfills_if_identifier_already_registered(modern_url: str, gap: str, jobs_expected: tuple[int, int]) -> None:
    """Upstream's "backfills if identifier already registered (5h)" and "(25h)": a job every four
    hours, last run 5 (25) hours ago, fill=1d: the missed runs of the window are added."""
    remember(modern_url, "do_it", "14 days", gap)
    expected_time = floor_to(datetime.now(timezone.utc), FOUR_HOURS)

    async def scenario() -> None:
        runner = await run(modern_url, parse_crontab(CRONTAB_DO_IT))
        try:
            await backfilled_to(modern_url, "do_it", expected_time)
        finally:
            await runner.stop()

    asyncio.run(scenario())
    ((identifier, known_since, last_execution),) = known_crontabs(modern_url)
    assert identifier == "do_it" and known_since is not None
    # There's a small window every 4 hours where the clock may pass a boundary meanwhile.
    assert last_execution in (expected_time, expected_time + FOUR_HOURS)
    jobs = cron_jobs(modern_url)
    assert jobs_expected[0] <= len(jobs) <= jobs_expected[1]
    assert all(job.task == "do_it" for job in jobs)
    assert all(job.payload["_cron"]["backfilled"] is True for job in jobs)


# --- kongtask's own ------------------------------------------------------------------------------


def test_backfill_never_reaches_before_the_item_was_first_known(modern_url: str) -> None:
    # Known for 5 hours and never run: of the day that fill=1d would cover, only runs since then.
    remember(modern_url, "do_it", "5 hours", None)
    with psycopg.connect(modern_url) as conn:
        row = conn.execute(f"select known_since from {SCHEMA}._private_known_crontabs").fetchone()
    assert row is not None
    known_since = row[0]
    latest = floor_to(datetime.now(timezone.utc), FOUR_HOURS)

    async def scenario() -> None:
        runner = await run(modern_url, parse_crontab(CRONTAB_DO_IT))
        try:
            await backfilled_to(modern_url, "do_it", latest)
        finally:
            await runner.stop()

    asyncio.run(scenario())
    run_ats = [job.run_at for job in cron_jobs(modern_url)]
    assert run_ats and all(run_at >= known_since for run_at in run_ats)
    assert 1 <= len(run_ats) <= 2


def test_an_item_no_worker_knew_is_not_backfilled(modern_url: str) -> None:
    async def scenario() -> None:
        runner = await run(modern_url, parse_crontab("* * * * * do_it ?fill=1w"))
        await runner.stop()

    before = datetime.now(timezone.utc)
    asyncio.run(scenario())
    ((_, known_since, last_execution),) = known_crontabs(modern_url)
    assert known_since >= before - timedelta(seconds=1) and last_execution is None
    # A minute may have turned while it ran: at most that one job, not a week of them.
    assert all(not job.payload["_cron"]["backfilled"] for job in cron_jobs(modern_url))


def test_a_cron_job_carries_its_minute_its_payload_and_its_options(modern_url: str) -> None:
    remember(modern_url, "report", "1 day", "3 minutes")
    items = parse_crontab("* * * * * do_it ?id=report&fill=2m&queue=reports&max=3&priority=5 {kind: 'daily', n: 1}")
    latest = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)

    async def scenario() -> None:
        runner = await run(modern_url, items)
        try:
            await backfilled_to(modern_url, "report", latest)
        finally:
            await runner.stop()

    asyncio.run(scenario())
    jobs = [job for job in cron_jobs(modern_url) if job.payload["_cron"]["backfilled"]]
    assert len(jobs) in (1, 2)  # the two minutes before the start; the last execution's own is taken
    for job in jobs:
        ts = job.payload["_cron"]["ts"]
        assert ts == job.run_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert job.payload == {"kind": "daily", "n": 1, "_cron": {"ts": ts, "backfilled": True}}
        assert (job.task, job.queue_name, job.max_attempts, job.priority, job.key) == ("do_it", "reports", 3, 5, None)


def test_cron_items_declared_on_the_app_are_run(modern_url: str) -> None:
    app = App(connection_string=modern_url)

    @app.task
    def nightly(payload: Any, helpers: Any) -> None:
        pass

    item = app.cron("0 3 * * *", "nightly", identifier="nightly_at_3", fill="1d", payload={"full": True})
    assert (item.identifier, item.fill, item.payload) == ("nightly_at_3", timedelta(days=1), {"full": True})
    with pytest.raises(kongtask.ConfigurationError, match="'nightly_at_3' is already declared"):
        app.cron("0 4 * * *", "nightly", identifier="nightly_at_3")
    with pytest.raises(kongtask.CrontabError, match="invalid time phrase"):
        app.cron("0 4 * * *", "nightly", fill="one day")

    async def scenario() -> None:
        runner = await app.run()
        await runner.stop()

    asyncio.run(scenario())
    assert [row[0] for row in known_crontabs(modern_url)] == ["nightly_at_3"]


def test_two_items_with_one_identifier_are_refused_before_any_connection() -> None:
    items = [CronItem(task="a", match="* * * * *"), CronItem(task="a", match="0 * * * *")]
    with pytest.raises(kongtask.ConfigurationError, match="two cron items have the identifier 'a'"):
        asyncio.run(kongtask.run(task_list={"a": other_task}, cron_items=items,
                                 connection_string="postgresql://nobody@127.0.0.1:1/none"))


def test_cron_on_the_v0_1_0_schema_is_one_line_naming_the_upgrade(migrated_url: str) -> None:
    with pytest.raises(kongtask.SchemaTooOld) as caught:
        asyncio.run(run(migrated_url, parse_crontab(CRONTAB_DO_IT)))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cron needs graphile-worker's 0.18 schema") and "kongtask migrate --to latest" in message


def test_run_once_does_not_run_cron(migrated_url: str, modern_url: str) -> None:
    # As upstream's runOnce: no cron, so no refusal on v0.1.0 and nothing registered on 0.18.
    for url in (migrated_url, modern_url):
        asyncio.run(kongtask.run_once(task_list={"other": other_task}, connection_string=url,
                                      cron_items=parse_crontab(CRONTAB_DO_IT)))
    assert known_crontabs(modern_url) == []
