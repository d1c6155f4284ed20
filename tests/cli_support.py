"""Running the real ``kongtask`` entry point in a subprocess, for the CLI tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict

from tests.support import wait_until

T = TypeVar("T")

KONGTASK = [sys.executable, "-m", "kongtask"]

_CONNECTION_VARIABLES = {"DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD",
                         "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE", "NO_LOG_SUCCESS"}


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any kongtask or database setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _CONNECTION_VARIABLES and not k.startswith("KONGTASK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def kongtask(*args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs ``kongtask ARGS`` to the end and returns it (exit code, stdout, stderr)."""
    return subprocess.run(
        [*KONGTASK, *args], cwd=cwd, env=clean_env() if env is None else env, input=input,
        capture_output=True, text=True, timeout=timeout,
    )


class Background:
    """``kongtask ARGS`` running in the background, its output going to a file we can read."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = cwd / f".kongtask-test-{len(list(cwd.glob('.kongtask-test-*')))}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*KONGTASK, *args], cwd=cwd, env=clean_env() if env is None else env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], T], what: str, timeout: float = 30) -> T:
        """Waits for ``condition`` while this runs; a timeout shows the output."""
        try:
            return wait_until(condition, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{self.output()}") from None

    def wait_for(self, text: str, count: int = 1, timeout: float = 30) -> str:
        """Waits until ``text`` has appeared ``count`` times in the output."""

        def seen() -> bool:
            if self.process.poll() is not None and self.output().count(text) < count:
                raise AssertionError(f"kongtask exited ({self.process.returncode}) before {text!r}:\n{self.output()}")
            return self.output().count(text) >= count

        self.wait_until(seen, repr(text), timeout)
        return self.output()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        if self.alive():
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self._log.close()


RECORDING_TASK = """
import json, os

def task(payload, helpers):
    with open(os.environ["KT_TEST_OUT"], "a") as out:
        out.write(json.dumps({{"task": {name!r}, "version": {version!r}, "payload": payload}}) + "\\n")
"""


def write_task(folder: Path, name: str, version: str = "v1", body: str | None = None) -> Path:
    """Writes ``folder/name.py``, by default a task that records its runs in $KT_TEST_OUT.

    The file is replaced in one step, as editors that save atomically do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(body) if body is not None else RECORDING_TASK.format(name=name, version=version)
    path = folder / f"{name}.py"
    scratch = folder.parent / f".{name}.py.tmp"
    scratch.write_text(text)
    os.replace(scratch, path)
    return path


def runs(out: Path) -> list[dict[str, Any]]:
    """The runs recorded by :data:`RECORDING_TASK` tasks."""
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def pg_environment(url: str) -> dict[str, str]:
    """libpq's PG* variables that point where ``url`` points."""
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE", "password": "PGPASSWORD"}
    params = conninfo_to_dict(url)
    return {names[k]: str(v) for k, v in params.items() if k in names and v}


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]
