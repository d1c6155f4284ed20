-- kongtask migration 1: the graphile-worker v0.1.0 schema.
-- The schema token (a colon, then KONGTASK_SCHEMA) stands for the quoted schema name where SQL
-- code names the schema; kongtask.migrations substitutes it there only, escaped for the place.

create table :KONGTASK_SCHEMA.job_queues (
  queue_name text not null primary key,
  job_count int not null,
  locked_at timestamptz,
  locked_by text
);
alter table :KONGTASK_SCHEMA.job_queues enable row level security;

create table :KONGTASK_SCHEMA.jobs (
  id bigserial primary key,
  -- A random queue name per job means "no queue": such a job never waits for another.
  queue_name text not null default (public.gen_random_uuid())::text,
  task_identifier text not null,
  payload json not null default '{}'::json,
  priority int not null default 0,
  run_at timestamptz not null default now(),
  attempts int not null default 0,
  max_attempts int not null default 25,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table :KONGTASK_SCHEMA.jobs enable row level security;

-- Left unnamed on purpose: later upstream migrations drop it as jobs_priority_run_at_id_idx.
create index on :KONGTASK_SCHEMA.jobs (priority, run_at, id);

create function :KONGTASK_SCHEMA.tg__update_timestamp() returns trigger as $$
begin
  -- Strictly increasing, even when two updates land within the same transaction timestamp.
  new.updated_at := greatest(now(), old.updated_at + interval '1 millisecond');
  return new;
end;
$$ language plpgsql;

create function :KONGTASK_SCHEMA.jobs__increase_job_queue_count() returns trigger as $$
begin
  insert into :KONGTASK_SCHEMA.job_queues as q (queue_name, job_count)
    values (new.queue_name, 1)
    on conflict (queue_name) do update set job_count = q.job_count + 1;
  return new;
end;
$$ language plpgsql;

create function :KONGTASK_SCHEMA.jobs__decrease_job_queue_count() returns trigger as $$
declare
  v_remaining int;
begin
  update :KONGTASK_SCHEMA.job_queues as q
    set job_count = q.job_count - 1
    where q.queue_name = old.queue_name
    returning q.job_count into v_remaining;
  if v_remaining <= 0 then
    delete from :KONGTASK_SCHEMA.job_queues as q
      where q.queue_name = old.queue_name and q.job_count <= 0;
  end if;
  return old;
end;
$$ language plpgsql;

create function :KONGTASK_SCHEMA.tg_jobs__notify_new_jobs() returns trigger as $$
begin
  perform pg_notify('jobs:insert', '');
  return null;
end;
$$ language plpgsql;

create trigger _100_timestamps
  before update on :KONGTASK_SCHEMA.jobs
  for each row execute function :KONGTASK_SCHEMA.tg__update_timestamp();
create trigger _500_increase_job_queue_count
  after insert on :KONGTASK_SCHEMA.jobs
  for each row execute function :KONGTASK_SCHEMA.jobs__increase_job_queue_count();
create trigger _500_decrease_job_queue_count
  after delete on :KONGTASK_SCHEMA.jobs
  for each row execute function :KONGTASK_SCHEMA.jobs__decrease_job_queue_count();
create trigger _500_increase_job_queue_count_update
  after update of queue_name on :KONGTASK_SCHEMA.jobs
  for each row execute function :KONGTASK_SCHEMA.jobs__increase_job_queue_count();
create trigger _500_decrease_job_queue_count_update
  after update of queue_name on :KONGTASK_SCHEMA.jobs
  for each row execute function :KONGTASK_SCHEMA.jobs__decrease_job_queue_count();
-- Per statement: a bulk insert of 20,000 jobs wakes the workers once, not 20,000 times.
create trigger _900_notify_worker
  after insert on :KONGTASK_SCHEMA.jobs
  for each statement execute function :KONGTASK_SCHEMA.tg_jobs__notify_new_jobs();

create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json = '{}',
  queue_name text = (public.gen_random_uuid())::text,
  run_at timestamptz = now(),
  max_attempts int = 25
) returns :KONGTASK_SCHEMA.jobs as $$
  insert into :KONGTASK_SCHEMA.jobs (task_identifier, payload, queue_name, run_at, max_attempts)
    values (identifier, payload, queue_name, run_at, max_attempts)
    returning *;
$$ language sql;

create function :KONGTASK_SCHEMA.get_job(
  worker_id text,
  task_identifiers text[] = null,
  job_expiry interval = interval '4 hours'
) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job_id bigint;
  v_queue text;
  v_job :KONGTASK_SCHEMA.jobs;
  v_tries int := 0;
begin
  if worker_id is null or length(worker_id) < 10 then
    raise exception 'invalid worker id';
  end if;

  loop
    -- The queue row is the lock: skipping locked queue rows lets many workers fetch at once
    -- while jobs that share a queue still run one at a time.
    select j.id, j.queue_name into v_job_id, v_queue
      from :KONGTASK_SCHEMA.jobs as j
      inner join :KONGTASK_SCHEMA.job_queues as q on q.queue_name = j.queue_name
      where (q.locked_at is null or q.locked_at < now() - job_expiry)
        and j.run_at <= now()
        and j.attempts < j.max_attempts
        and (task_identifiers is null or j.task_identifier = any(task_identifiers))
      order by j.priority asc, j.run_at asc, j.id asc
      limit 1
      for update of q skip locked;

    if v_job_id is null then
      return null;
    end if;

    update :KONGTASK_SCHEMA.jobs as j
      set attempts = j.attempts + 1
      where j.id = v_job_id
      returning * into v_job;

    if found then
      update :KONGTASK_SCHEMA.job_queues as q
        set locked_by = worker_id, locked_at = now()
        where q.queue_name = v_queue;
      return v_job;
    end if;

    -- The chosen job is gone: another worker completed it after this statement's snapshot was
    -- taken. Upstream locks its queue anyway and returns nothing, stranding the queue's other
    -- jobs until job_expiry; choose again instead, with a fresh snapshot.
    v_tries := v_tries + 1;
    if v_tries >= 10 then
      return null;
    end if;
  end loop;
end;
$$ language plpgsql;

create function :KONGTASK_SCHEMA.complete_job(worker_id text, job_id bigint)
returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  delete from :KONGTASK_SCHEMA.jobs as j
    where j.id = job_id
    returning * into v_job;
  update :KONGTASK_SCHEMA.job_queues as q
    set locked_by = null, locked_at = null
    where q.queue_name = v_job.queue_name and q.locked_by = worker_id;
  return v_job;
end;
$$ language plpgsql;

create function :KONGTASK_SCHEMA.fail_job(worker_id text, job_id bigint, error_message text)
returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  -- attempts was already counted at checkout, so the first retry waits e^1 seconds.
  update :KONGTASK_SCHEMA.jobs as j
    set last_error = error_message,
        run_at = greatest(now(), j.run_at) + exp(least(j.attempts, 10)) * interval '1 second'
    where j.id = job_id
    returning * into v_job;
  update :KONGTASK_SCHEMA.job_queues as q
    set locked_by = null, locked_at = null
    where q.queue_name = v_job.queue_name and q.locked_by = worker_id;
  return v_job;
end;
$$ language plpgsql;
