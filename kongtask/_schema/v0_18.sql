-- The statements kongtask sends to a database of graphile-worker's 0.18 schema (migrations 2..20).
-- One named block each, read by kongtask/_schema/v0_18.py; {schema} is the quoted schema name,
-- {channel} the channel that announces new jobs. Values are always parameters.
--
-- Every statement that returns jobs returns them in kongtask's Job order (v0.1.0's jobs columns,
-- then key, revision, flags), joining the task identifier and the queue name back in.

-- ===== the job lifecycle: fetch, release (complete or fail), and their recovery =====

-- name: register_tasks
-- Once when a pool starts, as upstream's workers do: every task it runs has its _private_tasks row.
-- Only missing identifiers are inserted: an insert that meets a conflict still uses up an identity
-- value (an int), and a pool starts again and again with the same tasks (as in 0.18.0's worker).
insert into {schema}._private_tasks (identifier)
select identifier from unnest(%(task_names)s::text[]) as t(identifier)
where not exists (select 1 from {schema}._private_tasks as known where known.identifier = t.identifier)
on conflict (identifier) do nothing

-- name: get_jobs
-- The worker's fetch: check out up to %(limit)s due jobs under the pool's lock id. A job is taken
-- when it is available (unlocked, attempts left), due, for one of the pool's tasks, carries none of
-- the pool's forbidden flags (%(forbidden_flags)s, null for none), and either in
-- no queue or in a queue that is available and that this statement could lock (queues another
-- fetch is locking are skipped, as upstream does). Only the first job of each named queue is
-- kept: a named queue never runs two jobs at once, even inside one batch (upstream's issue #621).
-- The order is upstream's, priority then run_at: the key of the index the scan walks
-- (jobs_main_index), so that it stops after %(limit)s rows. Ordering the scan by id as well would
-- sort every available job on each fetch (the index does not hold id in order), and jobs added by
-- one statement all share run_at; ties go in the index's order, as upstream's do. A batch is
-- still handed out by priority, run_at, then id. `taken` finds its rows by id through the primary
-- key, whatever the planner guesses of `chosen`'s size. The last column says how many rows the
-- scan found: fewer than %(limit)s means nothing else is due now.
with task_ids as materialized (
  select id from {schema}._private_tasks where identifier = any(%(task_names)s::text[])
),
scanned as materialized (
  select j.id, j.job_queue_id, j.priority, j.run_at
  from {schema}._private_jobs as j
  where j.is_available = true
    and j.run_at <= now()
    and j.task_id = any(array(select id from task_ids))
    and (%(forbidden_flags)s::text[] is null or (j.flags ?| %(forbidden_flags)s::text[]) is not true)
    and (j.job_queue_id is null or j.job_queue_id in (
      select q.id from {schema}._private_job_queues as q
      where q.is_available = true
      for update skip locked))
  order by j.priority, j.run_at
  limit %(limit)s
  for update of j skip locked
),
chosen as materialized (
  select distinct on (job_queue_id, case when job_queue_id is null then id end) id, job_queue_id
  from scanned
  order by job_queue_id, case when job_queue_id is null then id end, priority, run_at, id
),
queues_taken as (
  update {schema}._private_job_queues as q set locked_by = %(worker_id)s, locked_at = now()
  from chosen where q.id = chosen.job_queue_id
),
taken as (
  update {schema}._private_jobs as j
  set attempts = j.attempts + 1, locked_by = %(worker_id)s, locked_at = now()
  where j.id = any(array(select id from chosen))
  returning j.*
)
select j.id, q.queue_name, t.identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
  j.last_error, j.created_at, j.updated_at, j.key, j.revision, j.flags,
  (select count(*) from scanned) as scanned
from taken as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id
order by j.priority, j.run_at, j.id

-- name: release_jobs
-- The worker's release: many jobs in one statement. A completed job is deleted; a failed one
-- records its error and is scheduled again with upstream's backoff (exp(least(attempts, 10))
-- seconds), keeping only a batch job's failed items when it gives them; either way its queue is
-- unlocked where this pool holds it. Safe to repeat after a lost reply: a completed job is gone,
-- and a failure lands only on a job still locked by this pool.
-- Both find their jobs with `id = any(...)`, through the primary key: joined to unnest() alone,
-- the planner hashed or scanned the whole table for each release (16 ms for 500 completed jobs
-- with 20,000 waiting, 1 ms now; 118 ms for 500 failures, 12 ms now).
with completed as (
  delete from {schema}._private_jobs as j
  where j.id = any(%(completed_ids)s::bigint[])
  returning j.job_queue_id
),
failed as (
  update {schema}._private_jobs as j
  set last_error = r.message,
    run_at = greatest(now(), j.run_at) + exp(least(j.attempts, 10)) * interval '1 second',
    locked_by = null, locked_at = null, payload = coalesce(r.payload, j.payload)
  from unnest(%(failed_ids)s::bigint[], %(failed_messages)s::text[], %(failed_payloads)s::json[])
    as r(job_id, message, payload)
  where j.id = any(%(failed_ids)s::bigint[]) and j.id = r.job_id and j.locked_by = %(worker_id)s
  returning j.job_queue_id
),
unlocked as (
  update {schema}._private_job_queues as q set locked_by = null, locked_at = null
  where q.locked_by = %(worker_id)s
    and q.id in (select job_queue_id from completed union all select job_queue_id from failed)
)
select (select count(*) from completed), (select count(*) from failed)

-- name: return_jobs
-- Jobs checked out but never started (a stop, or a worker that has no use for them): their
-- attempt back, job and queue unlocked, so any worker can take them at once, and told so on the
-- channel that announces new jobs (%(channel)s), in upstream's form, which Node pools read.
-- Safe to repeat: a job is given back only while this pool still locks it. A job that lost the key
-- it was fetched with (%(keys)s) meanwhile was removed, or replaced by a job with its key: a locked
-- job is not deleted but loses its key and its attempts (remove_job, add_job), and it keeps them
-- lost, or it would run after all.
with given_back as (
  update {schema}._private_jobs as j
  set attempts = case when r.key is not null and j.key is null then j.attempts
    else greatest(0, j.attempts - 1) end,
    locked_by = null, locked_at = null
  from unnest(%(job_ids)s::bigint[], %(keys)s::text[]) as r(job_id, key)
  where j.id = r.job_id and j.locked_by = %(worker_id)s
  returning j.job_queue_id
),
unlocked as (
  update {schema}._private_job_queues as q set locked_by = null, locked_at = null
  where q.id in (select job_queue_id from given_back) and q.locked_by = %(worker_id)s
),
counted as (select count(*) as n from given_back),
announced as (
  select pg_notify(%(channel)s, '{{"r":' || random()::text || ',"count":' || n::text || '}}')
  from counted where n > 0
)
select (select n from counted), (select count(*) from announced)

-- name: return_stray_checkouts
-- After a checkout whose reply was lost, the pool locks jobs it does not know about: every job
-- locked under its id but those it knows it holds (%(held_ids)s). Give them their attempt back
-- and unlock them and their queues, rather than wait for the expiry. The pool runs this only
-- while no other checkout of its id is under way.
with stray as (
  update {schema}._private_jobs as j
  set attempts = greatest(0, j.attempts - 1), locked_by = null, locked_at = null
  where j.locked_by = %(worker_id)s and j.id <> all(%(held_ids)s::bigint[])
  returning j.job_queue_id
),
unlocked as (
  update {schema}._private_job_queues as q set locked_by = null, locked_at = null
  where q.locked_by = %(worker_id)s and q.id not in (
    select job_queue_id from {schema}._private_jobs
    where id = any(%(held_ids)s::bigint[]) and job_queue_id is not null)
  returning q.id
)
select (select count(*) from unlocked), (select count(*) from stray)

-- name: heartbeat
-- Keeps the locks of held jobs (running, buffered, being released) and of their queues fresh, so
-- that only a dead pool's locks ever expire.
with kept as (
  update {schema}._private_jobs as j set locked_at = now()
  where j.id = any(%(job_ids)s::bigint[]) and j.locked_by = %(worker_id)s
  returning j.job_queue_id
)
update {schema}._private_job_queues as q set locked_at = now()
where q.id in (select job_queue_id from kept) and q.locked_by = %(worker_id)s

-- name: expire_locks
-- A dead pool's locks: jobs and queues locked before now() - %(job_expiry)s are unlocked, and the
-- jobs made due no earlier than now, as upstream's pools do for locks older than 4 hours. kongtask
-- pools keep their own locks fresh with the heartbeat, so their expiry can be much shorter.
with jobs_freed as (
  update {schema}._private_jobs
  set locked_by = null, locked_at = null, run_at = greatest(run_at, now())
  where locked_at < now() - %(job_expiry)s::interval
  returning 1
),
queues_freed as (
  update {schema}._private_job_queues set locked_by = null, locked_at = null
  where locked_at < now() - %(job_expiry)s::interval
  returning 1
)
select (select count(*) from jobs_freed), (select count(*) from queues_freed)

-- name: due_jobs_without_task
-- Due jobs that no task of this worker can run, by task: what a lone worker reports so that a job
-- for a task nobody has is not waiting in silence.
select t.identifier, count(*) from {schema}._private_jobs as j
inner join {schema}._private_tasks as t on t.id = j.task_id
where j.is_available and j.run_at <= now() and t.identifier <> all(%s::text[])
group by t.identifier order by count(*) desc, t.identifier limit 10

-- name: job_gauges
-- The metrics' kongtask_jobs gauge, as in v0_1.sql: every job counted once, by task and state:
-- dead (attempts used up), locked (the job is locked, or waits behind a running job of its named
-- queue, as v0.1.0's locked queue means), due, or scheduled (run_at ahead). One pass over the
-- private jobs table, joined to the task names and the named queues (few, beside the jobs).
select t.identifier as task_identifier,
  case when j.attempts >= j.max_attempts then 'dead'
       when j.locked_by is not null or q.locked_by is not null then 'locked'
       when j.run_at <= now() then 'due'
       else 'scheduled' end as state,
  count(*) as count
from {schema}._private_jobs as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id
group by 1, 2

-- ===== NOTIFY wake-ups =====

-- name: listen
-- New jobs (upstream sends {"r":…,"count":N}) and migrations run by other processes.
listen {channel}; listen "worker:migrate"

-- ===== admin: through upstream's SQL admin functions, which skip running jobs =====
-- complete_jobs, permanently_fail_jobs and reschedule_jobs leave a locked job alone (one locked
-- less than 4 hours ago); force_unlock_workers unlocks whatever the given pools hold.

-- name: list_jobs
-- From the public jobs view (no payload). run_at also as the server's text: it may hold a time
-- Python cannot (infinity, BC, 10000).
select j.id, j.task_identifier, j.queue_name, j.priority, j.run_at, j.run_at::text as run_at_text,
  j.attempts, j.max_attempts, j.last_error, j.locked_by, j.locked_at, j.key, j.flags
from {schema}.jobs as j
where (%(state)s = 'all'
  or (%(state)s = 'locked' and j.locked_by is not null)
  or (%(state)s = 'failed' and j.last_error is not null and j.attempts < j.max_attempts)
  or (%(state)s = 'dead' and j.attempts >= j.max_attempts)
  or (%(state)s = 'unknown-task' and j.task_identifier <> all(%(known_tasks)s::text[])))
and (%(task)s::text is null or j.task_identifier = %(task)s)
and (%(queue)s::text is null or j.queue_name = %(queue)s)
and (%(flag)s::text is null or j.flags ? %(flag)s::text)
order by j.priority, j.run_at, j.id limit %(limit)s

-- name: force_unlock_workers
-- Each row: a worker (pool) id, the jobs and the queues it held. What it held is read in this
-- statement's snapshot, which the function's own updates do not change.
with held_jobs as materialized (
  select locked_by, id from {schema}._private_jobs where locked_by = any(%(worker_ids)s::text[])
),
held_queues as materialized (
  select locked_by, queue_name from {schema}._private_job_queues where locked_by = any(%(worker_ids)s::text[])
),
freed as materialized (select {schema}.force_unlock_workers(%(worker_ids)s::text[]))
select w.worker_id,
  array(select id from held_jobs where locked_by = w.worker_id order by id),
  array(select queue_name from held_queues where locked_by = w.worker_id order by queue_name)
from unnest(%(worker_ids)s::text[]) with ordinality as w(worker_id, n), freed
order by w.n

-- name: complete_jobs
-- Deletes the jobs. Rows come back in kongtask's Job order, the task and queue named.
with done as materialized (select * from {schema}.complete_jobs(%(job_ids)s::bigint[]))
select j.id, q.queue_name, t.identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
  j.last_error, j.created_at, j.updated_at, j.key, j.revision, j.flags
from done as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id

-- name: permanently_fail_jobs
-- Out of attempts, with the reason as last_error (the function's own text when it is NULL).
with done as materialized (
  select * from {schema}.permanently_fail_jobs(%(job_ids)s::bigint[], %(reason)s::text)
)
select j.id, q.queue_name, t.identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
  j.last_error, j.created_at, j.updated_at, j.key, j.revision, j.flags
from done as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id

-- name: reschedule_jobs
-- Each NULL keeps the job's own value.
with done as materialized (
  select * from {schema}.reschedule_jobs(%(job_ids)s::bigint[], run_at => %(run_at)s::timestamptz,
    priority => %(priority)s::int, attempts => %(attempts)s::int, max_attempts => %(max_attempts)s::int)
)
select j.id, q.queue_name, t.identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
  j.last_error, j.created_at, j.updated_at, j.key, j.revision, j.flags
from done as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id

-- name: present_jobs
-- Which of these ids are jobs: after an admin call, those it left alone (a worker held them).
select id from {schema}._private_jobs where id = any(%(job_ids)s::bigint[]) order by id

-- name: retry_job
-- One more attempt, now; attempts keeps its history. A running job is left alone.
with target as (
  select id, least(32767, greatest(max_attempts, attempts + 1)) as max_attempts
  from {schema}._private_jobs where id = %(job_id)s
),
changed as materialized (
  select r.* from target,
  lateral {schema}.reschedule_jobs(array[target.id], run_at => now(), max_attempts => target.max_attempts) as r
)
select j.id, q.queue_name, t.identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
  j.last_error, j.created_at, j.updated_at, j.key, j.revision, j.flags
from changed as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id

-- ===== adding and removing jobs =====

-- name: add_job
-- upstream's add_job with every option named; a NULL takes the function's own default. It returns
-- the private row, which kongtask reads by column name (kongtask._schema.jobs).
select * from {schema}.add_job(identifier => %(identifier)s, payload => %(payload)s::json,
  queue_name => %(queue_name)s, run_at => %(run_at)s, max_attempts => %(max_attempts)s,
  job_key => %(job_key)s, priority => %(priority)s, flags => %(flags)s::text[],
  job_key_mode => coalesce(%(job_key_mode)s, 'replace'))

-- name: remove_job
-- The waiting job with this key is deleted; a running one loses its key and its remaining attempts.
with removed as materialized (select * from {schema}.remove_job(%(job_key)s))
select j.id, q.queue_name, t.identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
  j.last_error, j.created_at, j.updated_at, j.key, j.revision, j.flags
from removed as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id

-- ===== adding jobs in bulk =====

-- name: add_jobs
-- Many jobs in one call of upstream's add_jobs (the jobs table is private here): one job_spec per
-- element of the parameter arrays, in the order given, in the same layout as v0.1.0's add_jobs.
-- add_jobs announces them itself, once, with their count.
select count(*) from {schema}.add_jobs(array(
  select row(spec.identifier, spec.payload, spec.queue_name, spec.run_at, spec.max_attempts::smallint,
    spec.job_key, spec.priority::smallint,
    (select array_agg(flag) from json_array_elements_text(spec.flags) as flag))::{schema}.job_spec
  from unnest(%(identifier)s::text[], %(payload)s::json[], %(queue_name)s::text[], %(run_at)s::timestamptz[],
    %(max_attempts)s::int[], %(job_key)s::text[], %(priority)s::int[], %(flags)s::json[])
    with ordinality as spec(identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags, n)
  order by spec.n
), job_key_preserve_run_at => %(preserve_run_at)s)

-- name: analyze_jobs
-- After a large insert, as on v0.1.0: fresh planner statistics of the tables the fetch reads.
analyze {schema}._private_jobs, {schema}._private_job_queues, {schema}._private_tasks

-- ===== cron (kongtask._cron_scheduler) =====

-- name: known_crontabs
-- What the fleet remembers of these cron items: since when an item is known, and the last minute
-- any worker added its job for.
select identifier, known_since, last_execution from {schema}._private_known_crontabs
where identifier = any(%(identifiers)s::text[])

-- name: register_crontabs
-- Items no worker knew are known from this worker's start on; backfilling never reaches before.
insert into {schema}._private_known_crontabs as known_crontabs (identifier, known_since)
select identifier, %(known_since)s::timestamptz from unnest(%(identifiers)s::text[]) as item(identifier)
on conflict do nothing

-- name: schedule_cron_jobs
-- The jobs of one minute (%(ts)s), one per item, each added only by the worker whose upsert moves
-- the item's last_execution forward to that minute: a worker that comes second (it waits for the
-- first one's row lock, then finds last_execution no longer older) adds nothing. All in one
-- statement, so a minute is claimed exactly when its jobs are added. Returns the items added.
with specs as (
  select * from unnest(%(identifier)s::text[], %(task)s::text[], %(payload)s::json[], %(queue_name)s::text[],
    %(max_attempts)s::int[], %(priority)s::int[], %(job_key)s::text[], %(job_key_mode)s::text[])
    with ordinality as spec(identifier, task, payload, queue_name, max_attempts, priority, job_key, job_key_mode, n)
),
claimed as (
  insert into {schema}._private_known_crontabs as known_crontabs (identifier, known_since, last_execution)
  select identifier, %(ts)s::timestamptz, %(ts)s::timestamptz from specs
  on conflict (identifier) do update set last_execution = excluded.last_execution
  where known_crontabs.last_execution is null or known_crontabs.last_execution < excluded.last_execution
  returning known_crontabs.identifier
)
-- add_job is called in the select list, so only for the rows the join keeps (claimed items).
select specs.identifier, ({schema}.add_job(identifier => specs.task, payload => specs.payload,
  queue_name => specs.queue_name, run_at => %(ts)s::timestamptz, max_attempts => specs.max_attempts,
  job_key => specs.job_key, priority => specs.priority, flags => null,
  job_key_mode => specs.job_key_mode)).id
from specs
inner join claimed on claimed.identifier = specs.identifier
order by specs.n

-- ===== migrations =====

-- name: migrations_columns
-- Whether the migrations table has graphile-worker's "breaking" column (a v0.1.0 table has not).
select exists (
  select 1 from pg_attribute
  where attrelid = to_regclass(%s) and attname = 'breaking' and attnum > 0 and not attisdropped
)

-- name: applied_migrations
select id from {schema}.migrations order by id

-- name: applied_migrations_breaking
select id, breaking from {schema}.migrations order by id

-- name: add_breaking_column
-- The first modern migration adds the column and marks the breaking migrations already applied.
alter table {schema}.migrations add column if not exists breaking boolean not null default false

-- name: mark_breaking
update {schema}.migrations set breaking = true where id = any(%s::int[]) and not breaking

-- name: record_migration
-- First in a migration's transaction: a duplicate key then means another process applied it.
insert into {schema}.migrations (id, breaking) values (%s, %s)

-- name: notify_migrated
-- Running graphile-worker pools listen here and stop after a breaking migration they did not run.
select pg_notify('worker:migrate', %s)

-- ===== the dashboard (kongtask dashboard): what it reads, from the private tables =====
-- Each job is in exactly one state, the first that fits: locked (by a worker), dead (attempts used
-- up), failed (an error, will be retried), scheduled (run_at in the future), due. The columns match
-- the v0.1.0 statements of the same names.

-- name: dashboard_counts
-- The jobs of every state per task, and per named queue for the 50 largest queues, from one pass
-- over the table (hashed by task, queue and state, named afterwards); and those that hold an error
-- and changed in the last hour (a failure, or a retry after one).
with counted as materialized (
  select j.task_id, j.job_queue_id,
    case when j.locked_by is not null then 'locked' when j.attempts >= j.max_attempts then 'dead'
      when j.last_error is not null then 'failed' when j.run_at > now() then 'scheduled' else 'due' end as state,
    count(*) as jobs,
    count(*) filter (where j.last_error is not null and j.updated_at > now() - interval '1 hour') as failed_lately
  from {schema}._private_jobs as j
  group by 1, 2, 3
), largest as (
  select job_queue_id from counted where job_queue_id is not null
  group by job_queue_id order by sum(jobs) desc, job_queue_id limit 50
)
select false as by_queue, t.identifier as name, c.state, sum(c.jobs)::bigint as jobs,
  sum(c.failed_lately)::bigint as failed_lately
from counted as c inner join {schema}._private_tasks as t on t.id = c.task_id
group by t.identifier, c.state
union all
select true, q.queue_name, c.state, sum(c.jobs)::bigint, sum(c.failed_lately)::bigint
from counted as c inner join {schema}._private_job_queues as q on q.id = c.job_queue_id
where c.job_queue_id in (select job_queue_id from largest)
group by q.queue_name, c.state

-- name: dashboard_count_settings
-- For the rest of the counting transaction: how long counting may take before the dashboard
-- estimates instead; no JIT (its compile time is most of a count's cost); memory enough to hash
-- the groups rather than sort a million rows on disk.
select set_config('statement_timeout', %(milliseconds)s, true), set_config('jit', 'off', true),
  set_config('work_mem', '64MB', true)

-- name: dashboard_task_estimates
-- When counting takes too long: the share of the table each of the most common tasks has, from
-- the planner's statistics (the last ANALYZE).
select t.identifier as name, m.share
from (
  select unnest(s.most_common_vals::text::int[]) as task_id, unnest(s.most_common_freqs) as share
  from pg_stats as s
  where s.schemaname = %(schema)s and s.tablename = '_private_jobs' and s.attname = 'task_id'
) as m
inner join {schema}._private_tasks as t on t.id = m.task_id

-- name: dashboard_table_stats
-- The rows ever inserted into and deleted from the jobs table (since the statistics were last
-- reset): a job is deleted when it completes, so deletions over time are the throughput. And the
-- planner's estimate of the rows in it.
select coalesce(s.n_tup_ins, 0) as inserted, coalesce(s.n_tup_del, 0) as deleted,
  greatest(c.reltuples, 0)::bigint as estimate
from pg_class as c
inner join pg_namespace as n on n.oid = c.relnamespace
left join pg_stat_user_tables as s on s.relid = c.oid
where n.nspname = %(schema)s and c.relname = '_private_jobs'

-- name: dashboard_lock_holders
-- Each worker (pool) that holds queues or jobs, with the time of its freshest lock (a live
-- kongtask pool refreshes its locks every heartbeat; a dead one's only age).
select locked_by, sum(queues)::bigint as queues, sum(jobs)::bigint as jobs, max(latest) as latest
from (
  select locked_by, count(*) as queues, 0 as jobs, max(locked_at) as latest
  from {schema}._private_job_queues where locked_by is not null group by locked_by
  union all
  select locked_by, 0, count(*), max(locked_at)
  from {schema}._private_jobs where locked_by is not null group by locked_by
) as held
group by locked_by order by max(latest), locked_by

-- name: dashboard_locked_queues
select queue_name, locked_by, locked_at, false as own_queue
from {schema}._private_job_queues where locked_by is not null
order by locked_at, queue_name limit %(limit)s

-- name: dashboard_jobs_older
-- A page of the job list, newest first, below the keyset cursor %(before)s (a job id; NULL for
-- the first page): never OFFSET, so a page deep in a million jobs costs what the first does, plus
-- the rows the filters skip on the way. A task or queue is looked up once, by its name.
select j.id, t.identifier as task_identifier, q.queue_name, j.priority, j.run_at, j.run_at::text as run_at_text,
  j.attempts, j.max_attempts, left(j.last_error, 300) as last_error, j.locked_by, s.state
from {schema}._private_jobs as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id
cross join lateral (
  select case when j.locked_by is not null then 'locked' when j.attempts >= j.max_attempts then 'dead'
    when j.last_error is not null then 'failed' when j.run_at > now() then 'scheduled' else 'due' end as state
) as s
where (%(before)s::bigint is null or j.id < %(before)s)
  and (%(task)s::text is null
    or j.task_id = (select id from {schema}._private_tasks where identifier = %(task)s))
  and (%(queue)s::text is null
    or j.job_queue_id = (select id from {schema}._private_job_queues where queue_name = %(queue)s))
  and (%(error)s::text is null or j.last_error ilike %(error)s)
  -- Each state spelled out, not s.state: the planner then sees columns it keeps statistics of,
  -- and reads the whole table once rather than the primary key backwards for a rare state.
  and (%(state)s::text is null
    or (%(state)s = 'locked' and j.locked_by is not null)
    or (%(state)s = 'dead' and j.locked_by is null and j.attempts >= j.max_attempts)
    or (%(state)s = 'failed' and j.locked_by is null and j.attempts < j.max_attempts and j.last_error is not null)
    or (%(state)s = 'scheduled' and j.locked_by is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at > now())
    or (%(state)s = 'due' and j.locked_by is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at <= now()))
order by j.id desc limit %(limit)s

-- name: dashboard_jobs_newer
-- The page before: the jobs just above the cursor %(after)s, oldest first (the caller reverses them).
select j.id, t.identifier as task_identifier, q.queue_name, j.priority, j.run_at, j.run_at::text as run_at_text,
  j.attempts, j.max_attempts, left(j.last_error, 300) as last_error, j.locked_by, s.state
from {schema}._private_jobs as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id
cross join lateral (
  select case when j.locked_by is not null then 'locked' when j.attempts >= j.max_attempts then 'dead'
    when j.last_error is not null then 'failed' when j.run_at > now() then 'scheduled' else 'due' end as state
) as s
where j.id > %(after)s
  and (%(task)s::text is null
    or j.task_id = (select id from {schema}._private_tasks where identifier = %(task)s))
  and (%(queue)s::text is null
    or j.job_queue_id = (select id from {schema}._private_job_queues where queue_name = %(queue)s))
  and (%(error)s::text is null or j.last_error ilike %(error)s)
  -- Each state spelled out, not s.state: the planner then sees columns it keeps statistics of,
  -- and reads the whole table once rather than the primary key backwards for a rare state.
  and (%(state)s::text is null
    or (%(state)s = 'locked' and j.locked_by is not null)
    or (%(state)s = 'dead' and j.locked_by is null and j.attempts >= j.max_attempts)
    or (%(state)s = 'failed' and j.locked_by is null and j.attempts < j.max_attempts and j.last_error is not null)
    or (%(state)s = 'scheduled' and j.locked_by is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at > now())
    or (%(state)s = 'due' and j.locked_by is null and j.attempts < j.max_attempts and j.last_error is null
      and j.run_at <= now()))
order by j.id asc limit %(limit)s

-- name: dashboard_job
-- One job, all of it: the payload as its text, its own lock, its key and flags.
select j.id, t.identifier as task_identifier, q.queue_name, false as own_queue, j.payload::text as payload,
  j.priority, j.run_at, j.run_at::text as run_at_text, j.attempts, j.max_attempts, j.last_error,
  j.created_at, j.updated_at, j.locked_by, j.locked_at, null::int as queue_jobs, j.key, j.revision,
  case when jsonb_typeof(j.flags) = 'object' then array(select jsonb_object_keys(j.flags) order by 1)
    else array[]::text[] end as flags,
  case when j.locked_by is not null then 'locked' when j.attempts >= j.max_attempts then 'dead'
    when j.last_error is not null then 'failed' when j.run_at > now() then 'scheduled' else 'due' end as state
from {schema}._private_jobs as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id
where j.id = %(job_id)s
