-- kongtask migration 10: a job without a queue name has no queue (no random one); from here on
-- the schema needs no extension.

alter table :KONGTASK_SCHEMA.jobs alter column queue_name drop default;
