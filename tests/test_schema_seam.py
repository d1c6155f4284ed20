"""One object stands for the schema a database holds: its statements and what it can do."""

from __future__ import annotations

import asyncio
import typing

import psycopg

import kongtask
from kongtask._schema import held_by, schema_named, v0_18
from kongtask._schema.generation import Capabilities, DatabaseSchema


def _declared(schema: object) -> None:
    for name, hint in typing.get_type_hints(DatabaseSchema).items():
        assert hasattr(schema, name), name
        if hint is str:
            assert isinstance(getattr(schema, name), str) and getattr(schema, name), name
    for name in ("register_tasks", "expire_locks"):  # the read-only members a generation may lack
        assert getattr(schema, name) is None or getattr(schema, name), name


def test_the_v0_1_generation_provides_every_statement_the_seam_declares() -> None:
    schema = schema_named("graphile_worker")
    _declared(schema)
    assert schema.generation == "v0.1.0" and schema.capabilities == Capabilities()
    assert schema.register_tasks is None and schema.expire_locks is None


def test_the_0_18_generation_provides_every_statement_the_seam_declares() -> None:
    schema = v0_18.schema_named("graphile_worker")
    _declared(schema)
    assert schema.generation == "0.18" and schema.capabilities.job_keys and schema.capabilities.pool_locks
    assert schema.register_tasks and schema.expire_locks


def test_a_v0_1_database_is_held_as_v0_1_under_its_own_name(migrated_url: str) -> None:
    async def look() -> tuple[str, str]:
        async with await psycopg.AsyncConnection.connect(migrated_url) as conn:
            schema = await held_by(conn, "graphile_worker")
            return schema.generation, schema.name

    assert asyncio.run(look()) == ("v0.1.0", "graphile_worker")


def test_the_workers_run_on_the_schema_chosen_at_start(migrated_url: str) -> None:
    async def start() -> str:
        runner = await kongtask.run(task_list={"t": lambda payload, helpers: None}, connection_string=migrated_url)
        try:
            return runner._config.database.generation
        finally:
            await runner.stop()

    assert asyncio.run(start()) == "v0.1.0"
