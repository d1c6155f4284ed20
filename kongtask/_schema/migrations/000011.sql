-- kongtask migration 11 (breaking): jobs move into new tables keyed by generated ids: a job names
-- its task and its queue by id, queues and tasks are rows of their own, and whether a job or a
-- queue can be taken is a stored, indexed column. Every waiting job is copied over, in its order,
-- under a new id. Client functions: add_jobs (many at once, through the composite job_spec), and
-- add_job, complete_jobs, permanently_fail_jobs, remove_job, reschedule_jobs over the new tables.
-- The worker's get_job, complete_job and fail_job are gone: workers send their own statements.

-- No worker may take or release a job while the tables are swapped.
lock table :KONGTASK_SCHEMA.jobs, :KONGTASK_SCHEMA.job_queues in access exclusive mode;

-- A running job (locked less than 4 hours ago) would lose its lock in the copy; refuse instead.
-- kongtask turns SQLSTATE KT011 into one line that says what to do.
do $$
begin
  if exists (
    select 1 from :KONGTASK_SCHEMA.jobs as j
      where j.locked_at is not null and j.locked_at > now() - interval '4 hours'
  ) then
    raise exception 'there are locked jobs; migration 11 needs every worker stopped and no job locked'
      using errcode = 'KT011';
  end if;
end;
$$;

drop trigger _900_notify_worker on :KONGTASK_SCHEMA.jobs;
drop function :KONGTASK_SCHEMA.tg_jobs__notify_new_jobs();
drop function :KONGTASK_SCHEMA.get_job(text, text[], interval, text[], timestamptz);
drop function :KONGTASK_SCHEMA.complete_job(text, bigint);
drop function :KONGTASK_SCHEMA.fail_job(text, bigint, text);
drop function :KONGTASK_SCHEMA.add_job(text, json, text, timestamptz, integer, text, integer, text[], text);
drop function :KONGTASK_SCHEMA.complete_jobs(bigint[]);
drop function :KONGTASK_SCHEMA.permanently_fail_jobs(bigint[], text);
drop function :KONGTASK_SCHEMA.remove_job(text);
drop function :KONGTASK_SCHEMA.reschedule_jobs(bigint[], timestamptz, integer, integer, integer);

alter table :KONGTASK_SCHEMA.jobs rename to jobs_legacy;
alter table :KONGTASK_SCHEMA.job_queues rename to job_queues_legacy;

-- The constraints are named as graphile-worker's are: the legacy tables still hold the plain
-- names while these are made, so the new ones end in 1.
create table :KONGTASK_SCHEMA.job_queues (
  id int generated always as identity constraint job_queues_pkey1 primary key,
  queue_name text not null
    constraint job_queues_queue_name_key unique
    constraint job_queues_queue_name_check check (length(queue_name) <= 128),
  locked_at timestamptz,
  locked_by text,
  is_available boolean generated always as (locked_at is null) stored not null
);
alter table :KONGTASK_SCHEMA.job_queues enable row level security;

create table :KONGTASK_SCHEMA.tasks (
  id int generated always as identity constraint tasks_pkey primary key,
  identifier text not null
    constraint tasks_identifier_key unique
    constraint tasks_identifier_check check (length(identifier) <= 128)
);
alter table :KONGTASK_SCHEMA.tasks enable row level security;

create table :KONGTASK_SCHEMA.jobs (
  id bigint generated always as identity constraint jobs_pkey1 primary key,
  -- No foreign keys: they would cost every insert and delete a lookup.
  job_queue_id int,
  task_id int not null,
  payload json not null default '{}'::json,
  priority smallint not null default 0,
  run_at timestamptz not null default now(),
  attempts smallint not null default 0,
  max_attempts smallint not null default 25 constraint jobs_max_attempts_check check (max_attempts >= 1),
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  key text
    constraint jobs_key_key1 unique
    constraint jobs_key_check check (length(key) > 0 and length(key) <= 512),
  locked_at timestamptz,
  locked_by text,
  revision integer not null default 0,
  flags jsonb,
  is_available boolean generated always as (locked_at is null and attempts < max_attempts) stored not null
);
alter table :KONGTASK_SCHEMA.jobs enable row level security;

-- What a fetch reads: available jobs in priority order, covering the ids it joins on.
create index jobs_main_index on :KONGTASK_SCHEMA.jobs (priority, run_at)
  include (id, task_id, job_queue_id)
  where is_available = true;
create index jobs_no_queue_index on :KONGTASK_SCHEMA.jobs (priority, run_at)
  include (id, task_id)
  where is_available = true and job_queue_id is null;

create type :KONGTASK_SCHEMA.job_spec as (
  identifier text,
  payload json,
  queue_name text,
  run_at timestamptz,
  max_attempts integer,
  job_key text,
  priority integer,
  flags text[]
);

-- Many jobs in one call. A keyed job that is waiting is replaced in place (its run_at kept when
-- job_key_preserve_run_at and it has not been tried; two JSON-array payloads are concatenated, for
-- batch jobs); one that is running or spent loses its key and retries, and a new job is added.
create function :KONGTASK_SCHEMA.add_jobs(
  specs :KONGTASK_SCHEMA.job_spec[],
  job_key_preserve_run_at boolean default false
) returns setof :KONGTASK_SCHEMA.jobs as $$
begin
  insert into :KONGTASK_SCHEMA.tasks (identifier)
    select distinct s.identifier from unnest(specs) as s
    on conflict do nothing;
  insert into :KONGTASK_SCHEMA.job_queues (queue_name)
    select distinct s.queue_name from unnest(specs) as s where s.queue_name is not null
    on conflict do nothing;

  update :KONGTASK_SCHEMA.jobs as j
    set key = null, attempts = j.max_attempts, updated_at = now()
    from unnest(specs) as s
    where s.job_key is not null and j.key = s.job_key and j.is_available is not true;

  return query
    insert into :KONGTASK_SCHEMA.jobs as j
        (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
      select q.id, t.id, coalesce(s.payload, '{}'::json), coalesce(s.run_at, now()),
             coalesce(s.max_attempts, 25), s.job_key, coalesce(s.priority, 0),
             (select jsonb_object_agg(f, true) from unnest(s.flags) as f)
        from unnest(specs) as s
        inner join :KONGTASK_SCHEMA.tasks as t on t.identifier = s.identifier
        left join :KONGTASK_SCHEMA.job_queues as q on q.queue_name = s.queue_name
    on conflict (key) do update
      set job_queue_id = excluded.job_queue_id,
          task_id = excluded.task_id,
          payload = case
            when json_typeof(j.payload) = 'array' and json_typeof(excluded.payload) = 'array'
              then (j.payload::jsonb || excluded.payload::jsonb)::json
            else excluded.payload
          end,
          max_attempts = excluded.max_attempts,
          run_at = case when job_key_preserve_run_at is true and j.attempts = 0
                        then j.run_at else excluded.run_at end,
          priority = excluded.priority,
          revision = j.revision + 1,
          flags = excluded.flags,
          attempts = 0,
          last_error = null,
          updated_at = now()
      where j.locked_at is null
    returning *;
end;
$$ language plpgsql;

create function :KONGTASK_SCHEMA.complete_jobs(job_ids bigint[])
returns setof :KONGTASK_SCHEMA.jobs as $$
  delete from :KONGTASK_SCHEMA.jobs as j
    where j.id = any(job_ids)
      and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$ language sql;

create function :KONGTASK_SCHEMA.permanently_fail_jobs(job_ids bigint[], error_message text default null)
returns setof :KONGTASK_SCHEMA.jobs as $$
  update :KONGTASK_SCHEMA.jobs as j
    set last_error = coalesce(error_message, 'Manually marked as failed'),
        attempts = j.max_attempts,
        updated_at = now()
    where j.id = any(job_ids)
      and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$ language sql;

create function :KONGTASK_SCHEMA.remove_job(job_key text) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  delete from :KONGTASK_SCHEMA.jobs as j
    where j.key = job_key
      and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
    returning * into v_job;
  if v_job.id is not null then
    return v_job;
  end if;
  update :KONGTASK_SCHEMA.jobs as j
    set key = null, attempts = j.max_attempts, updated_at = now()
    where j.key = job_key
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql strict;

create function :KONGTASK_SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority integer default null,
  attempts integer default null,
  max_attempts integer default null
) returns setof :KONGTASK_SCHEMA.jobs as $$
  update :KONGTASK_SCHEMA.jobs as j
    set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
        priority = coalesce(reschedule_jobs.priority, j.priority),
        attempts = coalesce(reschedule_jobs.attempts, j.attempts),
        max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts),
        updated_at = now()
    where j.id = any(job_ids)
      and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$ language sql;

-- One wake-up per INSERT statement, as before.
create function :KONGTASK_SCHEMA.tg_jobs__after_insert() returns trigger as $$
begin
  perform pg_notify('jobs:insert', '');
  return new;
end;
$$ language plpgsql;
create trigger _900_after_insert
  after insert on :KONGTASK_SCHEMA.jobs
  for each statement execute function :KONGTASK_SCHEMA.tg_jobs__after_insert();

create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json default null,
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts integer default null,
  job_key text default null,
  priority integer default null,
  flags text[] default null,
  job_key_mode text default 'replace'
) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  if job_key is null or job_key_mode is null or job_key_mode in ('replace', 'preserve_run_at') then
    select * into v_job
      from :KONGTASK_SCHEMA.add_jobs(
        array[cast(row(identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags)
                   as :KONGTASK_SCHEMA.job_spec)],
        job_key_mode = 'preserve_run_at'
      )
      limit 1;
    return v_job;
  elsif job_key_mode = 'unsafe_dedupe' then
    insert into :KONGTASK_SCHEMA.tasks (identifier) values (add_job.identifier)
      on conflict do nothing;
    if add_job.queue_name is not null then
      insert into :KONGTASK_SCHEMA.job_queues (queue_name) values (add_job.queue_name)
        on conflict do nothing;
    end if;
    insert into :KONGTASK_SCHEMA.jobs as j
        (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
      select q.id, t.id, coalesce(add_job.payload, '{}'::json), coalesce(add_job.run_at, now()),
             coalesce(add_job.max_attempts, 25), add_job.job_key, coalesce(add_job.priority, 0),
             (select jsonb_object_agg(f, true) from unnest(add_job.flags) as f)
        from :KONGTASK_SCHEMA.tasks as t
        left join :KONGTASK_SCHEMA.job_queues as q on q.queue_name = add_job.queue_name
        where t.identifier = add_job.identifier
      -- An update, not "do nothing", so that the existing job is returned.
      on conflict (key) do update set revision = j.revision + 1, updated_at = now()
      returning * into v_job;
    return v_job;
  else
    raise exception 'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;
end;
$$ language plpgsql;

-- The copy. Queues and tasks first, then every job, oldest id first so that the new ids keep the
-- old order (a v0.1.0 job's random queue name becomes a queue of its own, as it was).
insert into :KONGTASK_SCHEMA.job_queues (queue_name)
  select l.queue_name from :KONGTASK_SCHEMA.jobs_legacy as l
    where l.queue_name is not null
    group by l.queue_name
    order by min(l.id);

insert into :KONGTASK_SCHEMA.tasks (identifier)
  select l.task_identifier from :KONGTASK_SCHEMA.jobs_legacy as l
    group by l.task_identifier
    order by min(l.id);

insert into :KONGTASK_SCHEMA.jobs (
  job_queue_id, task_id, payload, priority, run_at, attempts, max_attempts, last_error,
  created_at, updated_at, key, revision, flags
)
  select q.id, t.id, l.payload, l.priority, l.run_at, l.attempts, l.max_attempts, l.last_error,
         l.created_at, l.updated_at, l.key, l.revision, l.flags
    from :KONGTASK_SCHEMA.jobs_legacy as l
    inner join :KONGTASK_SCHEMA.tasks as t on t.identifier = l.task_identifier
    left join :KONGTASK_SCHEMA.job_queues as q on q.queue_name = l.queue_name
    order by l.id;

drop table :KONGTASK_SCHEMA.jobs_legacy;
drop table :KONGTASK_SCHEMA.job_queues_legacy;
