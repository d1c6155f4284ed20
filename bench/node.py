"""Node graphile-worker 0.1.0, installed once into a cache folder, as the reference to beat."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .results import Unavailable
from .workers import BENCH_DIR, WorkerCommand

CACHE = Path.home() / ".cache" / "kongtask-bench" / "node"

#: graphile-worker 0.1.0 pins pg@7, whose client never connects on Node >= 14 (it hangs without an
#: error), so pg is overridden with a release that works; the worker's own code is unchanged.
PACKAGE_JSON = {"private": True, "dependencies": {"graphile-worker": "0.1.0"}, "overrides": {"pg": "^8.11.3"}}

#: The Node CLI loads ``./tasks`` from its working directory: this folder holds the JS twins of
#: ``bench/tasks``.
NODE_WORKER_DIR = BENCH_DIR / "node_worker"


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


def node_command() -> WorkerCommand:
    """The Node 0.1.0 CLI, installing it first if needed, or :class:`Unavailable` saying why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Unavailable("node/npm not installed")
    cli = CACHE / "node_modules" / "graphile-worker" / "dist" / "cli.js"
    if not _installed():
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "package.json").write_text(json.dumps(PACKAGE_JSON, indent=2) + "\n")
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CACHE,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0 or not _installed():
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise Unavailable(f"npm install graphile-worker@0.1.0 failed: {lines[-1] if lines else 'no output'}")
    # `node cli.js` rather than the bin link: no /usr/bin/env in between, so the pid we time is node.
    return WorkerCommand("node", (node, str(cli)), NODE_WORKER_DIR)


def _installed() -> bool:
    try:
        manifest = json.loads((CACHE / "package.json").read_text())
        worker = json.loads((CACHE / "node_modules" / "graphile-worker" / "package.json").read_text())
        pg = json.loads((CACHE / "node_modules" / "pg" / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest == PACKAGE_JSON and worker.get("version") == "0.1.0" and str(pg.get("version")).startswith("8.")
