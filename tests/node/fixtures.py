"""Real Node graphile-worker for the interop tests: installed once, run as its users run it.

The npm packages go into a cache folder (``$KONGTASK_NODE_CACHE``, else
``~/.cache/kongtask-tests/node``) once per machine; an ``flock`` keeps parallel xdist processes
from installing at the same time. Where ``node`` or ``npm`` is missing, the tests skip and say so.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

import pytest
from psycopg.conninfo import conninfo_to_dict

JS_DIR = Path(__file__).resolve().parent / "js"
#: The kongtask twin of js/tasks/record_payload.js, for the kongtask CLI's tasks folder.
PY_TASK = Path(__file__).resolve().parent / "py" / "record_payload.py"
#: The kongtask twin of js/tasks/record_times.js, for the mixed-fleet test.
PY_TIMES_TASK = Path(__file__).resolve().parent / "py" / "record_times.py"

#: One folder per upstream version, each with the package.json that npm installs there.
PACKAGES: dict[str, dict[str, Any]] = {
    "0.1.0": {
        "name": "kongtask-interop-graphile-worker-0-1-0",
        "private": True,
        "dependencies": {"graphile-worker": "0.1.0"},
        # 0.1.0 pins pg@7, which on Node 20 never connects: the CLI exits 0 having done nothing;
        # pg 8 keeps the API 0.1.0 uses.
        "overrides": {"pg": "^8.11.3"},
    },
    "0.17.3": {
        "name": "kongtask-interop-graphile-worker-0-17-3",
        "private": True,
        "dependencies": {"graphile-worker": "0.17.3"},
    },
    # The schema kongtask's migrations 2..20 build, on request (kongtask migrate --to latest).
    "0.18.0": {
        "name": "kongtask-interop-graphile-worker-0-18-0",
        "private": True,
        "dependencies": {"graphile-worker": "0.18.0"},
    },
}

#: Seconds before a Node process counts as hung; a hang then fails the test instead of blocking.
NODE_TIMEOUT_S = 120
_NPM_TIMEOUT_S = 600
_INSTALLED_MARK = ".kongtask-installed"


def node_url(conninfo: str) -> str:
    """``conninfo`` (a libpq URL or key=value string) as a URL that Node's pg reads the same way.

    pg-connection-string reads URLs only (a key=value string turns into nonsense), so the URL is
    rebuilt from libpq's own reading. A unix-socket folder, or a port without a host, goes in the
    query string, which pg reads too; with no host at all, pg falls back to PGHOST as libpq does.
    """
    params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items() if value is not None}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    credentials = user + (":" + quote(password, safe="") if password else "")
    at = f"{credentials}@" if credentials else ""
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname", ""), safe="")
    if host and not host.startswith("/"):
        netloc = at + host + (f":{port}" if port else "")
    else:
        netloc = at
        params = {**({"host": host} if host else {}), **({"port": port} if port else {}), **params}
    query = urlencode(params, safe="/", quote_via=quote)
    return f"postgresql://{netloc}/{dbname}" + (f"?{query}" if query else "")


def node_cache_dir() -> Path:
    configured = os.environ.get("KONGTASK_NODE_CACHE")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kongtask-tests" / "node"


def _install_one(folder: Path, manifest: dict[str, Any], npm: str) -> None:
    """Installs ``manifest`` into ``folder`` unless that exact manifest is installed already."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    mark = folder / _INSTALLED_MARK
    if mark.is_file() and mark.read_text() == text and (folder / "node_modules" / ".bin" / "graphile-worker").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    mark.unlink(missing_ok=True)
    shutil.rmtree(folder / "node_modules", ignore_errors=True)
    (folder / "package-lock.json").unlink(missing_ok=True)
    (folder / "package.json").write_text(text)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"npm install in {folder} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    mark.write_text(text)


def install_packages(cache: Path, npm: str) -> None:
    """Every upstream version in ``PACKAGES``, installed once; concurrent callers wait their turn."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for version, manifest in PACKAGES.items():
                _install_one(cache / f"graphile-worker-{version}", manifest, npm)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class NodeEnv:
    """Runs the installed upstream versions: their CLI, and our scripts against their library."""

    node: str
    cache: Path

    def package_dir(self, version: str) -> Path:
        return self.cache / f"graphile-worker-{version}"

    def _env(self, version: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        # Our scripts live outside the install folder; NODE_PATH lets them require its packages.
        env["NODE_PATH"] = str(self.package_dir(version) / "node_modules")
        env["PATH"] = str(Path(self.node).parent) + os.pathsep + env.get("PATH", "")
        return env

    def _run(self, args: list[str], version: str, cwd: Path | None, timeout: float) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            args, cwd=cwd, env=self._env(version), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:3])} ... exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
            )
        return result

    def _cli_args(self, version: str, url: str, flags: tuple[str, ...]) -> list[str]:
        binary = self.package_dir(version) / "node_modules" / ".bin" / "graphile-worker"
        return [str(binary), "-c", node_url(url), *flags]

    def cli(
        self, version: str, url: str, *flags: str, cwd: Path, timeout: float = NODE_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``graphile-worker -c URL FLAGS`` from ``cwd`` (which holds ``tasks/``); fails on a non-zero exit."""
        return self._run(self._cli_args(version, url, flags), version, cwd, timeout)

    def start_cli(
        self, version: str, url: str, *flags: str, cwd: Path, log: IO[bytes] | None = None
    ) -> subprocess.Popen[str]:
        """The same command, started in the background; the caller waits for it (with a timeout).

        Its output goes to pipes, or with ``log`` to that file: a worker that logs every job would
        fill a pipe nobody reads until it ends, and then block.
        """
        output: IO[bytes] | int = subprocess.PIPE if log is None else log
        return subprocess.Popen(
            self._cli_args(version, url, flags), cwd=cwd, env=self._env(version), text=True,
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.PIPE if log is None else subprocess.STDOUT,
        )

    def script(
        self, name: str, *args: str, version: str = "0.1.0", timeout: float = NODE_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``node js/NAME ARGS`` with ``version``'s packages on the require path."""
        return self._run([self.node, str(JS_DIR / name), *args], version, None, timeout)


def tasks_folder(cwd: Path, task_names: Iterable[str], template: str = "record_payload") -> Path:
    """``cwd/tasks`` holding ``js/tasks/<template>.js`` under each name; returns ``cwd`` for the CLI.

    The default template records each job in ``public.interop_results``. Upstream 0.1.0's
    ``--once`` fails with "No runnable tasks!" on an empty task list, so even a run that only
    migrates needs one task.
    """
    folder = cwd / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for name in task_names:
        shutil.copyfile(JS_DIR / "tasks" / f"{template}.js", folder / f"{name}.js")
    return cwd


@pytest.fixture(scope="session")
def node_env() -> NodeEnv:
    """Node with graphile-worker 0.1.0, 0.17.3 and 0.18.0 installed; skips where node or npm is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found on PATH; install Node.js (with npm) to run the graphile-worker interop tests")
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not found on PATH; install npm to run the graphile-worker interop tests")
    cache = node_cache_dir()
    install_packages(cache, npm)
    return NodeEnv(node=node, cache=cache)
