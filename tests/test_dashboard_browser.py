"""The dashboard in a real browser: Debian's Chromium (``apt-get install chromium``), driven by
Playwright for Python, against the dashboard served by uvicorn and a real ``kongtask worker``.

Playwright cannot download its own browsers here, so it launches the system's. Outside CI these
tests skip, saying what is missing, when Playwright or Chromium is; under ``.ci/run`` (which sets
KONGTASK_CI=1 and installs Chromium) a missing browser fails them. ``KONGTASK_UPDATE_SCREENSHOTS=1``
makes the screenshot test write the README's picture, ``docs/dashboard.png``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

import kongtask
from kongtask.dashboard import Dashboard
from tests.cli_support import Background, clean_env, write_task
from tests.dashboard_support import ServedDashboard, lock_queue, modern

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"

FLAKY_TASK = """
def task(payload, helpers):
    # Fails its first attempt, with markup in the message; succeeds after.
    if helpers.job.attempts < 2:
        raise RuntimeError("card declined <b>51</b> <script>window.pwned = 1</script>")
"""


def _missing(what: str, how: str) -> None:
    if os.environ.get("KONGTASK_CI") == "1":
        pytest.fail(f"{what} is missing in CI: {how}")
    pytest.skip(f"needs {what}: {how}")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Where Debian's Chromium is; skips (fails, in CI) when it or Playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("Playwright for Python", "pip install -e '.[test]'")
    path = shutil.which("chromium")
    if path is None:
        _missing("Chromium", "apt-get install chromium (Debian's package; Playwright cannot download one here)")
    return str(path)


@contextlib.contextmanager
def launched(chromium: str) -> Iterator[Any]:
    """The browser, headless. Opened inside the test, after its database is ready: Playwright's sync
    API keeps an event loop in this thread while it runs, where the fixtures' asyncio.run() cannot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(params=["migrated_url", "modern_url"], ids=["v0.1.0", "0.18"])
def any_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


def _jobs_table(url: str) -> str:
    return "graphile_worker._private_jobs" if modern(url) else "graphile_worker.jobs"


def _state_of(url: str, job_id: int) -> tuple[int, int] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"select attempts, max_attempts from {_jobs_table(url)} where id = %s", (job_id,)).fetchone()
    return (row[0], row[1]) if row else None


def _worker(tmp_path: Path, url: str) -> Background:
    return Background("worker", "--poll-interval", "100", cwd=tmp_path, env=clean_env(DATABASE_URL=url))


def test_overview_filter_open_a_failed_job_retry_it_and_see_it_run(
    chromium: str, any_url: str, tmp_path: Path
) -> None:
    write_task(tmp_path / "tasks", "charge_card", body=FLAKY_TASK)
    job = kongtask.add_job_sync("charge_card", {"order": 7}, max_attempts=1, connection_string=any_url).id
    kongtask.add_job_sync("send_email", {"to": "ada@example.com"}, connection_string=any_url)  # no worker has it
    worker = _worker(tmp_path, any_url)
    try:
        worker.wait_until(lambda: _state_of(any_url, job) == (1, 1), "the job to fail its only attempt")
        dashboard = Dashboard(connection_string=any_url, refresh=1, sample_interval=1)
        with ServedDashboard(dashboard) as served, launched(chromium) as browser:
            page = browser.new_page()
            from playwright.sync_api import expect

            # The overview: one dead job of charge_card, one due job of send_email.
            page.goto(served.url)
            assert page.text_content("[data-testid=count-dead]") == "1"
            assert page.text_content("[data-testid=total]") == "2"
            page.evaluate("window.notReloaded = true")
            # It refreshes itself, in place: a job added now shows up without a reload.
            kongtask.add_job_sync("send_email", connection_string=any_url)
            expect(page.locator("[data-testid=total]")).to_have_text("3", timeout=15_000)
            assert page.evaluate("window.notReloaded") is True

            # The job list, filtered by task and state.
            page.click("nav >> text=Jobs")
            page.fill("input[name=task]", "charge_card")
            page.select_option("select[name=state]", "dead")
            page.click("button:has-text('Filter')")
            page.wait_for_url("**/jobs?*state=dead*")
            rows = page.locator("[data-testid=jobs] tbody tr")
            assert rows.count() == 1 and "charge_card" in rows.first.inner_text()

            # The failed job's page: its error, markup and all, as text.
            page.click(f"[data-testid=jobs] a:has-text('{job}')")
            error = page.text_content("[data-testid=last-error]") or ""
            assert "card declined <b>51</b> <script>window.pwned = 1</script>" in error
            assert page.evaluate("window.pwned") is None
            assert '"order": 7' in page.text_content("[data-testid=payload]")  # type: ignore[operator]

            # Retry: a confirmation first, then the job runs on the worker and leaves the page.
            page.click("text=Retry now…")
            assert "Make it due now, with one more attempt" in page.inner_text("main")
            page.click("[data-testid=confirm]")
            assert "is due now" in page.inner_text(".flash")
            page.evaluate("window.notReloaded = true")
            expect(page.locator("[data-testid=gone]")).to_be_visible(timeout=20_000)
            assert page.evaluate("window.notReloaded") is True
            assert _state_of(any_url, job) is None  # completed: deleted by the worker
            page.close()
    finally:
        worker.stop()


def test_a_script_in_a_payload_is_shown_as_text_and_never_runs(chromium: str, migrated_url: str) -> None:
    payload = {"html": "<img src=x onerror=\"window.pwned = 1\"><script>window.pwned = 2</script>"}
    job = kongtask.add_job_sync("<script>window.pwned = 3</script>", payload, connection_string=migrated_url).id
    with ServedDashboard(Dashboard(connection_string=migrated_url)) as served, launched(chromium) as browser:
        page = browser.new_page()
        for path in ("", "jobs", f"jobs/{job}", f"jobs/{job}/delete"):
            page.goto(served.url + path)
            assert page.evaluate("window.pwned") is None, path
        page.goto(served.url + f"jobs/{job}")
        assert "<script>window.pwned = 2</script>" in page.text_content("[data-testid=payload]")  # type: ignore[operator]
        assert page.locator("img").count() == 0
        page.close()


def test_the_screenshot_of_the_overview(chromium: str, migrated_url: str, tmp_path: Path) -> None:
    """A busy-looking queue: completions sampled while a worker drains, failures, a stale lock."""
    tasks = tmp_path / "tasks"
    write_task(tasks, "send_email", body="def task(payload, helpers):\n    pass\n")
    write_task(tasks, "charge_card", body="def task(payload, helpers):\n    raise RuntimeError('card declined (51)')\n")
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for n in range(400):
            kongtask.add_job_sync("send_email", {"to": f"user{n}@example.com"}, connection=conn,
                                  queue_name="emails" if n % 4 == 0 else None)
        for n in range(12):
            kongtask.add_job_sync("charge_card", {"order": n}, connection=conn, queue_name="billing" if n < 3 else None,
                                  max_attempts=1 if n % 3 == 0 else 25)
        for n in range(30):
            kongtask.add_job_sync("resize_image", {"image": n}, connection=conn, run_at=later)
        for n in range(5):
            kongtask.add_job_sync("rebuild_index", {"shard": n}, connection=conn, queue_name="search")
        for n in range(25):  # no worker here has this task: they stay due
            kongtask.add_job_sync("export_csv", {"report": n}, connection=conn, queue_name="exports" if n < 9 else None)
    lock_queue(migrated_url, "search", "worker-3f2a9c1b7e:pool")
    with ServedDashboard(Dashboard(connection_string=migrated_url, refresh=1, sample_interval=0.5)) as served:
        worker = _worker(tmp_path, migrated_url)
        try:
            worker.wait_until(lambda: _remaining(migrated_url, "send_email") == 0, "the emails to be sent")
        finally:
            worker.stop()
        with launched(chromium) as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(served.url)
            page.wait_for_function(  # a function, not a string: the page's CSP forbids eval
                "() => Number(document.querySelector('[data-testid=completed]')?.textContent) >= 400",
                timeout=30_000,
            )
            shot = page.screenshot(full_page=False)
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    if os.environ.get("KONGTASK_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.write_bytes(shot)


def _remaining(url: str, task: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("select count(*) from graphile_worker.jobs where task_identifier = %s",
                                (task,)).fetchone()[0])  # type: ignore[index]

