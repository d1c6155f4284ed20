"""``kongtask worker --watch``: run the worker in a child process, and start a fresh one on change.

A supervisor, the way ``uvicorn --reload`` works, rather than reloading modules in place: a new
process imports every task file and helper module afresh, so no stale module, class or global can
survive an edit (upstream graphile-worker dropped in-process reloading for exactly that reason).

On a change to a ``.py`` file under the tasks folder, or to the crontab file (made, edited or
removed), the supervisor starts a new worker at once and
sends the old one :data:`RELOAD_SIGNAL`: the old worker stops fetching, and a job it is running
finishes on the old code within ``--shutdown-timeout`` (after that it is failed with "Forced worker
shutdown" and retried). Jobs are locked in the database, so the two workers never run the same
job. A worker that cannot start (a task file with a syntax error, say) prints its one-line error
and exits; the supervisor stays up and starts a worker again on the next change.

On SIGINT, SIGTERM or SIGHUP the supervisor passes the signal on to its workers (a second one too,
which makes them stop at once) and exits only once every worker has exited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("kongtask.watch")

#: Set in a worker's environment by its supervisor, to the supervisor's process id.
SUPERVISOR_ENV = "_KONGTASK_WATCH_SUPERVISOR"

#: What the supervisor sends a worker it replaces: a routine reload, unlike SIGTERM, which the
#: worker reports as a shutdown.
RELOAD_SIGNAL = signal.SIGUSR1

#: The signals that stop the supervisor; SIGHUP is a closed terminal.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: How long changes are gathered into one restart (ms), and how quiet it must be before (ms).
_DEBOUNCE_MS, _STEP_MS = 400, 50

#: Beyond the shutdown timeout, how long a retired worker may take before it is killed (s).
_KILL_GRACE_S = 10.0


def supervisor_pid() -> int | None:
    """The supervisor's process id when this process is a worker started by ``--watch``."""
    value = os.environ.get(SUPERVISOR_ENV)
    return int(value) if value and value.isdigit() else None


def supervise(
    tasks_dir: Path, argv: list[str], env: Mapping[str, str], shutdown_timeout: float, crontab: Path | None = None
) -> int:
    """Runs ``python -m kongtask <argv>`` and restarts it on change until SIGINT, SIGTERM or SIGHUP.

    ``crontab``: the crontab file the worker reads, watched too (it need not exist yet).

    Returns the exit code for the supervisor: the worker's own when it was running at the end.
    """
    # No bytecode caches for task files: a .pyc is trusted when the source's size and mtime (in whole
    # seconds) match, so a quick edit that keeps the size could otherwise run the old code.
    child_env = {**env, SUPERVISOR_ENV: str(os.getpid()), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "kongtask", *argv]
    supervisor = _Supervisor(tasks_dir.resolve(), command, child_env, shutdown_timeout)
    supervisor.crontab = crontab.resolve() if crontab is not None else None
    return asyncio.run(supervisor.run())


def _is_source_change(change: Any, path: str) -> bool:
    """Only Python source counts: not editor swap, backup, lock or temporary files, nor caches."""
    name = os.path.basename(path)
    return name.endswith(".py") and not name.startswith((".", "#")) and "__pycache__" not in Path(path).parts


class _Supervisor:
    def __init__(self, tasks_dir: Path, command: list[str], env: dict[str, str], shutdown_timeout: float) -> None:
        self.tasks_dir = tasks_dir
        self.command = command
        self.env = env
        self.shutdown_timeout = shutdown_timeout
        self.current: asyncio.subprocess.Process | None = None
        self.children: set[asyncio.subprocess.Process] = set()
        self.background: set[asyncio.Task[None]] = set()
        self.stop_requested: asyncio.Event | None = None
        self.stop_signals: list[signal.Signals] = []  # every stop signal so far, in order
        self.exit_code = 0
        self.crontab: Path | None = None

    async def run(self) -> int:
        from watchfiles import awatch

        self.stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        changes: AsyncIterator[set[tuple[Any, str]]] = awatch(
            self.tasks_dir, watch_filter=_is_source_change, debounce=_DEBOUNCE_MS, step=_STEP_MS,
            stop_event=self.stop_requested,
        )
        if self.crontab is not None and self.crontab.parent.is_dir():
            changes = _merged(changes, self._crontab_changes(self.crontab))
        next_batch = asyncio.ensure_future(changes.__anext__())
        # The generator's first step sets up the file watch, before any worker starts: no change
        # made once the worker is up can be missed. Merged with the crontab's, the two watches take
        # their first steps one turn of the loop later.
        for _ in range(3 if self.crontab is not None else 1):
            await asyncio.sleep(0)
        log.info("watching %s for changes (--watch); a change restarts the worker", self.tasks_dir)
        await self._start_worker()
        try:
            while True:
                try:
                    batch = await next_batch
                except StopAsyncIteration:
                    break
                self._report(batch)
                self._retire(self.current)
                await self._start_worker()
                next_batch = asyncio.ensure_future(changes.__anext__())
            # Still ours, the signals: a second Ctrl-C goes on to the workers, and we wait for them.
            for child in list(self.children):
                self._in_background(self._kill_if_stuck(child))
            await asyncio.gather(*(child.wait() for child in list(self.children)))
            await asyncio.gather(*self.background, return_exceptions=True)
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        return self.exit_code

    def _crontab_changes(self, crontab: Path) -> AsyncIterator[set[tuple[Any, str]]]:
        """Changes to the crontab file: its folder is watched (not recursively), since an editor may
        replace the file rather than write to it."""
        from watchfiles import awatch

        return awatch(
            crontab.parent, watch_filter=lambda change, path: Path(path) == crontab, debounce=_DEBOUNCE_MS,
            step=_STEP_MS, stop_event=self.stop_requested, recursive=False,
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        assert self.stop_requested is not None
        if not self.stop_requested.is_set():
            log.info("%s received: stopping the worker", sig.name)
        else:
            log.info("%s received again: the worker stops its running jobs now", sig.name)
        self.stop_requested.set()
        self.stop_signals.append(sig)
        for child in list(self.children):
            if child.returncode is None:
                child.send_signal(sig)

    def _report(self, batch: set[tuple[Any, str]]) -> None:
        names = sorted({os.path.relpath(path, self.tasks_dir.parent) for _, path in batch})
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        log.info("reloading because %s changed", shown)

    def _retire(self, child: asyncio.subprocess.Process | None) -> None:
        """Asks a worker to stop: running jobs finish on the code they started with."""
        if child is None or child.returncode is not None:
            return
        child.send_signal(RELOAD_SIGNAL)
        self._in_background(self._kill_if_stuck(child))

    async def _kill_if_stuck(self, child: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(child.wait(), self.shutdown_timeout + _KILL_GRACE_S)
        except asyncio.TimeoutError:
            if child.returncode is None:
                log.warning("the worker (pid %d) did not stop; killing it", child.pid)
                child.kill()

    async def _start_worker(self) -> None:
        assert self.stop_requested is not None
        if self.stop_requested.is_set():
            return
        for cache in self.tasks_dir.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        child = await asyncio.create_subprocess_exec(
            *self.command, env=self.env, stdin=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches the supervisor only, which passes
            # it on once (a second signal would force the worker to stop at once).
            start_new_session=True,
        )
        self.current = child
        self.children.add(child)
        self._in_background(self._follow(child))
        # A stop that came while the child was being started never reached it: pass it on now.
        for sig in self.stop_signals:
            child.send_signal(sig)

    async def _follow(self, child: asyncio.subprocess.Process) -> None:
        assert self.stop_requested is not None
        code = await child.wait()
        self.children.discard(child)
        if child is not self.current:
            return
        if self.stop_requested.is_set():
            self.exit_code = max(0, code)
            return
        where = os.path.relpath(self.tasks_dir) + os.sep
        if code == 0:
            log.info("the worker exited; a change in %s starts it again", where)
        else:
            log.error("the worker stopped (exit code %d); a change in %s starts it again", code, where)

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


async def _merged(*sources: AsyncIterator[set[tuple[Any, str]]]) -> AsyncIterator[set[tuple[Any, str]]]:
    """The batches of several watches, as they come; ends when the first of them ends (a stop)."""
    pending = {asyncio.ensure_future(source.__anext__()): source for source in sources}
    try:
        while True:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                source = pending.pop(future)
                try:
                    batch = future.result()
                except StopAsyncIteration:
                    return
                pending[asyncio.ensure_future(source.__anext__())] = source
                yield batch
    finally:
        for future in pending:
            future.cancel()
