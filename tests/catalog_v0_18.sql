-- The catalog query of graphile-worker's 0.18 contract (one line per object, function bodies left
-- out), as tests/catalog.py runs it: psql's :'s' variable is the %(s)s parameter here. One change:
-- PostgreSQL 18 records NOT NULL as constraints too (contype 'n'); columns already say "not null",
-- so those are left out, as the reference (made on PostgreSQL 15) has none.
select 'col ' || c.relname || '.' || a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || case when a.attnotnull then ' not null' else '' end
       || case a.attidentity when 'a' then ' identity always' when 'd' then ' identity by default' else '' end
       || case a.attgenerated when 's' then ' generated' else '' end
       || coalesce(' default ' || replace(pg_get_expr(d.adbin, d.adrelid), %(s)s || '.', 'S.'), '')
  from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
 where n.nspname = %(s)s and c.relkind in ('r', 'v', 'c') and a.attnum > 0 and not a.attisdropped
union all
select 'rel ' || c.relname || ' kind=' || c.relkind::text || ' rls=' || c.relrowsecurity::text
  from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = %(s)s and c.relkind <> 'S'
union all
select 'view ' || c.relname || ' ' || regexp_replace(replace(pg_get_viewdef(c.oid, true), %(s)s || '.', 'S.'), '\s+', ' ', 'g')
  from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = %(s)s and c.relkind = 'v'
union all
select 'con ' || replace(conrelid::regclass::text, %(s)s || '.', 'S.') || ' ' || conname || ' ' || replace(pg_get_constraintdef(oid), %(s)s || '.', 'S.')
  from pg_constraint where connamespace = (select oid from pg_namespace where nspname = %(s)s)
   and contype <> 'n'
union all
select 'idx ' || replace(indexdef, %(s)s || '.', 'S.') from pg_indexes where schemaname = %(s)s
union all
select 'trg ' || replace(pg_get_triggerdef(t.oid), %(s)s || '.', 'S.')
  from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = %(s)s and not t.tgisinternal
union all
select 'fn ' || p.proname || '(' || replace(pg_get_function_arguments(p.oid), %(s)s || '.', 'S.') || ') returns '
       || replace(pg_get_function_result(p.oid), %(s)s || '.', 'S.')
       || ' lang=' || l.lanname || ' vol=' || p.provolatile::text || ' secdef=' || p.prosecdef::text
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
 where n.nspname = %(s)s
order by 1
