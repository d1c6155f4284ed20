-- kongtask migration 15: the v0.1.0 trigger functions lost their tables in migration 11 and go;
-- force_unlock_workers releases every job and queue that crashed workers held.

drop function :KONGTASK_SCHEMA.jobs__increase_job_queue_count();
drop function :KONGTASK_SCHEMA.jobs__decrease_job_queue_count();
drop function :KONGTASK_SCHEMA.tg__update_timestamp();

create function :KONGTASK_SCHEMA.force_unlock_workers(worker_ids text[]) returns void as $$
  update :KONGTASK_SCHEMA.jobs as j
    set locked_at = null, locked_by = null
    where j.locked_by = any(worker_ids);
  update :KONGTASK_SCHEMA.job_queues as q
    set locked_at = null, locked_by = null
    where q.locked_by = any(worker_ids);
$$ language sql volatile;
