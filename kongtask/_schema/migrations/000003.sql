-- kongtask migration 3 (breaking): a job may have no queue at all (queue_name null), and then it
-- never waits for another job. The job row itself becomes the lock for such jobs.

alter table :KONGTASK_SCHEMA.jobs alter column queue_name drop not null;

drop function :KONGTASK_SCHEMA.add_job(text, json, text, timestamptz, int, text);

create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json = '{}',
  queue_name text = null,
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
            queue_name = excluded.queue_name,
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

  select j.id, j.queue_name into v_job_id, v_queue
    from :KONGTASK_SCHEMA.jobs as j
    where (j.locked_at is null or j.locked_at < v_now - job_expiry)
      and (
        j.queue_name is null
        or exists (
          select 1 from :KONGTASK_SCHEMA.job_queues as q
            where q.queue_name = j.queue_name
              and (q.locked_at is null or q.locked_at < v_now - job_expiry)
            for update skip locked
        )
      )
      and j.run_at <= v_now
      and j.attempts < j.max_attempts
      and (task_identifiers is null or j.task_identifier = any(task_identifiers))
    order by j.priority asc, j.run_at asc, j.id asc
    limit 1
    for update skip locked;

  if v_job_id is null then
    return null;
  end if;

  if v_queue is not null then
    update :KONGTASK_SCHEMA.job_queues as q
      set locked_by = worker_id, locked_at = v_now
      where q.queue_name = v_queue;
  end if;

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
  if v_job.queue_name is not null then
    update :KONGTASK_SCHEMA.job_queues as q
      set locked_by = null, locked_at = null
      where q.queue_name = v_job.queue_name and q.locked_by = worker_id;
  end if;
  return v_job;
end;
$$ language plpgsql volatile strict;

create or replace function :KONGTASK_SCHEMA.complete_job(worker_id text, job_id bigint)
returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  delete from :KONGTASK_SCHEMA.jobs as j
    where j.id = job_id
    returning * into v_job;
  if v_job.queue_name is not null then
    update :KONGTASK_SCHEMA.job_queues as q
      set locked_by = null, locked_at = null
      where q.queue_name = v_job.queue_name and q.locked_by = worker_id;
  end if;
  return v_job;
end;
$$ language plpgsql;

-- The queue counters ignore jobs without a queue, and a moved job only when its queue changed.
drop trigger _500_increase_job_queue_count on :KONGTASK_SCHEMA.jobs;
drop trigger _500_decrease_job_queue_count on :KONGTASK_SCHEMA.jobs;
drop trigger _500_increase_job_queue_count_update on :KONGTASK_SCHEMA.jobs;
drop trigger _500_decrease_job_queue_count_update on :KONGTASK_SCHEMA.jobs;
create trigger _500_increase_job_queue_count
  after insert on :KONGTASK_SCHEMA.jobs
  for each row when (new.queue_name is not null)
  execute function :KONGTASK_SCHEMA.jobs__increase_job_queue_count();
create trigger _500_decrease_job_queue_count
  after delete on :KONGTASK_SCHEMA.jobs
  for each row when (old.queue_name is not null)
  execute function :KONGTASK_SCHEMA.jobs__decrease_job_queue_count();
create trigger _500_increase_job_queue_count_update
  after update of queue_name on :KONGTASK_SCHEMA.jobs
  for each row when (new.queue_name is distinct from old.queue_name and new.queue_name is not null)
  execute function :KONGTASK_SCHEMA.jobs__increase_job_queue_count();
create trigger _500_decrease_job_queue_count_update
  after update of queue_name on :KONGTASK_SCHEMA.jobs
  for each row when (new.queue_name is distinct from old.queue_name and old.queue_name is not null)
  execute function :KONGTASK_SCHEMA.jobs__decrease_job_queue_count();
