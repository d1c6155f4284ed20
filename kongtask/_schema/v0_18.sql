-- The statements kongtask sends to a database of graphile-worker's 0.18 schema (migrations 2..20).
-- One named block each, read by kongtask/_schema/v0_18.py; {schema} is the quoted schema name,
-- {channel} the channel that announces new jobs. Values are always parameters.
--
-- Every statement that returns jobs returns them in kongtask's Job order (v0.1.0's jobs columns,
-- then key, revision, flags), joining the task identifier and the queue name back in.

-- ===== the job lifecycle: fetch, release (complete or fail), and their recovery =====

-- name: register_tasks
-- Once when a pool starts, as upstream's workers do: every task it runs has its _private_tasks row.
insert into {schema}._private_tasks (identifier)
select identifier from unnest(%(task_names)s::text[]) as t(identifier)
on conflict (identifier) do nothing

-- name: get_jobs
-- The worker's fetch: check out up to %(limit)s due jobs under the pool's lock id. A job is taken
-- when it is available (unlocked, attempts left), due, for one of the pool's tasks, and either in
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
-- seconds); either way its queue is unlocked where this pool holds it. Safe to repeat after a
-- lost reply: a completed job is gone, and a failure lands only on a job still locked by this pool.
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
    locked_by = null, locked_at = null
  from unnest(%(failed_ids)s::bigint[], %(failed_messages)s::text[]) as r(job_id, message)
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
-- Safe to repeat: a job is given back only while this pool still locks it.
with given_back as (
  update {schema}._private_jobs as j
  set attempts = greatest(0, j.attempts - 1), locked_by = null, locked_at = null
  where j.id = any(%(job_ids)s::bigint[]) and j.locked_by = %(worker_id)s
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

-- ===== NOTIFY wake-ups =====

-- name: listen
-- New jobs (upstream sends {"r":…,"count":N}) and migrations run by other processes.
listen {channel}; listen "worker:migrate"

-- ===== admin: through upstream's SQL admin functions, which skip running jobs =====

-- name: list_jobs
-- From the public jobs view (no payload). run_at also as the server's text: it may hold a time
-- Python cannot (infinity, BC, 10000).
select j.id, j.task_identifier, j.queue_name, j.priority, j.run_at, j.run_at::text as run_at_text,
  j.attempts, j.max_attempts, j.last_error, j.locked_by, j.locked_at
from {schema}.jobs as j
where (%(state)s = 'all'
  or (%(state)s = 'locked' and j.locked_by is not null)
  or (%(state)s = 'failed' and j.last_error is not null and j.attempts < j.max_attempts)
  or (%(state)s = 'dead' and j.attempts >= j.max_attempts)
  or (%(state)s = 'unknown-task' and j.task_identifier <> all(%(known_tasks)s::text[])))
and (%(task)s::text is null or j.task_identifier = %(task)s)
and (%(queue)s::text is null or j.queue_name = %(queue)s)
order by j.priority, j.run_at, j.id limit %(limit)s

-- name: unlock_worker
-- force_unlock_workers unlocks every job and queue the worker (pool) locks; the names of its
-- queues are read in this statement's snapshot, before the function runs.
with held as materialized (
  select queue_name from {schema}._private_job_queues where locked_by = %(worker_id)s
)
select unnest(array(select queue_name from held order by queue_name))
from (select {schema}.force_unlock_workers(array[%(worker_id)s]::text[])) as freed

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

-- name: reschedule_job
with changed as materialized (
  select * from {schema}.reschedule_jobs(array[%(job_id)s]::bigint[], run_at => %(run_at)s,
    priority => %(priority)s)
)
select j.id, q.queue_name, t.identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
  j.last_error, j.created_at, j.updated_at, j.key, j.revision, j.flags
from changed as j
inner join {schema}._private_tasks as t on t.id = j.task_id
left join {schema}._private_job_queues as q on q.id = j.job_queue_id

-- name: delete_job
-- complete_jobs deletes the job (a running one is left alone) and unlocks its queue.
with removed as materialized (select * from {schema}.complete_jobs(array[%(job_id)s]::bigint[]))
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
    null, null, null)::{schema}.job_spec
  from unnest(%s::text[], %s::json[], %s::text[], %s::timestamptz[], %s::int[])
    with ordinality as spec(identifier, payload, queue_name, run_at, max_attempts, n)
  order by spec.n
))

-- name: analyze_jobs
-- After a large insert, as on v0.1.0: fresh planner statistics of the tables the fetch reads.
analyze {schema}._private_jobs, {schema}._private_job_queues, {schema}._private_tasks

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
