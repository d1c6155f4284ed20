-- kongtask migration 7: job_key_mode. 'replace' (the default) and 'preserve_run_at' update a
-- waiting job in place, the latter keeping its run_at while it has not been tried; 'unsafe_dedupe'
-- keeps the existing job as it is. remove_job stops a running keyed job from being retried.

drop function :KONGTASK_SCHEMA.add_job(text, json, text, timestamptz, int, text, int, text[]);

create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json = null,
  queue_name text = null,
  run_at timestamptz = null,
  max_attempts integer = null,
  job_key text = null,
  priority integer = null,
  flags text[] = null,
  job_key_mode text = 'replace'
) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
  v_flags jsonb := (select jsonb_object_agg(f, true) from unnest(flags) as f);
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
    raise exception 'Job maximum attempts must be at least 1.' using errcode = 'GWBMA';
  end if;

  if job_key is not null and (job_key_mode is null or job_key_mode in ('replace', 'preserve_run_at')) then
    insert into :KONGTASK_SCHEMA.jobs as j
        (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
      values (identifier, coalesce(payload, '{}'), queue_name, coalesce(run_at, now()),
              coalesce(max_attempts, 25), job_key, coalesce(priority, 0), v_flags)
      on conflict (key) do update
        set task_identifier = excluded.task_identifier,
            payload = excluded.payload,
            queue_name = excluded.queue_name,
            run_at = case when job_key_mode = 'preserve_run_at' and j.attempts = 0
                          then j.run_at else excluded.run_at end,
            max_attempts = excluded.max_attempts,
            priority = excluded.priority,
            revision = j.revision + 1,
            flags = excluded.flags,
            attempts = 0,
            last_error = null
        where j.locked_at is null
      returning * into v_job;
    if v_job.id is not null then
      return v_job;
    end if;
    -- The keyed job is running: it keeps running with stale input, but is not retried.
    update :KONGTASK_SCHEMA.jobs as j
      set key = null, attempts = j.max_attempts
      where j.key = job_key;
  elsif job_key is not null and job_key_mode = 'unsafe_dedupe' then
    insert into :KONGTASK_SCHEMA.jobs as j
        (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
      values (identifier, coalesce(payload, '{}'), queue_name, coalesce(run_at, now()),
              coalesce(max_attempts, 25), job_key, coalesce(priority, 0), v_flags)
      -- An update, not "do nothing", so that the existing row is returned.
      on conflict (key) do update set revision = j.revision + 1
      returning * into v_job;
    return v_job;
  elsif job_key is not null then
    raise exception 'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;

  insert into :KONGTASK_SCHEMA.jobs
      (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
    values (identifier, coalesce(payload, '{}'), queue_name, coalesce(run_at, now()),
            coalesce(max_attempts, 25), job_key, coalesce(priority, 0), v_flags)
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql volatile;

drop function :KONGTASK_SCHEMA.remove_job(text);

create function :KONGTASK_SCHEMA.remove_job(job_key text) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job :KONGTASK_SCHEMA.jobs;
begin
  delete from :KONGTASK_SCHEMA.jobs as j
    where j.key = job_key and j.locked_at is null
    returning * into v_job;
  if v_job.id is not null then
    return v_job;
  end if;
  -- Running: let it finish, but never retry it, and free its key.
  update :KONGTASK_SCHEMA.jobs as j
    set attempts = j.max_attempts, key = null
    where j.key = job_key
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql strict;
