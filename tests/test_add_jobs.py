"""`add_jobs` / `add_jobs_sync`: many jobs in one go, each exactly as `add_job` would add it, all or
none, with one NOTIFY per INSERT statement."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import kongtask
from kongtask import JobSpec, PayloadError
from kongtask._schema import jobs
from tests.support import query_rows

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"
#: Every column but the ones each job gets afresh (id, and the times: compared separately).
_SAME_COLUMNS = ("task_identifier", "payload", "priority", "attempts", "max_attempts", "last_error")


def _jobs(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute("select * from graphile_worker.jobs order by id")
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _count(url: str) -> int:
    return int(query_rows(url, "select count(*) from graphile_worker.jobs")[0][0])


def _queue_counts(url: str) -> dict[str, int]:
    return dict(query_rows(url, "select queue_name, job_count from graphile_worker.job_queues"))  # type: ignore[arg-type]


def test_jobs_that_leave_options_out_get_exactly_add_jobs_defaults(migrated_url: str) -> None:
    before = query_rows(migrated_url, "select now()")[0][0]
    kongtask.add_job_sync("plain", connection_string=migrated_url)
    kongtask.add_job_sync("plain", connection_string=migrated_url)
    added = kongtask.add_jobs_sync(
        [JobSpec("plain"), {"identifier": "plain", "payload": None, "queue_name": None}],
        connection_string=migrated_url,
    )
    after = query_rows(migrated_url, "select now()")[0][0]

    assert added == 2
    single_a, single_b, bulk_a, bulk_b = _jobs(migrated_url)
    for bulk, single in ((bulk_a, single_a), (bulk_b, single_b)):
        assert {c: bulk[c] for c in _SAME_COLUMNS} == {c: single[c] for c in _SAME_COLUMNS}
        assert bulk["payload"] == {} and bulk["max_attempts"] == 25 and bulk["attempts"] == 0
        for column in ("run_at", "created_at", "updated_at"):
            assert before <= bulk[column] <= after
    # A queue of its own per job, as public.gen_random_uuid() gives add_job.
    queues = [job["queue_name"] for job in (single_a, single_b, bulk_a, bulk_b)]
    assert len(set(queues)) == 4 and all(uuid.UUID(q).version == 4 for q in queues)


def test_jobs_with_every_option_given_match_add_job_field_by_field(migrated_url: str) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    options = {"queue_name": "mail", "run_at": when, "max_attempts": 3}
    payload = {"to": "a@example.com", "n": [1, 2.5, None, True], "text": "größer ✓"}
    kongtask.add_job_sync("send", payload, connection_string=migrated_url, **options)
    kongtask.add_jobs_sync([JobSpec("send", payload, **options)], connection_string=migrated_url)

    single, bulk = _jobs(migrated_url)
    columns = (*_SAME_COLUMNS, "queue_name", "run_at")
    assert {c: bulk[c] for c in columns} == {c: single[c] for c in columns}
    assert bulk["run_at"] == when and bulk["queue_name"] == "mail" and bulk["max_attempts"] == 3


def test_named_queues_count_every_job_added_to_them(migrated_url: str) -> None:
    specs = [JobSpec("t", queue_name="a")] * 3 + [JobSpec("t", queue_name="b")] * 2 + [JobSpec("t")] * 2
    kongtask.add_jobs_sync(specs, connection_string=migrated_url)

    counts = _queue_counts(migrated_url)
    assert (counts.pop("a"), counts.pop("b")) == (3, 2)
    assert sorted(counts.values()) == [1, 1]  # the two jobs without a queue, alone in theirs
    assert query_rows(migrated_url, "select count(*) from graphile_worker.job_queues where locked_by is not null") \
        == [(0,)]


BAD_SPECS: dict[str, tuple[Any, str]] = {
    "max_attempts zero": (JobSpec("t", max_attempts=0), "job 3: max_attempts must be a whole number"),
    "a naive run_at": (JobSpec("t", run_at=datetime(2030, 1, 1)), "job 3: run_at 2030-01-01T00:00:00 has no time zone"),
    "a payload that is not JSON": (JobSpec("t", {"x": {1, 2}}), "job 3: job payload cannot be serialised"),
    "a NaN in the payload": (JobSpec("t", {"x": float("nan")}), "job 3: job payload cannot be serialised"),
    "an empty identifier": (JobSpec(""), "job 3: task identifier must be a non-empty string"),
    "a 129-character queue": (JobSpec("t", queue_name="q" * 129), "job 3: queue_name is 129 characters long"),
    "an empty queue": (JobSpec("t", queue_name=""), "job 3: queue_name must not be empty"),
    "a NUL in the identifier": (JobSpec("t\x00"), "job 3: task identifier holds a NUL character"),
    "a NUL in the queue": (JobSpec("t", queue_name="a\x00"), "job 3: queue_name holds a NUL character"),
    "an unknown key": ({"identifier": "t", "queue": "q"}, "job 3: unknown key 'queue'; a job takes identifier,"),
    "no identifier": ({"payload": {}}, "job 3: identifier is missing"),
    "neither a spec nor a mapping": (("t", {}), "job 3: expected a JobSpec or a mapping, got tuple"),
}


@pytest.mark.parametrize(("bad", "message"), BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_a_bad_spec_is_named_by_its_index_and_nothing_is_added(migrated_url: str, bad: Any, message: str) -> None:
    specs = [JobSpec("t"), JobSpec("t"), JobSpec("t"), bad, JobSpec("t")]
    with pytest.raises(PayloadError) as raised:
        kongtask.add_jobs_sync(specs, connection_string=migrated_url)
    assert str(raised.value).startswith(message), str(raised.value)
    with pytest.raises(PayloadError, match="^job 3: "):
        asyncio.run(kongtask.add_jobs(specs, connection_string=migrated_url))
    assert _count(migrated_url) == 0


def test_a_spec_is_refused_before_anything_is_sent(migrated_url: str) -> None:
    # The database is never reached: the check comes first.
    with pytest.raises(PayloadError, match="^job 1: "):
        kongtask.add_jobs_sync([JobSpec("t"), JobSpec("t", max_attempts=-1)], connection_string=UNREACHABLE)


def test_a_statement_failing_in_a_later_chunk_takes_the_earlier_chunks_back(migrated_url: str) -> None:
    # The database refuses the last job only, after 10,000 have gone in an earlier statement.
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("alter table graphile_worker.jobs add constraint no_poison check (task_identifier <> 'poison')")
    specs = [JobSpec("t", {"i": i}) for i in range(jobs.ADD_JOBS_CHUNK)] + [JobSpec("poison")]
    with pytest.raises(psycopg.errors.CheckViolation):
        kongtask.add_jobs_sync(specs, connection_string=migrated_url)
    with pytest.raises(psycopg.errors.CheckViolation):
        asyncio.run(kongtask.add_jobs(specs, connection_string=migrated_url))
    assert _count(migrated_url) == 0
    assert _queue_counts(migrated_url) == {}


def test_more_jobs_than_one_statement_holds_are_all_added(migrated_url: str) -> None:
    count = jobs.ADD_JOBS_CHUNK * 2 + 7
    added = asyncio.run(kongtask.add_jobs(
        ({"identifier": "t", "payload": {"i": i}, "queue_name": f"q{i % 3}"} for i in range(count)),
        connection_string=migrated_url,
    ))
    assert added == count == _count(migrated_url)
    assert sum(_queue_counts(migrated_url).values()) == count
    assert query_rows(migrated_url, "select min((payload->>'i')::int), max((payload->>'i')::int) "
                                    "from graphile_worker.jobs") == [(0, count - 1)]


def test_one_notify_per_statement_and_one_delivered_per_call(migrated_url: str) -> None:
    statements = jobs.add_jobs_statements("graphile_worker", [JobSpec("t")] * 25, chunk_size=10)
    assert len(statements.chunks) == 3
    with psycopg.connect(migrated_url, autocommit=True) as listener, psycopg.connect(migrated_url) as writer:
        listener.execute('listen "jobs:insert"')
        # The trigger's calls are counted inside the transaction; PostgreSQL folds the equal
        # notifications of one transaction into one at commit.
        writer.execute("set local track_functions = 'pl'")
        assert jobs.insert_jobs_sync(writer, statements) == 25
        calls = writer.execute(
            "select calls from pg_stat_xact_user_functions where funcname = 'tg_jobs__notify_new_jobs'"
        ).fetchone()
        writer.commit()
        kongtask.add_jobs_sync([JobSpec("t")] * 5, connection_string=migrated_url)
        writer.execute("select pg_notify('jobs:insert', 'marker')")
        writer.commit()
        received = []
        for note in listener.notifies(timeout=10):
            received.append(note.payload)
            if note.payload == "marker":
                break
    assert calls == (3,)
    assert received == ["", "", "marker"]


def _add_sync(source: str, url: str, specs: list[JobSpec]) -> int:
    if source == "connection_string":
        return kongtask.add_jobs_sync(specs, connection_string=url)
    if source == "pool":
        with ConnectionPool(url, min_size=1, open=True) as pool:
            return kongtask.add_jobs_sync(specs, pool=pool)
    with psycopg.connect(url) as conn:
        return kongtask.add_jobs_sync(specs, connection=conn)  # committed when the block ends


async def _add_async(source: str, url: str, specs: list[JobSpec]) -> int:
    if source == "connection_string":
        return await kongtask.add_jobs(specs, connection_string=url)
    if source == "pool":
        async with AsyncConnectionPool(url, min_size=1, open=False) as pool:
            return await kongtask.add_jobs(specs, pool=pool)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await kongtask.add_jobs(specs, connection=conn)


ADDERS: dict[str, Callable[[str, str, list[JobSpec]], int]] = {
    "sync": _add_sync,
    "async": lambda source, url, specs: asyncio.run(_add_async(source, url, specs)),
}


@pytest.mark.parametrize("source", ["connection_string", "pool", "connection"])
@pytest.mark.parametrize("kind", ADDERS)
def test_every_connection_source_adds_the_jobs(migrated_url: str, kind: str, source: str) -> None:
    specs = [JobSpec("t", {"i": i}, queue_name="shared") for i in range(4)]
    assert ADDERS[kind](source, migrated_url, specs) == 4
    assert [job["payload"] for job in _jobs(migrated_url)] == [{"i": i} for i in range(4)]
    assert _queue_counts(migrated_url) == {"shared": 4}


def test_jobs_added_on_the_callers_connection_share_its_transaction(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        assert kongtask.add_jobs_sync([JobSpec("t")] * 3, connection=conn) == 3
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (3,)
        conn.rollback()
    assert _count(migrated_url) == 0

    async def roll_back() -> None:
        async with await psycopg.AsyncConnection.connect(migrated_url) as conn:
            assert await kongtask.add_jobs([JobSpec("t")] * 3, connection=conn) == 3
            await conn.rollback()

    asyncio.run(roll_back())
    assert _count(migrated_url) == 0


def test_no_specs_add_nothing_without_connecting() -> None:
    assert kongtask.add_jobs_sync([], connection_string=UNREACHABLE) == 0
    assert asyncio.run(kongtask.add_jobs(iter(()), connection_string=UNREACHABLE)) == 0


def test_another_schema_name_is_used(migrated_url: str) -> None:
    asyncio.run(kongtask.migrate(connection_string=migrated_url, schema="other jobs"))
    kongtask.add_jobs_sync([JobSpec("t")], connection_string=migrated_url, schema="other jobs")
    assert query_rows(migrated_url, 'select count(*) from "other jobs".jobs') == [(1,)]
    assert _count(migrated_url) == 0


def test_a_failure_inside_the_callers_transaction_leaves_its_own_work_usable(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("alter table graphile_worker.jobs add constraint no_poison check (task_identifier <> 'poison')")
    with psycopg.connect(migrated_url) as conn:
        kongtask.add_job_sync("mine", connection=conn)
        with pytest.raises(psycopg.errors.CheckViolation):
            kongtask.add_jobs_sync([JobSpec("t"), JobSpec("poison")], connection=conn)
        kongtask.add_job_sync("mine too", connection=conn)
        conn.commit()
    assert [job["task_identifier"] for job in _jobs(migrated_url)] == ["mine", "mine too"]


def test_a_large_add_refreshes_the_planners_row_counts(migrated_url: str) -> None:
    """A drained queue leaves statistics of a handful of rows; planned on those, a fetch after a
    large add scans job_queues once per job. add_jobs leaves the statistics right."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("analyze graphile_worker.jobs, graphile_worker.job_queues")
        kongtask.add_jobs_sync([JobSpec("t")] * 2000, connection=conn)
        rows = conn.execute("select relname, reltuples from pg_class where relname in ('jobs', 'job_queues')"
                            " and relnamespace = 'graphile_worker'::regnamespace order by relname").fetchall()
    assert rows == [("job_queues", 2000.0), ("jobs", 2000.0)]
