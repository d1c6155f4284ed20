"""Node graphile-worker, the reference to beat: 0.1.0 on the v0.1.0 schema, 0.18.0 on the modern
one, each installed once into a cache folder of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import Unavailable
from .workers import BENCH_DIR, WorkerCommand

CACHE_ROOT = Path.home() / ".cache" / "kongtask-bench"

#: The Node CLIs load ``./tasks`` from their working directory: this folder holds the JS twins of
#: ``bench/tasks``, which both versions run (a task is ``(payload, helpers)`` in both).
NODE_WORKER_DIR = BENCH_DIR / "node_worker"

#: graphile-worker 0.18's local queue (jobs fetched in batches of up to 500 and handed out
#: in-process) and batched completions (gathered for 0 ms: what completes while one statement is
#: in flight goes in the next), both off by default: the settings issue 13's figures were taken
#: with. They reach the CLI as a preset file (``--config``), written next to the package.
BATCHING = {"localQueue": {"size": 500}, "completeJobBatchDelay": 0}


@dataclass(frozen=True)
class NodePackage:
    version: str
    cache: Path
    manifest: dict[str, Any]
    pg_major: str | None = None  # the major version of pg it must resolve to, when overridden

    def installed(self) -> bool:
        try:
            manifest = json.loads((self.cache / "package.json").read_text())
            worker = json.loads((self.cache / "node_modules" / "graphile-worker" / "package.json").read_text())
            pg = json.loads((self.cache / "node_modules" / "pg" / "package.json").read_text())
        except (OSError, ValueError):
            return False
        pg_ok = self.pg_major is None or str(pg.get("version")).startswith(f"{self.pg_major}.")
        return manifest == self.manifest and worker.get("version") == self.version and pg_ok

    @property
    def cli(self) -> Path:
        return self.cache / "node_modules" / "graphile-worker" / "dist" / "cli.js"


#: graphile-worker 0.1.0 pins pg@7, whose client never connects on Node >= 14 (it hangs without an
#: error), so pg is overridden with a release that works; the worker's own code is unchanged.
NODE_0_1 = NodePackage(
    "0.1.0",
    CACHE_ROOT / "node",
    {"private": True, "dependencies": {"graphile-worker": "0.1.0"}, "overrides": {"pg": "^8.11.3"}},
    pg_major="8",
)
#: graphile-worker 0.18.0 as published, its own dependencies unchanged.
NODE_0_18 = NodePackage(
    "0.18.0", CACHE_ROOT / "node-0.18.0", {"private": True, "dependencies": {"graphile-worker": "0.18.0"}}
)

#: system -> (the package it runs, extra CLI arguments).
NODE_CLIS: dict[str, tuple[NodePackage, tuple[str, ...]]] = {
    "node": (NODE_0_1, ()),
    "node-0.18": (NODE_0_18, ()),
    "node-0.18-batched": (NODE_0_18, ("--config", str(NODE_0_18.cache / "batching.config.mjs"))),
}


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


def node_command(system: str = "node") -> WorkerCommand:
    """The CLI of ``system``'s graphile-worker, installing it first if needed, or
    :class:`Unavailable` saying why not."""
    package, extra = NODE_CLIS[system]
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Unavailable("node/npm not installed")
    if not package.installed():
        package.cache.mkdir(parents=True, exist_ok=True)
        (package.cache / "package.json").write_text(json.dumps(package.manifest, indent=2) + "\n")
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=package.cache,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0 or not package.installed():
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise Unavailable(
                f"npm install graphile-worker@{package.version} failed: {lines[-1] if lines else 'no output'}"
            )
    if extra:
        # graphile-config merges this preset over graphile-worker's own and under the CLI's flags.
        preset = {"worker": BATCHING}
        Path(extra[-1]).write_text(f"export default {json.dumps(preset, indent=2)};\n")
    # `node cli.js` rather than the bin link: no /usr/bin/env in between, so the pid we time is node.
    return WorkerCommand(system, (node, str(package.cli), *extra), NODE_WORKER_DIR)


def node_about(system: str) -> str:
    """A line about ``system`` for the report."""
    package, extra = NODE_CLIS[system]
    line = f"graphile-worker {package.version} on node {node_version()}"
    if extra:
        return f"{line}, preset {{worker: {json.dumps(BATCHING)}}} ({extra[-1]})"
    return f"{line}, its defaults" if package is NODE_0_18 else line
