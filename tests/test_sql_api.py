"""The SQL API semantics of the v0.1.0 contract, through SQL and through kongtask._schema.jobs."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from kongtask._schema import jobs
from kongtask.errors import PayloadError
from tests.support import wait_until

S = "graphile_worker"
WORKER = "worker-test-0000001"


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def test_jobs_are_fetched_by_priority_then_run_at_then_id(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        past = datetime.now(timezone.utc) - timedelta(minutes=5)
        a = jobs.add_job_sync(conn, S, "t", {"n": "a"})
        b = jobs.add_job_sync(conn, S, "t", {"n": "b"}, run_at=past)
        c = jobs.add_job_sync(conn, S, "t", {"n": "c"})
        d = jobs.add_job_sync(conn, S, "t", {"n": "d"})
        conn.execute("update graphile_worker.jobs set priority = -1 where id = %s", (d.id,))
        e = jobs.add_job_sync(conn, S, "t", {"n": "e"}, run_at=past)
        order = []
        while (job := jobs.get_job_sync(conn, S, WORKER)) is not None:
            order.append(job.id)
            jobs.complete_job_sync(conn, S, WORKER, job.id)
    assert order == [d.id, b.id, e.id, a.id, c.id]


def test_only_due_jobs_are_fetched(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        future = datetime.now(timezone.utc) + timedelta(seconds=30)
        jobs.add_job_sync(conn, S, "later", run_at=future)
        assert jobs.get_job_sync(conn, S, WORKER) is None
        conn.execute("update graphile_worker.jobs set run_at = now()")
        assert jobs.get_job_sync(conn, S, WORKER) is not None


def test_two_open_transactions_get_different_jobs(migrated_url: str) -> None:
    with _connect(migrated_url) as setup:
        first = jobs.add_job_sync(setup, S, "t")
        second = jobs.add_job_sync(setup, S, "t")
    with psycopg.connect(migrated_url) as one, psycopg.connect(migrated_url) as two:
        # Neither commits until both have fetched: SKIP LOCKED must hand out distinct jobs.
        a = jobs.get_job_sync(one, S, "worker-one-00000")
        b = jobs.get_job_sync(two, S, "worker-two-00000")
        assert a is not None and b is not None
        assert {a.id, b.id} == {first.id, second.id}
        one.rollback()
        two.rollback()


def test_attempts_grow_at_checkout(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        added = jobs.add_job_sync(conn, S, "t")
        assert added.attempts == 0
        got = jobs.get_job_sync(conn, S, WORKER)
        assert got is not None and got.attempts == 1
        row = conn.execute("select attempts from graphile_worker.jobs where id = %s", (added.id,)).fetchone()
        assert row == (1,)


def test_fail_job_schedules_retry_e_to_the_attempts_seconds_ahead(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        jobs.add_job_sync(conn, S, "t")
        for attempt in (1, 2, 3):
            conn.execute("update graphile_worker.jobs set run_at = now()")
            got = jobs.get_job_sync(conn, S, WORKER)
            assert got is not None and got.attempts == attempt
            before = datetime.now(timezone.utc)
            failed = jobs.fail_job_sync(conn, S, WORKER, got.id, f"boom {attempt}")
            after = datetime.now(timezone.utc)
            assert failed is not None and failed.last_error == f"boom {attempt}"
            delay = timedelta(milliseconds=math.exp(attempt) * 1000)
            assert before + delay - timedelta(milliseconds=1) <= failed.run_at <= after + delay + timedelta(milliseconds=1)
            queue = conn.execute("select locked_by, locked_at from graphile_worker.job_queues").fetchone()
            assert queue == (None, None)


def test_retry_delay_is_capped_at_e_to_the_10(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        job = jobs.add_job_sync(conn, S, "t", max_attempts=50)
        conn.execute("update graphile_worker.jobs set attempts = 30 where id = %s", (job.id,))
        got = jobs.get_job_sync(conn, S, WORKER)
        assert got is not None and got.attempts == 31
        before = datetime.now(timezone.utc)
        failed = jobs.fail_job_sync(conn, S, WORKER, got.id, "x")
        assert failed is not None
        assert abs((failed.run_at - before).total_seconds() - math.exp(10)) < 1


def test_job_at_max_attempts_is_never_fetched(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        job = jobs.add_job_sync(conn, S, "t", max_attempts=2)
        for _ in range(2):
            conn.execute("update graphile_worker.jobs set run_at = now()")
            got = jobs.get_job_sync(conn, S, WORKER)
            assert got is not None
            jobs.fail_job_sync(conn, S, WORKER, got.id, "no")
        conn.execute("update graphile_worker.jobs set run_at = now() - interval '1 day'")
        assert jobs.get_job_sync(conn, S, WORKER) is None
        assert conn.execute("select attempts from graphile_worker.jobs where id = %s", (job.id,)).fetchone() == (2,)


def test_complete_job_deletes_the_job_and_unlocks_its_queue(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        first = jobs.add_job_sync(conn, S, "t", queue_name="q")
        jobs.add_job_sync(conn, S, "t", queue_name="q")
        got = jobs.get_job_sync(conn, S, WORKER)
        assert got is not None and got.id == first.id
        assert conn.execute("select locked_by, job_count from graphile_worker.job_queues").fetchone() == (WORKER, 2)
        done = jobs.complete_job_sync(conn, S, WORKER, got.id)
        assert done is not None and done.id == first.id
        assert conn.execute("select locked_by, locked_at, job_count from graphile_worker.job_queues").fetchone() == (
            None,
            None,
            1,
        )
        assert conn.execute("select count(*) from graphile_worker.jobs where id = %s", (first.id,)).fetchone() == (0,)


def test_job_count_follows_inserts_deletes_and_queue_name_updates(migrated_url: str) -> None:
    def counts(conn: psycopg.Connection) -> dict[str, int]:
        return dict(conn.execute("select queue_name, job_count from graphile_worker.job_queues").fetchall())

    with _connect(migrated_url) as conn:
        a1 = jobs.add_job_sync(conn, S, "t", queue_name="a")
        jobs.add_job_sync(conn, S, "t", queue_name="a")
        jobs.add_job_sync(conn, S, "t", queue_name="b")
        assert counts(conn) == {"a": 2, "b": 1}
        conn.execute("update graphile_worker.jobs set queue_name = 'b' where id = %s", (a1.id,))
        assert counts(conn) == {"a": 1, "b": 2}
        conn.execute("delete from graphile_worker.jobs where queue_name = 'a'")
        assert counts(conn) == {"b": 2}
        conn.execute("delete from graphile_worker.jobs")
        assert counts(conn) == {}


def test_jobs_sharing_a_queue_run_one_at_a_time(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        first = jobs.add_job_sync(conn, S, "t", queue_name="serial")
        second = jobs.add_job_sync(conn, S, "t", queue_name="serial")
        other = jobs.add_job_sync(conn, S, "t")
        got = jobs.get_job_sync(conn, S, "worker-a-0000000")
        assert got is not None and got.id == first.id
        # The queue is locked: another worker gets the job in another queue, then nothing.
        nxt = jobs.get_job_sync(conn, S, "worker-b-0000000")
        assert nxt is not None and nxt.id == other.id
        assert jobs.get_job_sync(conn, S, "worker-b-0000000") is None
        jobs.complete_job_sync(conn, S, "worker-a-0000000", first.id)
        last = jobs.get_job_sync(conn, S, "worker-b-0000000")
        assert last is not None and last.id == second.id


def test_one_notify_per_insert_statement_whatever_its_row_count(migrated_url: str) -> None:
    with _connect(migrated_url) as listener, _connect(migrated_url) as writer:
        listener.execute('listen "jobs:insert"')
        writer.execute("select graphile_worker.add_job('one')")
        writer.execute("insert into graphile_worker.jobs (task_identifier) select 'bulk' from generate_series(1, 20)")
        with writer.transaction():
            # PostgreSQL folds equal notifications within a transaction, so count trigger calls.
            writer.execute("set local track_functions = 'pl'")
            writer.execute("insert into graphile_worker.jobs (task_identifier) select 'bulk' from generate_series(1, 30)")
            calls = writer.execute(
                "select calls from pg_stat_xact_user_functions where funcname = 'tg_jobs__notify_new_jobs'"
            ).fetchone()
        # A marker sent last: everything before it has arrived once the marker has.
        writer.execute("select pg_notify('jobs:insert', 'marker')")
        received = []
        for note in listener.notifies(timeout=10):
            received.append(note.payload)
            if note.payload == "marker":
                break
    assert calls == (1,)
    assert received == ["", "", "", "marker"]


def test_worker_id_shorter_than_ten_characters_is_rejected(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        jobs.add_job_sync(conn, S, "t")
        with pytest.raises(psycopg.errors.RaiseException, match="invalid worker id"):
            jobs.get_job_sync(conn, S, "worker-12")
        with pytest.raises(psycopg.errors.RaiseException, match="invalid worker id"):
            conn.execute("select * from graphile_worker.get_job(null)")
        assert jobs.get_job_sync(conn, S, "worker-123") is not None


def test_task_identifiers_restrict_what_is_fetched(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        jobs.add_job_sync(conn, S, "other")
        wanted = jobs.add_job_sync(conn, S, "mine")
        got = jobs.get_job_sync(conn, S, WORKER, ["mine"])
        assert got is not None and got.id == wanted.id
        assert jobs.get_job_sync(conn, S, WORKER, ["mine"]) is None


def test_expired_queue_lock_is_taken_over(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        job = jobs.add_job_sync(conn, S, "t")
        assert jobs.get_job_sync(conn, S, "worker-dead-000000") is not None
        assert jobs.get_job_sync(conn, S, WORKER, job_expiry=timedelta(hours=1)) is None
        conn.execute("update graphile_worker.job_queues set locked_at = now() - interval '2 hours'")
        again = jobs.get_job_sync(conn, S, WORKER, job_expiry=timedelta(hours=1))
        assert again is not None and again.id == job.id and again.attempts == 2


def test_async_api_matches_the_sync_twin(migrated_url: str) -> None:
    async def scenario() -> tuple[int, int | None, int | None]:
        async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
            added = await jobs.add_job(conn, S, "a", {"k": [1, 2]}, queue_name="qq", max_attempts=3)
            got = await jobs.get_job(conn, S, WORKER)
            assert got is not None and got.payload == {"k": [1, 2]} and got.max_attempts == 3
            failed = await jobs.fail_job(conn, S, WORKER, added.id, "bad")
            done = await jobs.complete_job(conn, S, WORKER, added.id)
            return added.id, failed.id if failed else None, done.id if done else None

    added, failed, done = asyncio.run(scenario())
    assert added == failed == done


def test_add_job_rejects_naive_run_at_and_unserialisable_payload_before_the_database() -> None:
    with pytest.raises(PayloadError, match="no time zone"):
        jobs.add_job_statement(S, "t", run_at=datetime(2030, 1, 1))
    with pytest.raises(PayloadError, match="cannot be serialised"):
        jobs.add_job_statement(S, "t", {"when": object()})
    with pytest.raises(PayloadError, match="cannot be serialised"):
        jobs.add_job_statement(S, "t", {"x": float("nan")})
    with pytest.raises(PayloadError, match="max_attempts"):
        jobs.add_job_statement(S, "t", max_attempts=0)


def test_sql_add_job_defaults_match_the_contract(migrated_url: str) -> None:
    start = datetime.now(timezone.utc)
    with _connect(migrated_url) as conn:
        row = conn.execute(
            "select queue_name, payload, run_at, max_attempts, attempts, priority from graphile_worker.add_job('x')"
        ).fetchone()
    assert row is not None
    queue_name, payload, run_at, max_attempts, attempts, priority = row
    assert len(queue_name) == 36 and payload == {} and max_attempts == 25 and attempts == 0 and priority == 0
    assert start - timedelta(seconds=1) <= run_at <= datetime.now(timezone.utc)


def test_concurrent_checkouts_never_share_a_job(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        conn.execute("select graphile_worker.add_job('t') from generate_series(1, 200)")
    seen: list[int] = []
    lock = threading.Lock()

    def drain(n: int) -> None:
        with _connect(migrated_url) as conn:
            while (job := jobs.get_job_sync(conn, S, f"worker-thread-{n:04d}")) is not None:
                with lock:
                    seen.append(job.id)
                jobs.complete_job_sync(conn, S, f"worker-thread-{n:04d}", job.id)

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(seen) == 200 and len(set(seen)) == 200


def test_concurrent_drain_never_strands_a_shared_queue(migrated_url: str) -> None:
    # Upstream's get_job locks only the queue row, so a worker whose snapshot predates another
    # worker's complete_job can pick the deleted job, lock its queue and return nothing: the
    # queue's other jobs then wait for job_expiry. Upstream 0.1.0 strands jobs in most runs of this.
    def drain(n: int) -> None:
        worker = f"worker-race-{n:06d}"
        with _connect(migrated_url) as conn:
            while (job := jobs.get_job_sync(conn, S, worker)) is not None:
                jobs.complete_job_sync(conn, S, worker, job.id)

    for _ in range(3):
        with _connect(migrated_url) as conn:
            conn.execute(
                "select graphile_worker.add_job('t', queue_name => case when i % 5 = 0 then 'shared'"
                " else gen_random_uuid()::text end) from generate_series(1, 600) i"
            )
        threads = [threading.Thread(target=drain, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        with _connect(migrated_url) as conn:
            assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (0,)
            assert conn.execute("select count(*) from graphile_worker.job_queues").fetchone() == (0,)


def test_task_names_with_quotes_backslashes_and_commas_reach_get_job_intact(migrated_url: str) -> None:
    names = ['plain', 'with "quotes"', "back\\slash", "com,ma", "{braces}", "ünï 😀", ""]
    with _connect(migrated_url) as conn:
        decoded = conn.execute("select %s::text[]", (jobs.text_array_literal(names),)).fetchone()
    assert decoded == (names,)


def test_a_locked_job_row_delays_its_queue_rather_than_letting_the_next_job_overtake(migrated_url: str) -> None:
    with _connect(migrated_url) as conn:
        first = jobs.add_job_sync(conn, S, "t", queue_name="ordered")
        jobs.add_job_sync(conn, S, "t", queue_name="ordered")
    got: list[int | None] = []
    with psycopg.connect(migrated_url) as holder:
        # Someone holds the first job's row (an admin update in a transaction, say).
        holder.execute("select 1 from graphile_worker.jobs where id = %s for update", (first.id,))
        fetcher_pid: list[int] = []

        def fetch() -> None:
            with _connect(migrated_url) as conn:
                fetcher_pid.append(conn.info.backend_pid)
                job = jobs.get_job_sync(conn, S, WORKER)
                got.append(job.id if job else None)

        thread = threading.Thread(target=fetch)
        thread.start()
        with _connect(migrated_url) as watcher:
            wait_until(
                lambda: fetcher_pid and watcher.execute(
                    "select wait_event_type from pg_stat_activity where pid = %s", (fetcher_pid[0],)
                ).fetchone() == ("Lock",),
                what="get_job to wait for the held job row",
            )
        assert got == []
        holder.commit()
        thread.join(timeout=30)
    assert got == [first.id]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"identifier": "t" * 129}, "at most 128"),
        ({"queue_name": "q" * 129}, "at most 128"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"run_at": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))}, "years 1 to 9999"),
        ({"run_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))}, "years 1 to 9999"),
        ({"payload": "\ud800"}, "surrogate"),
        ({"payload": {"\udcff": 1}}, "surrogate"),
        ({"identifier": "t\udcff"}, "surrogate"),
        ({"queue_name": "q\ud800"}, "surrogate"),
    ],
    ids=["identifier", "queue", "max_attempts", "run_at-10000", "run_at-bc", "surrogate-value", "surrogate-key",
         "surrogate-identifier", "surrogate-queue"],
)
def test_add_job_refuses_what_postgresql_or_python_cannot_hold(options: dict, fragment: str) -> None:
    options = {"identifier": "t"} | options
    with pytest.raises(PayloadError, match=fragment):
        jobs.add_job_statement(S, options.pop("identifier"), options.pop("payload", None), **options)


def test_add_job_takes_values_at_the_limits(migrated_url: str) -> None:
    latest = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    earliest = datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))  # 0001-01-01 00:00 UTC
    with _connect(migrated_url) as conn:
        job = jobs.add_job_sync(conn, S, "t" * 128, queue_name="q" * 128, max_attempts=2**31 - 1, run_at=latest)
        first = jobs.add_job_sync(conn, S, "t", run_at=earliest)
    assert (job.task_identifier, job.queue_name, job.max_attempts, job.run_at) == ("t" * 128, "q" * 128, 2**31 - 1, latest)
    assert first.run_at == earliest
