-- The statements kongtask sends to a database of graphile-worker's 0.18 schema (migrations 2..20).
-- So far only what migrating to it needs: kongtask's worker does not run on this schema yet.
-- One named block each, read by kongtask/_schema/v0_18.py; {schema} is the quoted schema name.

-- name: migrations_columns
-- Whether the migrations table has graphile-worker's "breaking" column (a v0.1.0 table has not).
select exists (
  select 1 from pg_attribute
  where attrelid = to_regclass(%s) and attname = 'breaking' and attnum > 0 and not attisdropped
)

-- name: applied_migrations
select id from {schema}.migrations order by id

-- name: applied_migrations_breaking
select id, breaking from {schema}.migrations order by id

-- name: add_breaking_column
-- The first modern migration adds the column and marks the breaking migrations already applied.
alter table {schema}.migrations add column if not exists breaking boolean not null default false

-- name: mark_breaking
update {schema}.migrations set breaking = true where id = any(%s::int[]) and not breaking

-- name: record_migration
-- First in a migration's transaction: a duplicate key then means another process applied it.
insert into {schema}.migrations (id, breaking) values (%s, %s)

-- name: notify_migrated
-- Running graphile-worker pools listen here and stop after a breaking migration they did not run.
select pg_notify('worker:migrate', %s)
