"""The PostgreSQL server the benchmark runs on: DATABASE_URL, or a throwaway one of its own.

A throwaway server keeps PostgreSQL's default durability (fsync, synchronous_commit and
full_page_writes all on): the figures are meant to be what a real deployment sees, not a
tuned-for-tests server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from kongtask._embedded.server import EmbeddedServer, private_temporary_home

#: Debian's PostgreSQL 15, the server the upstream comparison figures in the spec were taken on.
DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class Server:
    admin_url: str  # a database we may connect to and CREATE DATABASE from
    origin: str  # where the server came from, for the report


@dataclass(frozen=True)
class ServerFacts:
    version: str
    durability: dict[str, str]

    def describe(self) -> str:
        settings = ", ".join(f"{name}={value}" for name, value in self.durability.items())
        return f"PostgreSQL {self.version}; {settings}"


def read_facts(server: Server) -> ServerFacts:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        version = str(conn.execute("show server_version").fetchone()[0])  # type: ignore[index]
        durability = {
            name: str(conn.execute(f"show {name}").fetchone()[0])  # type: ignore[index]
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        }
    return ServerFacts(version, durability)


@contextmanager
def provide_server(database_url: str | None) -> Iterator[Server]:
    """The server to benchmark on, stopped and deleted afterwards when we started it."""
    if database_url:
        yield Server(database_url, "DATABASE_URL")
    elif (DEBIAN_PG15 / "initdb").exists():
        with _debian_pg15() as server:
            yield server
    else:
        with _embedded() as server:
            yield server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres() -> dict[str, Any]:
    # initdb and pg_ctl refuse to run as root; as root we hand them to the postgres user.
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@contextmanager
def _debian_pg15() -> Iterator[Server]:
    home = Path(tempfile.mkdtemp(prefix="kongtask-bench-pg15-"))
    run_as = _as_postgres()
    if run_as:
        os.chown(home, run_as["user"], run_as["group"])
    data, port = home / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run([str(DEBIAN_PG15 / args[0]), *args[1:]], check=True, capture_output=True, timeout=120, **run_as)

    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C")
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={home}"
        pg("pg_ctl", "start", "-w", "-D", str(data), "-l", str(home / "server.log"), "-o", options)
        try:
            yield Server(f"postgresql://postgres@127.0.0.1:{port}/postgres", "throwaway Debian PostgreSQL 15")
        finally:
            pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(data))
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{exc.cmd[0]} failed: {exc.stderr.decode(errors='replace').strip()}") from None
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def _embedded() -> Iterator[Server]:
    home = private_temporary_home("kongtask-bench-pg-")
    server = EmbeddedServer(home)  # no settings: default durability
    try:
        yield Server(server.start(), "throwaway embedded PostgreSQL (unix socket)")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
