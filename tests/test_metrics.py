"""Prometheus metrics and health probes, served by the worker: scraped over HTTP from a real worker."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import kongtask
from kongtask import _metrics, _probes
from kongtask._embedded.server import EmbeddedServer
from tests import cli_support
from tests.support import add_job_to, query_rows, wait_until, wait_until_async

_SERVING = re.compile(r"serving metrics on (http://\S+)/metrics")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(url: str) -> tuple[int, str]:
    """GET ``url``: the status and the body, 503 included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base: str) -> Samples:
    """``/metrics`` as ``{(sample name, labels): value}``."""
    status, text = fetch(base + "/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def served_urls(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m.group(1) for r in caplog.records if (m := _SERVING.search(r.getMessage()))]


async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """HTTP from a thread: the server asks the loop, which must stay free to answer."""
    return await asyncio.to_thread(fn, *args)


async def scrape_until(base: str, wanted: Callable[[Samples], bool], what: str, timeout: float = 10) -> Samples:
    """Scrapes (off the loop) until ``wanted`` holds of the samples; returns those."""

    def attempt() -> Samples | None:
        samples = scrape(base)
        return samples if wanted(samples) else None

    result: Samples = await wait_until_async(lambda: off_loop(attempt), timeout=timeout, what=what)
    return result


def ok(payload: Any, helpers: Any) -> None:
    pass


def boom(payload: Any, helpers: Any) -> None:
    raise ValueError("boom")


def run_with_metrics(url: str, scenario: Callable[[kongtask.Runner, str], Awaitable[None]],
                     caplog: pytest.LogCaptureFixture, **options: Any) -> None:
    caplog.set_level(logging.INFO, logger="kongtask.metrics")

    async def main() -> None:
        runner = await kongtask.run(task_list={"ok": ok, "boom": boom}, connection_string=url, metrics_port=0,
                                    **options)
        try:
            [base] = served_urls(caplog)
            await scenario(runner, base)
        finally:
            await runner.stop()
        # The runner frees the port before its wait() returns.
        with pytest.raises(OSError):
            await off_loop(urllib.request.urlopen, base + "/healthz", 2)

    asyncio.run(main())


def test_counters_and_histograms_count_the_jobs_this_worker_ran_by_task(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(runner: kongtask.Runner, base: str) -> None:
        for _ in range(3):
            await add_job_to(migrated_url, "ok")
        await add_job_to(migrated_url, "boom", max_attempts=1)  # fails for good
        await add_job_to(migrated_url, "boom", max_attempts=5)  # fails, to be retried in e^1 s
        samples = await scrape_until(
            base, lambda s: value(s, "kongtask_jobs_failed_total", task="boom") == 2
            and value(s, "kongtask_jobs_completed_total", task="ok") == 3,
            what="both boom jobs to fail and the ok jobs to complete",
        )
        assert value(samples, "kongtask_jobs_started_total", task="ok") == 3
        assert value(samples, "kongtask_jobs_failed_total", task="ok") == 0
        assert value(samples, "kongtask_jobs_started_total", task="boom") == 2
        assert value(samples, "kongtask_jobs_completed_total", task="boom") == 0
        assert value(samples, "kongtask_jobs_permanently_failed_total", task="boom") == 1
        assert value(samples, "kongtask_job_duration_seconds_count", task="ok") == 3
        assert value(samples, "kongtask_job_duration_seconds_count", task="boom") == 2
        assert value(samples, "kongtask_job_queue_lag_seconds_count", task="ok") == 3
        lag = value(samples, "kongtask_job_queue_lag_seconds_sum", task="ok")
        assert lag is not None and 0 <= lag < 30
        info = {dict(labels)["worker_id"]: dict(labels) for (name, labels), _ in samples.items()
                if name == "kongtask_worker_info"}
        assert info == {runner.worker_ids[0]: {
            "version": kongtask.__version__, "generation": "v0.1.0", "schema": "graphile_worker",
            "worker_id": runner.worker_ids[0],
        }}
        assert value(samples, "kongtask_worker_concurrency") == 2
        assert value(samples, "kongtask_database_outages_total") == 0
        assert value(samples, "process_cpu_seconds_total") is not None

    # A long poll: the boom job that is retried in e^1 s stays put until the asserts are done.
    run_with_metrics(migrated_url, scenario, caplog, concurrency=2, poll_interval=60)


#: Per schema generation: the database fixture, and SQL that makes the "boom" jobs dead and locks
#: the queue "held" under another worker.
GENERATIONS = {
    "v0.1.0": ("migrated_url",
               "update graphile_worker.jobs set attempts = max_attempts where task_identifier = 'boom'",
               "update graphile_worker.job_queues set locked_by = 'someone', locked_at = now() "
               "where queue_name = 'held'"),
    "0.18": ("modern_url",
             "update graphile_worker._private_jobs set attempts = max_attempts "
             "where task_id = (select id from graphile_worker._private_tasks where identifier = 'boom')",
             "update graphile_worker._private_job_queues set locked_by = 'someone', locked_at = now() "
             "where queue_name = 'held'"),
}


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_job_gauges_count_the_databases_jobs_by_task_and_state_at_most_every_15_seconds(
    generation: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    fixture, kill_boom, lock_held = GENERATIONS[generation]
    url: str = request.getfixturevalue(fixture)
    later = datetime.now(timezone.utc) + timedelta(hours=1)

    async def scenario(runner: kongtask.Runner, base: str) -> None:
        # Jobs that stay as they are while the worker runs: for a task it lacks, scheduled, dead, locked.
        for _ in range(2):
            await add_job_to(url, "elsewhere")
        await add_job_to(url, "ok", run_at=later)
        await add_job_to(url, "ok", queue_name="held", run_at=later)
        await add_job_to(url, "boom", run_at=later)
        execute(url, kill_boom)
        execute(url, lock_held)
        await add_job_to(url, "ok", queue_name="held")  # due, but behind the queue's lock
        samples = await off_loop(scrape, base)
        gauges = {(dict(labels)["task"], dict(labels)["state"]): v for (name, labels), v in samples.items()
                  if name == "kongtask_jobs"}
        assert gauges == {
            ("ok", "due"): 0, ("ok", "scheduled"): 1, ("ok", "locked"): 2, ("ok", "dead"): 0,
            ("boom", "due"): 0, ("boom", "scheduled"): 0, ("boom", "locked"): 0, ("boom", "dead"): 1,
            ("elsewhere", "due"): 2, ("elsewhere", "scheduled"): 0, ("elsewhere", "locked"): 0,
            ("elsewhere", "dead"): 0,
        }
        assert {dict(labels)["generation"] for name, labels in samples if name == "kongtask_worker_info"} == {
            generation}
        took = value(samples, "kongtask_jobs_count_duration_seconds")
        assert took is not None and took > 0
        # Scrapes within 15 s get the same count: the database is not asked again.
        await add_job_to(url, "elsewhere")
        for _ in range(5):
            again = await off_loop(scrape, base)
            assert value(again, "kongtask_jobs", task="elsewhere", state="due") == 2
            assert value(again, "kongtask_jobs_count_duration_seconds") == took

    run_with_metrics(url, scenario, caplog)


def test_job_gauges_follow_the_database_once_the_interval_has_passed(
    migrated_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_metrics, "JOB_COUNTS_EVERY_S", 0.2)

    async def scenario(runner: kongtask.Runner, base: str) -> None:
        samples = await off_loop(scrape, base)
        assert value(samples, "kongtask_jobs", task="elsewhere", state="due") is None
        await add_job_to(migrated_url, "elsewhere")
        await scrape_until(base, lambda s: value(s, "kongtask_jobs", task="elsewhere", state="due") == 1,
                           what="the gauge to count the new job")

    run_with_metrics(migrated_url, scenario, caplog)


def test_two_runners_in_one_process_keep_their_metrics_apart(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kongtask.metrics")

    async def main() -> None:
        first = await kongtask.run(task_list={"ok": ok}, connection_string=migrated_url, metrics_port=0)
        second = await kongtask.run(task_list={"ok": ok}, connection_string=migrated_url, metrics_port=0)
        try:
            bases = served_urls(caplog)
            assert len(set(bases)) == 2
            for _ in range(20):
                await add_job_to(migrated_url, "ok")

            def completed() -> list[float]:
                return [value(scrape(b), "kongtask_jobs_completed_total", task="ok") or 0 for b in bases]

            await wait_until_async(lambda: off_loop(lambda: sum(completed()) == 20), what="20 jobs between the two")
            ids = {dict(labels)["worker_id"] for b in bases for (name, labels) in (await off_loop(scrape, b))
                   if name == "kongtask_worker_info"}
            assert ids == {first.worker_ids[0], second.worker_ids[0]}
        finally:
            await asyncio.gather(first.stop(), second.stop())

    asyncio.run(main())


def test_probes_answer_200_while_the_loop_runs_and_the_database_answers(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(runner: kongtask.Runner, base: str) -> None:
        assert await off_loop(fetch, base + "/healthz") == (200, "ok\n")
        assert await off_loop(fetch, base + "/readyz") == (200, "ok\n")
        status, body = await off_loop(fetch, base + "/other")
        assert status == 404 and "/metrics, /healthz and /readyz" in body

    run_with_metrics(migrated_url, scenario, caplog)


def test_healthz_is_503_while_the_event_loop_is_stuck(
    migrated_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_probes, "LOOP_BEAT_S", 0.05)
    monkeypatch.setattr(_probes, "LOOP_STALL_S", 1.0)
    hogging, unblock = threading.Event(), threading.Event()
    seen: list[tuple[int, str]] = []

    async def hog(payload: Any, helpers: Any) -> None:
        hogging.set()
        unblock.wait(15)  # blocks the event loop: what a careless async task does

    async def main() -> None:
        caplog.set_level(logging.INFO, logger="kongtask.metrics")
        runner = await kongtask.run(task_list={"hog": hog}, connection_string=migrated_url, metrics_port=0)
        try:
            [base] = served_urls(caplog)

            def probe_until_stuck() -> None:
                try:
                    hogging.wait(10)
                    seen.append(wait_until(lambda: (r := fetch(base + "/healthz"))[0] == 503 and r, what="a 503"))
                finally:
                    unblock.set()

            prober = threading.Thread(target=probe_until_stuck, daemon=True)
            prober.start()
            await add_job_to(migrated_url, "hog")
            await off_loop(prober.join, 15)
            # Alive again once the heartbeat, overdue, has had its turn.
            await wait_until_async(lambda: off_loop(lambda: fetch(base + "/healthz") == (200, "ok\n")),
                                   what="/healthz to say 200 again")
        finally:
            unblock.set()
            await runner.stop()

    asyncio.run(main())
    [(status, body)] = seen
    assert status == 503 and body.startswith("stuck: the event loop has not run for")


def test_readyz_is_503_while_the_database_is_down_and_outages_are_counted(
    private_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_server.start()

    async def scenario(runner: kongtask.Runner, base: str) -> None:
        assert await off_loop(fetch, base + "/readyz") == (200, "ok\n")
        await asyncio.to_thread(private_server.stop)
        _, body = await wait_until_async(
            lambda: off_loop(lambda: (r := fetch(base + "/readyz"))[0] == 503 and r), what="/readyz to say 503",
        )
        assert body.startswith("not ready: ") and "\n" not in body.rstrip("\n")
        assert await off_loop(fetch, base + "/healthz") == (200, "ok\n")  # alive: waiting, not stuck
        await scrape_until(base, lambda s: (value(s, "kongtask_database_outages_total") or 0) >= 1,
                           what="the outage to be counted")
        await asyncio.to_thread(private_server.start)
        await wait_until_async(lambda: off_loop(lambda: fetch(base + "/readyz") == (200, "ok\n")), timeout=30,
                               what="/readyz to say 200 again")
        # Connections the restart left broken may each look like a short outage of their own.
        await scrape_until(
            base, lambda s: (value(s, "kongtask_database_reconnects_total") or 0) >= 1
            and value(s, "kongtask_database_reconnects_total") == value(s, "kongtask_database_outages_total"),
            timeout=30, what="as many reconnects as outages")

    run_with_metrics(url, scenario, caplog)


def test_readyz_is_503_when_the_database_no_longer_holds_the_schema(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(runner: kongtask.Runner, base: str) -> None:
        execute(migrated_url, "alter table graphile_worker.migrations rename to migrations_gone")
        try:
            _, body = await wait_until_async(
                lambda: off_loop(lambda: (r := fetch(base + "/readyz"))[0] == 503 and r), what="/readyz 503")
            assert "no kongtask schema named 'graphile_worker'" in body
        finally:
            execute(migrated_url, "alter table graphile_worker.migrations_gone rename to migrations")

    run_with_metrics(migrated_url, scenario, caplog)


# --- the command line --------------------------------------------------------------------------


def test_the_worker_command_serves_metrics_and_probes_until_it_stops(project: Path, migrated_url: str) -> None:
    cli_support.write_task(project / "tasks", "fails", body="def task(payload, helpers):\n    raise ValueError('no')\n")
    env = cli_support.clean_env(DATABASE_URL=migrated_url, KT_TEST_OUT=str(project / "out"))
    worker = cli_support.Background("worker", "--metrics-port", "0", "--jobs", "2", cwd=project, env=env)
    try:
        output = worker.wait_for("worker started")
        [base] = _SERVING.findall(output)
        assert fetch(base + "/healthz") == (200, "ok\n")
        assert fetch(base + "/readyz") == (200, "ok\n")
        asyncio.run(add_job_to(migrated_url, "record", {"n": 1}))
        asyncio.run(add_job_to(migrated_url, "fails", max_attempts=1))
        # Both released: counted already (before the release), and the first scrape counts the jobs now.
        worker.wait_until(lambda: cli_support.runs(project / "out") and query_rows(
            migrated_url, "select count(*) from graphile_worker.jobs where attempts = max_attempts and "
            "last_error is not null and task_identifier = 'fails'")[0][0] == 1, what="both jobs released")
        samples = scrape(base)
        assert value(samples, "kongtask_jobs_started_total", task="record") == 1
        assert value(samples, "kongtask_jobs_completed_total", task="record") == 1
        assert value(samples, "kongtask_jobs_permanently_failed_total", task="fails") == 1
        assert value(samples, "kongtask_jobs", task="fails", state="dead") == 1
        assert value(samples, "kongtask_jobs", task="record", state="due") == 0
    finally:
        code = worker.stop()
    assert code == 0, worker.output()
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/healthz", timeout=2)


def test_a_metrics_port_in_use_is_one_line_and_a_failure_before_any_connection(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = cli_support.kongtask("worker", "--metrics-port", str(port), cwd=project,
                                      env=cli_support.clean_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"))
    assert result.returncode == 1
    assert cli_support.one_line(result.stderr) == (
        f"kongtask: error: cannot serve metrics on 127.0.0.1:{port}: the port is in use by another process; "
        "choose another metrics port, or stop that process"
    )
    assert time.monotonic() - started < 20  # not after waiting for the (absent) database


def test_watch_and_a_metrics_port_are_a_usage_error(project: Path) -> None:
    result = cli_support.kongtask("worker", "--watch", cwd=project,
                                  env=cli_support.clean_env(KONGTASK_METRICS_PORT="9464",
                                                            DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"))
    assert result.returncode == 2
    assert "--watch and a metrics port (KONGTASK_METRICS_PORT) cannot be used together" in cli_support.one_line(
        result.stderr)
