-- kongtask migration 6: the fetch index leaves out jobs whose attempts are used up, and carries
-- locked_at; it replaces the v0.1.0 index.

create index jobs_priority_run_at_id_locked_at_without_failures_idx
  on :KONGTASK_SCHEMA.jobs (priority, run_at, id, locked_at)
  where attempts < max_attempts;

drop index :KONGTASK_SCHEMA.jobs_priority_run_at_id_idx;
