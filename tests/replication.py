"""A primary and a streaming replica of Debian's PostgreSQL 15, on loopback, for the failover test.

Both servers live in one private temporary folder and listen on free ports of 127.0.0.1. As root,
they run as the ``postgres`` user (initdb and postgres refuse root), as ``.ci/run`` runs its own
PostgreSQL 15; as anyone else, as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support import wait_until

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def missing_prerequisite() -> str | None:
    """Why two PostgreSQL 15 servers cannot be started here, or ``None`` when they can."""
    if not (PG15_BIN / "postgres").exists():
        return f"PostgreSQL 15 is not installed ({PG15_BIN} is missing; apt-get install postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no 'postgres' system user to run PostgreSQL 15 as (it comes with apt-get install postgresql-15)"
    return None


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], timeout: float = 120) -> None:
    done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One PostgreSQL 15 server: its data folder, port and log."""

    data: Path
    port: int
    socket_dir: Path

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self, *settings: str) -> None:
        options = [
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}", f"-c unix_socket_directories={self.socket_dir}",
            "-c max_connections=100", "-c wal_level=replica", "-c max_wal_senders=5", "-c hot_standby=on",
            *(f"-c {s}" for s in settings),
        ]
        _run([str(PG15_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
              "-o", " ".join(options), "start"])

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            _run([str(PG15_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def promote(self) -> None:
        _run([str(PG15_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote"])

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class ReplicatedPair:
    """A primary with one streaming replica, synchronous (see :meth:`make_synchronous`)."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="kongtask-failover-"))
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres", "postgres")
        os.chmod(self.home, 0o700)
        self.primary = Server(self.home / "primary", free_port(), self.home)
        self.replica = Server(self.home / "replica", free_port(), self.home)

    def start(self) -> None:
        _run([str(PG15_BIN / "initdb"), "-D", str(self.primary.data), "-U", "postgres", "--auth=trust",
              "--encoding=UTF8", "--locale=C"])
        # The replica may become a primary without a standby of its own: nothing synchronous is
        # configured in the files pg_basebackup copies (make_synchronous sets it on the primary only).
        self.primary.start("fsync=off")
        _run([str(PG15_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
              "-D", str(self.replica.data), "-X", "stream", "-R", "--checkpoint=fast"])
        self.replica.start("fsync=off")
        wait_until(lambda: self._replica_state() == "streaming", timeout=60, what="the replica to stream")

    def _replica_state(self) -> str | None:
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            row = conn.execute("select state from pg_stat_replication").fetchone()
            return str(row[0]) if row else None

    def make_synchronous(self) -> None:
        """Every commit the primary acknowledges is on the replica too: a failover loses none."""
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            conn.execute("alter system set synchronous_standby_names = '*'")
            conn.execute("select pg_reload_conf()")

        def synchronous() -> bool:
            with psycopg.connect(self.primary.url(), autocommit=True) as conn:
                row = conn.execute("select sync_state from pg_stat_replication").fetchone()
                return bool(row and row[0] == "sync")

        wait_until(synchronous, timeout=30, what="the replica to be synchronous")

    def multi_host_url(self, dbname: str) -> str:
        """Both servers, primary first; libpq connects to whichever accepts writes."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}/{dbname}"
                "?target_session_attrs=read-write")

    def close(self) -> None:
        for server in (self.replica, self.primary):
            try:
                server.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.home, ignore_errors=True)
