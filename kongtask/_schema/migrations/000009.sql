-- kongtask migration 9: get_job takes the time to fetch at ("now"), for tests and clock skew.

drop function :KONGTASK_SCHEMA.get_job(text, text[], interval, text[]);

create function :KONGTASK_SCHEMA.get_job(
  worker_id text,
  task_identifiers text[] = null,
  job_expiry interval = interval '4 hours',
  forbidden_flags text[] = null,
  now timestamptz = now()
) returns :KONGTASK_SCHEMA.jobs as $$
declare
  v_job_id bigint;
  v_queue text;
  v_job :KONGTASK_SCHEMA.jobs;
begin
  if worker_id is null or length(worker_id) < 10 then
    raise exception 'invalid worker id';
  end if;

  select j.id, j.queue_name into v_job_id, v_queue
    from :KONGTASK_SCHEMA.jobs as j
    where (j.locked_at is null or j.locked_at < get_job.now - job_expiry)
      and (
        j.queue_name is null
        or exists (
          select 1 from :KONGTASK_SCHEMA.job_queues as q
            where q.queue_name = j.queue_name
              and (q.locked_at is null or q.locked_at < get_job.now - job_expiry)
            for update skip locked
        )
      )
      and j.run_at <= get_job.now
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
      set locked_by = worker_id, locked_at = get_job.now
      where q.queue_name = v_queue;
  end if;

  update :KONGTASK_SCHEMA.jobs as j
    set attempts = j.attempts + 1, locked_by = worker_id, locked_at = get_job.now
    where j.id = v_job_id
    returning * into v_job;
  return v_job;
end;
$$ language plpgsql volatile;
