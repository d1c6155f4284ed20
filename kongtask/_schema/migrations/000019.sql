-- kongtask migration 19 (breaking): changes nothing in the schema. It marks the switch of
-- locked_by from one worker's id to the worker pool's (one per process), so that workers from
-- before the switch stop when a newer one migrates.

select 1;
