-- kongtask migration 8: what the cron scheduler remembers of each crontab item.

create table :KONGTASK_SCHEMA.known_crontabs (
  identifier text not null primary key,
  known_since timestamptz not null,
  last_execution timestamptz
);
alter table :KONGTASK_SCHEMA.known_crontabs enable row level security;
