-- kongtask migration 2: job keys, and the lock recorded on the job as well as on its queue.
-- The schema token (a colon, then KONGTASK_SCHEMA) stands for the quoted schema name.

alter table :KONGTASK_SCHEMA.jobs add column key text unique check (length(key) > 0);
alter table :KONGTASK_SCHEMA.jobs add column locked_at timestamptz;
alter table :KONGTASK_SCHEMA.jobs add column locked_by text;

-- Jobs running now carry their queue's lock from here on.
update :KONGTASK_SCHEMA.jobs as j
  set locked_at = q.locked_at, locked_by = q.locked_by
  from :KONGTASK_SCHEMA.job_queues as q
  where q.queue_name = j.queue_name and q.locked_at is not null;

drop function :KONGTASK_SCHEMA.add_job(text, json, text, timestamptz, int);

-- With a key, a job that is not running is replaced in place (its queue kept unless one is given);
-- a running one keeps running but loses its key and its retries, and a new job takes the key.
create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json = '{}',
  queue_name text = (public.gen_random_uuid())::text,
  run_at timestamptz = now(),
  max_attempts int = 25,
  job_key text = null
) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  if job_key is not null then
    insert into :KONGTASK_SCHEMA.jobs as j (task_identifier, payload, queue_name, run_at, max_attempts, key)
      values (identifier, payload, queue_name, run_at, max_attempts, job_key)
      on conflict (key) do update
        set task_identifier = excluded.task_identifier,
            payload = excluded.payload,
            queue_name = coalesce(add_job.queue_name, j.queue_name),
            run_at = excluded.run_at,
            max_attempts = excluded.max_attempts,
            attempts = 0,
            last_error = null
        where j.locked_at is null
      returning * into v_job;
    if v_job.id is not null then
      return v_job;
    end if;
    update :KONGTASK_SCHEMA.jobs as j
      set key = null, attempts = j.max_attempts
      where j.key = job_key;
  end if;
  insert into :KONGTASK_SCHEMA.jobs (task_identifier, payload, queue_name, run_at, max_attempts, key)
    values (identifier, payload, queue_name, run_at, max_attempts, job_key)
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql volatile;

create function :KONGTASK_SCHEMA.remove_job(job_key text) returns :KONGTASK_SCHEMA.jobs as $$
  delete from :KONGTASK_SCHEMA.jobs as j
    where j.key = job_key and j.locked_at is null
    returning *;
$$ language sql strict volatile;

create or replace function :KONGTASK_SCHEMA.get_job(
  worker_id text,
  task_identifiers text[] = null,
  job_expiry interval = interval '4 hours'
) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_now timestamptz := now();
  v_job_id bigint;
  v_queue text;
  v_job :KONGTASK_SCHEMA.jobs;
begin
  if worker_id is null or length(worker_id) < 10 then
    raise exception 'invalid worker id';
  end if;

  select j.id, q.queue_name into v_job_id, v_queue
    from :KONGTASK_SCHEMA.jobs as j
    inner join :KONGTASK_SCHEMA.job_queues as q on q.queue_name = j.queue_name
    where (q.locked_at is null or q.locked_at < v_now - job_expiry)
      and j.run_at <= v_now
      and j.attempts < j.max_attempts
      and (task_identifiers is null or j.task_identifier = any(task_identifiers))
    order by j.priority asc, j.run_at asc, j.id asc
    limit 1
    for update of q skip locked;

  if v_queue is null then
    return null;
  end if;

  update :KONGTASK_SCHEMA.job_queues as q
    set locked_by = worker_id, locked_at = v_now
    where q.queue_name = v_queue;

  update :KONGTASK_SCHEMA.jobs as j
    set attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now
    where j.id = v_job_id
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql volatile;

create or replace function :KONGTASK_SCHEMA.fail_job(worker_id text, job_id bigint, error_message text)
returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  update :KONGTASK_SCHEMA.jobs as j
    set last_error = error_message,
        run_at = greatest(now(), j.run_at) + exp(least(j.attempts, 10)) * interval '1 second',
        locked_by = null,
        locked_at = null
    where j.id = job_id and j.locked_by = worker_id
    returning * into v_job;
  update :KONGTASK_SCHEMA.job_queues as q
    set locked_by = null, locked_at = null
    where q.queue_name = v_job.queue_name and q.locked_by = worker_id;
  return v_job;
end;
$$ language plpgsql volatile strict;
