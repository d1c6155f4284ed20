"""Catalog conformance: a kongtask migration produces the graphile-worker v0.1.0 catalog."""

from __future__ import annotations

import psycopg

from tests.catalog import describe_schema

# The contract, one line per object (function bodies aside), as graphile-worker 0.1.0 leaves it.
EXPECTED = """
col job_queues.1 queue_name text not null
col job_queues.2 job_count integer not null
col job_queues.3 locked_at timestamp with time zone
col job_queues.4 locked_by text
col jobs.1 id bigint not null default nextval('graphile_worker.jobs_id_seq'::regclass)
col jobs.2 queue_name text not null default (public.gen_random_uuid())::text
col jobs.3 task_identifier text not null
col jobs.4 payload json not null default '{}'::json
col jobs.5 priority integer not null default 0
col jobs.6 run_at timestamp with time zone not null default now()
col jobs.7 attempts integer not null default 0
col jobs.8 max_attempts integer not null default 25
col jobs.9 last_error text
col jobs.10 created_at timestamp with time zone not null default now()
col jobs.11 updated_at timestamp with time zone not null default now()
col migrations.1 id integer not null
col migrations.2 ts timestamp with time zone not null default now()
con job_queues job_queues_pkey PRIMARY KEY (queue_name)
con jobs jobs_pkey PRIMARY KEY (id)
con migrations migrations_pkey PRIMARY KEY (id)
ext pgcrypto in public
ext uuid-ossp in public
fn add_job(identifier text, payload json DEFAULT '{}'::json, queue_name text DEFAULT (public.gen_random_uuid())::text, run_at timestamp with time zone DEFAULT now(), max_attempts integer DEFAULT 25) returns S.jobs lang=sql vol=v secdef=false
fn complete_job(worker_id text, job_id bigint) returns S.jobs lang=plpgsql vol=v secdef=false
fn fail_job(worker_id text, job_id bigint, error_message text) returns S.jobs lang=plpgsql vol=v secdef=false
fn get_job(worker_id text, task_identifiers text[] DEFAULT NULL::text[], job_expiry interval DEFAULT '04:00:00'::interval) returns S.jobs lang=plpgsql vol=v secdef=false
fn jobs__decrease_job_queue_count() returns trigger lang=plpgsql vol=v secdef=false
fn jobs__increase_job_queue_count() returns trigger lang=plpgsql vol=v secdef=false
fn tg__update_timestamp() returns trigger lang=plpgsql vol=v secdef=false
fn tg_jobs__notify_new_jobs() returns trigger lang=plpgsql vol=v secdef=false
idx CREATE INDEX jobs_priority_run_at_id_idx ON S.jobs USING btree (priority, run_at, id)
idx CREATE UNIQUE INDEX job_queues_pkey ON S.job_queues USING btree (queue_name)
idx CREATE UNIQUE INDEX jobs_pkey ON S.jobs USING btree (id)
idx CREATE UNIQUE INDEX migrations_pkey ON S.migrations USING btree (id)
migrations 1
rel job_queues kind=r rls=true
rel job_queues_pkey kind=i rls=false
rel jobs kind=r rls=true
rel jobs_id_seq kind=S rls=false
rel jobs_pkey kind=i rls=false
rel jobs_priority_run_at_id_idx kind=i rls=false
rel migrations kind=r rls=false
rel migrations_pkey kind=i rls=false
trg CREATE TRIGGER _100_timestamps BEFORE UPDATE ON S.jobs FOR EACH ROW EXECUTE FUNCTION S.tg__update_timestamp()
trg CREATE TRIGGER _500_decrease_job_queue_count AFTER DELETE ON S.jobs FOR EACH ROW EXECUTE FUNCTION S.jobs__decrease_job_queue_count()
trg CREATE TRIGGER _500_decrease_job_queue_count_update AFTER UPDATE OF queue_name ON S.jobs FOR EACH ROW EXECUTE FUNCTION S.jobs__decrease_job_queue_count()
trg CREATE TRIGGER _500_increase_job_queue_count AFTER INSERT ON S.jobs FOR EACH ROW EXECUTE FUNCTION S.jobs__increase_job_queue_count()
trg CREATE TRIGGER _500_increase_job_queue_count_update AFTER UPDATE OF queue_name ON S.jobs FOR EACH ROW EXECUTE FUNCTION S.jobs__increase_job_queue_count()
trg CREATE TRIGGER _900_notify_worker AFTER INSERT ON S.jobs FOR EACH STATEMENT EXECUTE FUNCTION S.tg_jobs__notify_new_jobs()
"""


def _available_extensions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("select name from pg_available_extensions where name in ('pgcrypto', 'uuid-ossp')")
    return {name for (name,) in rows.fetchall()}


def test_migrated_catalog_matches_the_v0_1_0_contract(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        actual = describe_schema(conn)
        available = _available_extensions(conn)
    expected = [line for line in EXPECTED.strip().splitlines() if not line.startswith("ext ")]
    expected += [f"ext {name} in public" for name in sorted(available)]
    assert actual == sorted(expected)


def test_gen_random_uuid_is_provided_even_without_pgcrypto(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        available = _available_extensions(conn)
        owner = conn.execute(
            """
            select e.extname from pg_proc p
            join pg_namespace n on n.oid = p.pronamespace and n.nspname = 'public'
            left join pg_depend d on d.objid = p.oid and d.deptype = 'e'
            left join pg_extension e on e.oid = d.refobjid
            where p.proname = 'gen_random_uuid'
            """
        ).fetchall()
        queue = conn.execute("select graphile_worker.add_job('x')").fetchone()
    # pgcrypto's own function where the server ships it, kongtask's wrapper elsewhere.
    assert owner == ([("pgcrypto",)] if "pgcrypto" in available else [(None,)])
    assert queue is not None
