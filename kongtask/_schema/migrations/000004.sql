-- kongtask migration 4: add_job takes a priority and checks what it is given (each refusal with
-- its own SQLSTATE); the admin functions complete, fail or reschedule many jobs by id.

drop function :KONGTASK_SCHEMA.add_job(text, json, text, timestamptz, int, text);

-- Every option defaults to null, so a caller may pass null for "the default".
create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json = null,
  queue_name text = null,
  run_at timestamptz = null,
  max_attempts int = null,
  job_key text = null,
  priority int = null
) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  if length(identifier) > 128 then
    raise exception 'Task identifier is too long (max length: 128).' using errcode = 'GWBID';
  end if;
  if length(queue_name) > 128 then
    raise exception 'Job queue name is too long (max length: 128).' using errcode = 'GWBQN';
  end if;
  if length(job_key) > 512 then
    raise exception 'Job key is too long (max length: 512).' using errcode = 'GWBJK';
  end if;
  if max_attempts < 1 then
    raise exception 'Job maximum attempts must be at least 1' using errcode = 'GWBMA';
  end if;

  if job_key is not null then
    insert into :KONGTASK_SCHEMA.jobs as j
        (task_identifier, payload, queue_name, run_at, max_attempts, key, priority)
      values (identifier, coalesce(payload, '{}'), queue_name, coalesce(run_at, now()),
              coalesce(max_attempts, 25), job_key, coalesce(priority, 0))
      on conflict (key) do update
        set task_identifier = excluded.task_identifier,
            payload = excluded.payload,
            queue_name = excluded.queue_name,
            run_at = excluded.run_at,
            max_attempts = excluded.max_attempts,
            priority = excluded.priority,
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
  insert into :KONGTASK_SCHEMA.jobs (task_identifier, payload, queue_name, run_at, max_attempts, key, priority)
    values (identifier, coalesce(payload, '{}'), queue_name, coalesce(run_at, now()),
            coalesce(max_attempts, 25), job_key, coalesce(priority, 0))
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql volatile;

-- A job counts as running while locked, unless the lock is older than 4 hours (a dead worker's).
create function :KONGTASK_SCHEMA.complete_jobs(job_ids bigint[])
returns setof :KONGTASK_SCHEMA.jobs as $$
  delete from :KONGTASK_SCHEMA.jobs as j
    where j.id = any(job_ids)
      and (j.locked_by is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$ language sql volatile;

create function :KONGTASK_SCHEMA.permanently_fail_jobs(job_ids bigint[], error_message text = null)
returns setof :KONGTASK_SCHEMA.jobs as $$
  update :KONGTASK_SCHEMA.jobs as j
    set last_error = coalesce(error_message, 'Manually marked as failed'),
        attempts = j.max_attempts
    where j.id = any(job_ids)
      and (j.locked_by is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$ language sql volatile;

create function :KONGTASK_SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz = null,
  priority int = null,
  attempts int = null,
  max_attempts int = null
) returns setof :KONGTASK_SCHEMA.jobs as $$
  update :KONGTASK_SCHEMA.jobs as j
    set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
        priority = coalesce(reschedule_jobs.priority, j.priority),
        attempts = coalesce(reschedule_jobs.attempts, j.attempts),
        max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts)
    where j.id = any(job_ids)
      and (j.locked_by is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$ language sql volatile;
