"""The dashboard's pages and actions, on real PostgreSQL, on both schema generations: requests go
straight to its ASGI app (the browser tests go through a real server and Chromium)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

import kongtask
from kongtask._schema import held_by
from kongtask.dashboard import Dashboard, _data
from kongtask.dashboard._security import authorized, host_allowed, is_loopback, same_origin
from tests.dashboard_support import AsgiClient, Reply, fail_jobs, lock_queue, modern
from tests.support import wait_until_async

TOKEN = "a-token-of-twenty-chars"


@pytest.fixture(params=["migrated_url", "modern_url"], ids=["v0.1.0", "0.18"])
def any_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each schema generation in turn."""
    return str(request.getfixturevalue(request.param))


def with_app(url: str, test: Callable[[AsgiClient], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with Dashboard(connection_string=url, **options) as app:
            await test(AsgiClient(app))

    asyncio.run(main())


async def add(url: str, task: str, payload: Any = None, **options: Any) -> int:
    return (await kongtask.add_job(task, payload, connection_string=url, **options)).id


def jobs_table(url: str) -> str:
    return "graphile_worker._private_jobs" if modern(url) else "graphile_worker.jobs"


def row_of(url: str, job_id: int) -> tuple[Any, ...] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            f"select run_at, priority, attempts, max_attempts from {jobs_table(url)} where id = %s", (job_id,)
        ).fetchone()


def listed_ids(reply: Reply) -> list[int]:
    return [int(i) for i in re.findall(r'<td class="num"><a href="/jobs/(\d+)">', reply.body)]


# --- the overview ------------------------------------------------------------------------------------


async def _every_state(url: str) -> dict[str, int]:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    ids = {
        "due": await add(url, "send_email"),
        "scheduled": await add(url, "send_email", run_at=later),
        "failed": await add(url, "charge_card"),
        "dead": await add(url, "resize", max_attempts=1),
        "locked": await add(url, "import", queue_name="imports"),
        "waiting": await add(url, "import", queue_name="imports"),
    }
    await fail_jobs(url, "charge_card", "card declined")
    await fail_jobs(url, "resize", "out of memory")
    lock_queue(url, "imports", "worker-dead-000001")
    return ids


def test_the_overview_counts_each_state_per_task_and_named_queue(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        await _every_state(any_url)
        async with await psycopg.AsyncConnection.connect(any_url, autocommit=True) as conn:
            database = await held_by(conn, "graphile_worker")
            counts = await _data.count_jobs(conn, database, timeout=30)
        assert not counts.estimated and counts.total == 6 and counts.failed_lately == 2
        # v0.1.0 locks the queue, and so both its jobs; 0.18 locks the running job alone.
        assert counts.states == {"locked": 1 if modern(any_url) else 2, "dead": 1, "failed": 1, "scheduled": 1,
                                 "due": 2 if modern(any_url) else 1}
        by_task = {t.name: t.states for t in counts.tasks}
        assert by_task["send_email"] == {"due": 1, "scheduled": 1}
        assert by_task["charge_card"] == {"failed": 1} and by_task["resize"] == {"dead": 1}
        assert by_task["import"] == ({"locked": 1, "due": 1} if modern(any_url) else {"locked": 2})
        assert [(q.name, q.total) for q in counts.queues] == [("imports", 2)]  # jobs without a queue: none

        page = await client.get("/")
        assert page.status == 200
        assert 'data-testid="count-dead">1<' in page.body and 'data-testid="count-failed">1<' in page.body
        assert 'data-testid="total">6<' in page.body and 'data-testid="failed-lately">2<' in page.body
        assert "worker-dead-000001" in page.body and "/workers/unlock?worker=worker-dead-000001" in page.body
        assert "graphile-worker " + ("0.18" if modern(any_url) else "v0.1.0") + " schema" in page.body

    with_app(any_url, check)


def test_counting_that_takes_too_long_shows_the_planners_estimates(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        for _ in range(3):
            await add(any_url, "send_email")
        with psycopg.connect(any_url, autocommit=True) as blocker:
            blocker.execute(f"analyze {jobs_table(any_url)}")
            blocker.execute("begin")
            blocker.execute(f"lock table {jobs_table(any_url)} in access exclusive mode")  # counting must wait
            page = await client.get("/")
            blocker.execute("rollback")
        assert page.status == 200, page.body
        assert "PostgreSQL&#39;s estimates" in page.body or "PostgreSQL's estimates" in page.body
        assert 'data-testid="total">3<' in page.body and "~3" in page.body and 'data-testid="count-due">?<' in page.body

    with_app(any_url, check, count_timeout=0.3)


def test_counts_are_cached_and_an_action_counts_afresh(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        job = await add(migrated_url, "send_email")
        assert 'data-testid="total">1<' in (await client.get("/")).body
        await add(migrated_url, "send_email")
        assert 'data-testid="total">1<' in (await client.get("/")).body  # cached for the refresh interval
        assert (await client.confirm(f"/jobs/{job}/delete")).status == 303
        assert 'data-testid="total">1<' in (await client.get("/")).body  # counted again: one deleted, one added

    with_app(migrated_url, check, refresh=3600)


def test_throughput_is_the_jobs_deleted_while_the_dashboard_runs(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        await wait_until_async(lambda: client.app.throughput.rates() is not None, what="two samples")
        for _ in range(5):
            await add(migrated_url, "send_email")
        await kongtask.run_once(task_list={"send_email": lambda payload, helpers: None}, connection_string=migrated_url)

        def five_completed() -> bool:
            rates = client.app.throughput.rates()
            return rates is not None and rates.completed == 5 and rates.added == 5 and sum(rates.per_minute) == 5

        # PostgreSQL publishes a session's counts within about ten seconds of its going idle.
        await wait_until_async(five_completed, timeout=30, what="5 completions sampled")
        page = await client.get("/")
        assert 'data-testid="completed">5<' in page.body and "5 added" in page.body

    with_app(migrated_url, check, sample_interval=0.2)


def test_throughput_starts_again_when_statistics_are_reset() -> None:
    throughput = _data.Throughput()
    throughput.record(_data.TableStats(10, 5, 0), now=0)
    throughput.record(_data.TableStats(20, 9, 0), now=30)
    assert throughput.rates(now=30) == _data.Rates(minutes=0.5, added=10, completed=4, per_minute=[0] * 59 + [4])
    throughput.record(_data.TableStats(1, 0, 0), now=60)  # pg_stat_reset()
    assert throughput.rates(now=60) is None
    throughput.record(_data.TableStats(3, 2, 0), now=4000)
    throughput.record(_data.TableStats(4, 3, 0), now=7700)  # more than an hour later: the first goes
    rates = throughput.rates(now=7700)
    assert rates is not None and rates.completed == 1


# --- the job list ---------------------------------------------------------------------------------


def test_the_job_list_pages_by_keyset_newest_first(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        ids = [await add(any_url, "send_email", {"n": n}) for n in range(120)]
        first = await client.get("/jobs")
        assert listed_ids(first) == ids[::-1][:50]
        older = re.search(r'href="(/jobs\?[^"]+)" rel="next"', first.body)
        assert older and "before=" in older[1] and "offset" not in first.body
        second = await client.get("/jobs", older[1].split("?", 1)[1].replace("&amp;", "&"))
        assert listed_ids(second) == ids[::-1][50:100]
        third = await client.get("/jobs", f"before={ids[20]}")
        assert listed_ids(third) == ids[:20][::-1] and 'rel="next"' not in third.body
        newer = re.search(r'href="(/jobs\?[^"]+)" rel="prev"', third.body)
        assert newer is not None
        back = await client.get("/jobs", newer[1].split("?", 1)[1].replace("&amp;", "&"))
        assert listed_ids(back) == ids[::-1][50:100]

    with_app(any_url, check)


def test_the_job_list_filters_by_task_queue_state_and_error_text(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        ids = await _every_state(any_url)
        email = await add(any_url, "send_email", queue_name="mail")
        await add(any_url, "percent")
        await fail_jobs(any_url, "percent", "disk 100% full_now")

        async def listed(query: str) -> set[int]:
            reply = await client.get("/jobs", query)
            assert reply.status == 200, reply.body
            return set(listed_ids(reply))

        assert await listed("task=send_email") == {ids["due"], ids["scheduled"], email}
        assert await listed("queue=imports") == {ids["locked"], ids["waiting"]}
        assert await listed("state=dead") == {ids["dead"]}
        assert await listed("state=scheduled") == {ids["scheduled"]}
        assert ids["failed"] in await listed("state=failed")
        assert await listed("error=DECLINED") == {ids["failed"]}
        assert await listed("error=100%25") != set() and await listed("error=1%250") == set()  # % is literal
        assert await listed("error=l_n") != set() and await listed("error=ful_") == set()  # so is _
        assert await listed("task=send_email&queue=mail&state=due") == {email}
        # A job without a queue shows none (v0.1.0 gives it a uuid-named queue of its own).
        row = re.search(rf'<a href="/jobs/{ids["due"]}">{ids["due"]}</a></td>\s*<td>send_email</td>\s*<td>(.*?)</td>',
                        (await client.get("/jobs", "task=send_email")).body)
        assert row is not None and row[1] == ""
        assert (await client.get("/jobs", "state=stuck")).status == 400
        assert (await client.get("/jobs", "before=abc")).status == 400

    with_app(any_url, check)


# --- one job --------------------------------------------------------------------------------------


def test_the_job_page_shows_payload_attempts_run_at_and_last_error(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        ids = await _every_state(any_url)
        page = await client.get(f"/jobs/{ids['failed']}")
        assert page.status == 200
        assert "charge_card" in page.body and "card declined" in page.body and "1 of 25" in page.body
        assert re.search(r"run at</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page.body)
        job = await add(any_url, "send_email", {"to": "ada@example.com", "n": [1, 2]})
        page = await client.get(f"/jobs/{job}")
        assert "&#34;to&#34;: &#34;ada@example.com&#34;" in page.body
        gone = await client.get("/jobs/999999")
        assert gone.status == 404 and "completed, or it was deleted" in gone.body

    with_app(any_url, check)


def test_a_run_at_python_cannot_hold_is_shown_as_postgresql_writes_it(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        job = await add(migrated_url, "send_email")
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            conn.execute("update graphile_worker.jobs set run_at = 'infinity' where id = %s", (job,))
        assert "infinity" in (await client.get(f"/jobs/{job}")).body
        assert "infinity" in (await client.get("/jobs")).body

    with_app(migrated_url, check)


def test_user_data_is_shown_as_text_never_as_html(any_url: str) -> None:
    script = "<script>alert(1)</script>"

    async def check(client: AsgiClient) -> None:
        job = await add(any_url, "<img src=x onerror=alert(2)>", {"html": script}, queue_name="<b>q</b>")
        await fail_jobs(any_url, "<img src=x onerror=alert(2)>", f"boom {script}")
        pages = [await client.get("/"), await client.get("/jobs"), await client.get(f"/jobs/{job}"),
                 await client.get(f"/jobs/{job}/retry"), await client.get("/jobs", "task=%3Cb%3E&error=%3Cscript")]
        for page in pages:
            assert page.status == 200, page.body
            assert "<script>alert" not in page.body and "<img src=x" not in page.body and "<b>q" not in page.body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2].body
        assert "&lt;img src=x onerror=alert(2)&gt;" in pages[1].body

    with_app(any_url, check)


# --- actions ----------------------------------------------------------------------------------------


def test_retry_delete_reschedule_and_unlock_each_after_a_confirmation(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        ids = await _every_state(any_url)
        asked = await client.get(f"/jobs/{ids['dead']}/retry")
        assert "Make it due now" in asked.body and "attempts are used up" in asked.body
        assert row_of(any_url, ids["dead"])[3] == 1  # type: ignore[index]  # asking changes nothing

        done = await client.confirm(f"/jobs/{ids['dead']}/retry")
        assert done.status == 303 and done.headers["location"] == f"/jobs/{ids['dead']}?done=retried&n={ids['dead']}"
        run_at, _, attempts, max_attempts = row_of(any_url, ids["dead"])  # type: ignore[misc]
        assert max_attempts == attempts + 1 and run_at <= datetime.now(timezone.utc)
        assert "is due now" in (await client.get(f"/jobs/{ids['dead']}", f"done=retried&n={ids['dead']}")).body

        done = await client.confirm(f"/jobs/{ids['scheduled']}/reschedule", "run_at=2031-02-03T04:05&priority=-7")
        assert done.status == 303
        run_at, priority, _, _ = row_of(any_url, ids["scheduled"])  # type: ignore[misc]
        assert (run_at, priority) == (datetime(2031, 2, 3, 4, 5, tzinfo=timezone.utc), -7)
        done = await client.confirm(f"/jobs/{ids['scheduled']}/reschedule", "priority=5")
        assert row_of(any_url, ids["scheduled"])[:2] == (run_at, 5)  # type: ignore[index]
        assert (await client.get(f"/jobs/{ids['scheduled']}/reschedule")).status == 400  # nothing to change
        assert (await client.get(f"/jobs/{ids['scheduled']}/reschedule", "priority=40000")).status == 400

        done = await client.confirm(f"/jobs/{ids['failed']}/delete")
        assert done.status == 303 and done.headers["location"].startswith("/jobs?done=deleted")
        assert row_of(any_url, ids["failed"]) is None

        asked = await client.get("/workers/unlock", "worker=worker-dead-000001")
        assert "worker-dead-000001" in asked.body and "1 queue(s)" in asked.body
        done = await client.confirm("/workers/unlock", "worker=worker-dead-000001")
        assert done.status == 303 and done.headers["location"] == "/?done=unlocked&n=1"
        assert "worker-dead-000001" not in (await client.get("/")).body

    with_app(any_url, check)


def test_a_running_job_is_not_changed_and_the_page_says_so(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        job = await add(any_url, "import", queue_name="imports")
        lock_queue(any_url, "imports", "worker-alive-00001")  # the admin functions skip running jobs
        done = await client.confirm(f"/jobs/{job}/delete")
        assert done.headers["location"] == f"/jobs/{job}?done=unchanged&n={job}"
        assert row_of(any_url, job) is not None
        assert "was not changed: it is running now" in (await client.get(f"/jobs/{job}", f"done=unchanged&n={job}")).body

    with_app(any_url, check)


def test_an_action_needs_its_own_csrf_token_and_a_same_site_origin(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        job = await add(migrated_url, "send_email")
        other = await add(migrated_url, "send_email")
        post = client.request
        assert (await post("POST", f"/jobs/{job}/delete", form={})).status == 403
        assert (await post("POST", f"/jobs/{job}/delete", form={"csrf": "0" * 64})).status == 403
        other_form = await client.get(f"/jobs/{other}/delete")
        token = re.search(r'name="csrf" value="([0-9a-f]{64})"', other_form.body)
        assert token is not None
        # A token is good for its own action only: the form to delete one job deletes no other.
        assert (await post("POST", f"/jobs/{job}/delete", form={"csrf": token[1]})).status == 403
        assert (await post("POST", f"/jobs/{job}/retry", form={"csrf": token[1]})).status == 403
        cross_site = await client.confirm(f"/jobs/{other}/delete", origin="https://evil.example")
        assert cross_site.status == 403 and "another site" in cross_site.body
        fetched = await client.confirm(f"/jobs/{other}/delete", **{"sec-fetch-site": "cross-site"})
        assert fetched.status == 403
        assert (await post("GET", f"/jobs/{job}/delete")).status == 200  # GET only asks
        assert (await post("POST", "/jobs", form={})).status == 405
        assert (await post("PUT", f"/jobs/{job}/delete")).status == 405
        assert row_of(migrated_url, job) is not None and row_of(migrated_url, other) is not None
        assert (await client.confirm(f"/jobs/{other}/delete")).status == 303
        assert row_of(migrated_url, other) is None

    with_app(migrated_url, check)


def test_read_only_shows_no_actions_and_refuses_them(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        job = await add(migrated_url, "send_email")
        lock_queue(migrated_url, (await _queue_of(migrated_url, job)), "worker-x-00000001")
        for path in ("/", f"/jobs/{job}"):
            page = await client.get(path)
            assert page.status == 200 and "read-only" in page.body
            assert "Retry now" not in page.body and "Unlock" not in page.body and "Delete" not in page.body
        assert (await client.get(f"/jobs/{job}/delete")).status == 403
        assert (await client.request("POST", f"/jobs/{job}/delete", form={"csrf": "x"})).status == 403
        assert (await client.get("/workers/unlock", "worker=worker-x-00000001")).status == 403
        assert row_of(migrated_url, job) is not None

    with_app(migrated_url, check, read_only=True)


async def _queue_of(url: str, job_id: int) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("select queue_name from graphile_worker.jobs where id = %s", (job_id,))
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


# --- who may ask ------------------------------------------------------------------------------------


def test_a_token_is_asked_of_every_request_when_set(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        for path in ("/", "/jobs", "/static/dashboard.js"):
            refused = await client.get(path)
            assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Basic realm=")
        wrong = "Basic " + base64.b64encode(b"admin:wrong-token-of-twenty").decode()
        assert (await client.get("/", authorization=wrong)).status == 401
        right = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        assert (await client.get("/", authorization=right)).status == 200
        assert (await client.get("/", authorization=f"Bearer {TOKEN}")).status == 200
        # With a token, any host name: it may sit behind a proxy of any name.
        assert (await client.get("/", authorization=f"Bearer {TOKEN}", host="jobs.example.com")).status == 200

    with_app(migrated_url, check, token=TOKEN)


def test_without_a_token_only_loopback_host_names_are_answered(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "localhost"):
            assert (await client.get("/", host=host)).status == 200, host
        for host in ("evil.example:8000", "192.168.1.5:8000", ""):
            # A page whose name was rebound to 127.0.0.1 (DNS rebinding) gets nothing.
            assert (await client.get("/", host=host)).status == 400, host

    with_app(migrated_url, check)


def test_every_response_carries_the_security_headers(migrated_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        for path in ("/", "/jobs", "/jobs/1", "/static/dashboard.css", "/nowhere"):
            headers = (await client.get(path)).headers
            assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in \
                headers["content-security-policy"], path
            assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
            assert headers["cache-control"] == "no-store"

    with_app(migrated_url, check)


def test_the_database_password_is_never_shown(migrated_url: str) -> None:
    # Whether or not the server checks passwords, the page names the database, never the password.
    with_password = make_conninfo(migrated_url, password="s3cret-Pa55word")

    async def check(client: AsgiClient) -> None:
        await add(migrated_url, "send_email")
        for path in ("/", "/jobs", "/jobs/1"):
            page = await client.get(path)
            assert "s3cret" not in page.body and "Pa55word" not in page.body, path

    with_app(with_password, check)


def test_an_unreachable_database_is_one_line_on_the_page() -> None:
    async def check(client: AsgiClient) -> None:
        page = await client.get("/")
        assert page.status == 503
        problem = re.search(r'<p class="problem" data-testid="problem">([^<]*)</p>', page.body)
        assert problem and "127.0.0.1:1" in problem[1] and "\n" not in problem[1] and "nobody-pw" not in page.body

    with_app("postgresql://nobody:nobody-pw@127.0.0.1:1/nothing", check)


def test_the_refresh_gets_only_the_live_part_of_the_page(any_url: str) -> None:
    async def check(client: AsgiClient) -> None:
        ids = await _every_state(any_url)
        for path, shown in (("/", "send_email"), ("/jobs", "charge_card"), (f"/jobs/{ids['failed']}", "card declined")):
            full = await client.get(path)
            part = await client.get(path, **{"x-kongtask-refresh": "1"})
            assert full.body.startswith("<!doctype html>") and 'id="live" data-refresh="5.0"' in full.body
            assert part.status == 200 and shown in part.body, part.body
            assert "<html" not in part.body and "<form" not in part.body and "<h1>" not in part.body
        gone = await client.get("/jobs/999999", **{"x-kongtask-refresh": "1"})
        assert gone.status == 404 and 'data-testid="gone"' in gone.body and "<html" not in gone.body
        assert (await client.get("/static/dashboard.js")).headers["content-type"].startswith("text/javascript")

    with_app(any_url, check)


def test_an_applications_own_pool_and_mount_point(migrated_url: str) -> None:
    async def main() -> None:
        job = await add(migrated_url, "send_email")
        pool = AsyncConnectionPool(migrated_url, kwargs={"autocommit": True}, open=False)
        await pool.open()
        try:
            async with Dashboard(pool=pool) as app:
                client = AsgiClient(app, root="/ops/queue")
                page = await client.get("/jobs")
                assert page.status == 200 and f'href="/ops/queue/jobs/{job}"' in page.body
                assert 'href="/ops/queue/static/dashboard.css"' in page.body
                done = await client.confirm(f"/jobs/{job}/retry")
                assert done.status == 303 and done.headers["location"].startswith(f"/ops/queue/jobs/{job}?")
            assert not pool.closed  # the application's pool stays open for the application
        finally:
            await pool.close()

    asyncio.run(main())


# --- the pure checks -----------------------------------------------------------------------------


def test_loopback_and_origin_checks() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "app.localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.1", "example.com", "localhost.example.com"]))
    assert host_allowed("127.0.0.1:8000", True) and not host_allowed("127.0.0.1.nip.io:8000", True)
    assert host_allowed("anything", False) and not host_allowed(None, True)
    assert same_origin({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, "http")
    assert not same_origin({"host": "127.0.0.1:8000", "origin": "null"}, "http")
    assert same_origin({"host": "h"}, "http")  # curl: judged by its form token alone
    assert authorized(None, None) and not authorized(None, TOKEN) and not authorized("Basic !!", TOKEN)
    assert not authorized("Digest x", TOKEN) and authorized("bearer " + TOKEN, TOKEN)
