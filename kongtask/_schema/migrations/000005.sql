-- kongtask migration 5: a job's revision (bumped when a key replaces it) and its flags, which a
-- worker may forbid at fetch.

alter table :KONGTASK_SCHEMA.jobs add column revision int default 0 not null;
alter table :KONGTASK_SCHEMA.jobs add column flags jsonb default null;

drop function :KONGTASK_SCHEMA.add_job(text, json, text, timestamptz, int, text, int);

-- flags arrive as a list of names and are kept as {"name": true, ...}, for the ?| operator.
create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json = null,
  queue_name text = null,
  run_at timestamptz = null,
  max_attempts int = null,
  job_key text = null,
  priority int = null,
  flags text[] = null
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
    raise exception 'Job maximum attempts must be at least 1' using errcode = 'GWBMA';
  end if;

  if job_key is not null then
    insert into :KONGTASK_SCHEMA.jobs as j
        (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
      values (identifier, coalesce(payload, '{}'), queue_name, coalesce(run_at, now()),
              coalesce(max_attempts, 25), job_key, coalesce(priority, 0), v_flags)
      on conflict (key) do update
        set task_identifier = excluded.task_identifier,
            payload = excluded.payload,
            queue_name = excluded.queue_name,
            run_at = excluded.run_at,
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
    update :KONGTASK_SCHEMA.jobs as j
      set key = null, attempts = j.max_attempts
      where j.key = job_key;
  end if;
  insert into :KONGTASK_SCHEMA.jobs
      (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
    values (identifier, coalesce(payload, '{}'), queue_name, coalesce(run_at, now()),
            coalesce(max_attempts, 25), job_key, coalesce(priority, 0), v_flags)
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql volatile;

drop function :KONGTASK_SCHEMA.get_job(text, text[], interval);

create function :KONGTASK_SCHEMA.get_job(
  worker_id text,
  task_identifiers text[] = null,
  job_expiry interval = interval '4 hours',
  forbidden_flags text[] = null
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
      and (forbidden_flags is null or (j.flags ?| forbidden_flags) is not true)
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
