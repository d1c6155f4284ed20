"""The CLI's default database: one embedded PostgreSQL per project, shared by kongtask processes.

When no connection is configured anywhere, ``kongtask worker``, ``add-job`` and ``migrate`` use a
server of the project (the working folder) whose data lives in a stable folder outside it:

* as a normal user, ``$XDG_DATA_HOME/kongtask/<folder name>-<hash>`` (``~/.local/share/...``);
* as root, ``/var/lib/kongtask/<folder name>-<hash>``. The server then runs as an unprivileged user
  (see :mod:`kongtask._embedded`), which must pass through every folder above its data: it can
  through ``/var/lib/kongtask`` (mode 0711), not through root's home folder.

The hash is of the project folder's absolute path, so every terminal in that folder finds the same
server. The server listens on a unix socket in that folder only, never on TCP.

Each process that uses the server holds a lock on a file of its own under ``<home>/users``, and
takes ``<home>/control.lock`` while it starts the server or leaves. The process that leaves last
stops the server; a process that is killed drops its lock with it, so whoever leaves last after it
still stops the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._embedded import EmbeddedServer
from .errors import KongtaskError

log = logging.getLogger("kongtask.embedded")

_ROOT_BASE = Path("/var/lib/kongtask")


def base_folder() -> Path:
    """The folder that holds every project's embedded server for this user."""
    if os.geteuid() == 0:
        return _ROOT_BASE
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "kongtask"


def project_home(project: Path) -> Path:
    """Where the embedded server of ``project`` keeps its data, socket and log."""
    project = project.resolve()
    digest = hashlib.sha256(str(project).encode()).hexdigest()[:12]
    # Short: the socket path (home/socket/.s.PGSQL.5432) must stay under the ~107-byte limit.
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", project.name)[:16] or "root"
    return base_folder() / f"{name}-{digest}"


@dataclass(frozen=True)
class EmbeddedDatabase:
    """The embedded server one process is using."""

    home: Path
    url: str
    data_dir: Path
    started: bool  # this process started it (rather than finding it running)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _in_use(lock_file: Path) -> bool:
    """Whether another process holds ``lock_file``; a file nobody holds is left behind and removed."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    lock_file.unlink(missing_ok=True)
    return False


def _make_base(base: Path) -> None:
    if os.geteuid() == 0:
        base.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(base, 0o711)  # the server's user passes through, and lists nothing
    else:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextlib.contextmanager
def embedded_database(project: Path) -> Iterator[EmbeddedDatabase]:
    """Uses the project's embedded server for the block: starts it when needed, and stops it
    afterwards unless another kongtask process still uses it.

    Raises :class:`~kongtask.errors.ConfigurationError` when the ``embedded`` extra is missing.
    """
    home = project_home(project)
    server = EmbeddedServer(home)  # fails here, before any folder is made, without the extra
    _make_base(home.parent)
    home.mkdir(mode=0o700, exist_ok=True)
    users = home / "users"
    users.mkdir(mode=0o700, exist_ok=True)
    control = home / "control.lock"

    own = users / f"{os.getpid()}-{secrets.token_hex(4)}.lock"
    own_fd: int | None = None
    try:
        with _exclusive(control):
            # Made and locked under the control lock, so no one leaving can take it for a leftover.
            own_fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            fcntl.flock(own_fd, fcntl.LOCK_EX)
            started = not server.is_running()
            if started:
                try:
                    server.start()
                except KongtaskError as exc:
                    raise KongtaskError(
                        f"{_one_line(exc)} (its log is {server.log_file}; to start again with an empty "
                        f"database, delete {home})"
                    ) from None
                log.debug("started the embedded PostgreSQL in %s", home)
        yield EmbeddedDatabase(home=home, url=server.url, data_dir=server.data_dir, started=started)
    finally:
        with _exclusive(control):
            if own_fd is not None:
                os.close(own_fd)
            own.unlink(missing_ok=True)
            others = [p for p in users.glob("*.lock") if _in_use(p)]
            if not others:
                if server.is_running():
                    server.stop()
                    log.info("stopped the embedded PostgreSQL (no other kongtask process uses it)")
            else:
                log.debug("the embedded PostgreSQL keeps running for %d other kongtask process(es)", len(others))
