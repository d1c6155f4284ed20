-- kongtask migration 13 (breaking): job_spec, add_job and reschedule_jobs take max_attempts and
-- priority as smallint, the type the jobs table stores them in.

alter type :KONGTASK_SCHEMA.job_spec alter attribute max_attempts type smallint;
alter type :KONGTASK_SCHEMA.job_spec alter attribute priority type smallint;

drop function :KONGTASK_SCHEMA.add_job(text, json, text, timestamptz, integer, text, integer, text[], text);
create function :KONGTASK_SCHEMA.add_job(
  identifier text,
  payload json default null,
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts smallint default null,
  job_key text default null,
  priority smallint default null,
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
      on conflict (key) do update set revision = j.revision + 1, updated_at = now()
      returning * into v_job;
    return v_job;
  else
    raise exception 'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;
end;
$$ language plpgsql;

drop function :KONGTASK_SCHEMA.reschedule_jobs(bigint[], timestamptz, integer, integer, integer);
create function :KONGTASK_SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority smallint default null,
  attempts smallint default null,
  max_attempts smallint default null
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
