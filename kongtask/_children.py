"""Child processes that tasks started and left running, stopped when the worker exits."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("kongtask.cli")

#: How long leftover children get to end on SIGTERM before they are killed.
CHILD_GRACE_S = 2.0
#: How long the interpreter may take to exit once the worker has stopped.
EXIT_GRACE_S = 15.0
#: How long killed children (and any started meanwhile, by a pool refilling itself) are waited on.
_KILL_WAIT_S = 2.0


#: Children kongtask itself started to outlive this process (the embedded server's watchdog).
_spared: set[int] = set()


def spare_child(pid: int) -> None:
    """Leaves child ``pid`` out of :func:`stop_children`: kongtask started it, and needs it."""
    _spared.add(pid)


def child_pids() -> set[int]:
    """This process's living children that tasks started: from /proc on Linux, else
    multiprocessing's only."""
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {p.pid for p in multiprocessing.active_children() if p.pid is not None}
    found: set[int] = set()
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path("/proc", name, "stat").read_bytes()
        except OSError:
            continue  # gone meanwhile
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        state, ppid = stat[stat.rfind(b")") + 2:].split()[:2]
        if int(ppid) == me and state != b"Z":
            found.add(int(name))
    return found - _spared


def stop_children(grace: float = CHILD_GRACE_S) -> int:
    """Stops this process's children: SIGTERM, ``grace`` seconds, then SIGKILL. Returns how many.

    multiprocessing shuts its pools down first: a pool worker killed while it waits for work
    holds the pool's queue lock, and the pool's own shutdown at exit would wait for it forever.
    Bounded: a child that outlives SIGKILL (stuck in the kernel) is left after a short wait.
    """
    _shut_multiprocessing_down(grace)
    stopped: set[int] = set()
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        alive = child_pids()
        _reap(stopped - alive)
        if not alive:
            return len(stopped)
        now = time.monotonic()
        if now > deadline:
            if sig == signal.SIGKILL:
                return len(stopped)
            sig, deadline = signal.SIGKILL, now + _KILL_WAIT_S
            signal_now = alive
        else:
            signal_now = alive - stopped  # new ones too: a multiprocessing pool refills itself
        for pid in signal_now:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        stopped |= alive
        _reap(alive)
        time.sleep(0.05)


def _reap(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # reaped by its Popen or multiprocessing already


def _shut_multiprocessing_down(timeout: float) -> None:
    """Runs multiprocessing's exit handler now, for at most ``timeout`` seconds.

    It terminates and joins pools and daemon processes, then joins the other processes, which
    may never end: in a thread, left behind if it does not finish. It runs once per process, so
    the interpreter's exit then skips it.
    """
    util = sys.modules.get("multiprocessing.util")
    exit_function = getattr(util, "_exit_function", None)
    if exit_function is None:
        return  # no task used multiprocessing
    thread = threading.Thread(target=exit_function, name="kongtask-multiprocessing-exit", daemon=True)
    thread.start()
    thread.join(timeout)


def bound_exit(exit_code: int, grace: float = EXIT_GRACE_S) -> None:
    """Ends the process with ``exit_code`` should its exit take more than ``grace`` seconds.

    Armed when the interpreter starts to exit (and only then: an in-process caller of the CLI
    lives on), before it waits for the threads that are not daemons.
    """

    def end_process() -> None:
        time.sleep(grace)
        log.warning("exit took over %gs (a thread a task started is still running): exiting now", grace)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(exit_code)

    def arm() -> None:
        threading.Thread(target=end_process, name="kongtask-exit-deadline", daemon=True).start()

    # threading's own hook runs before the interpreter joins threads; atexit only after.
    register = getattr(threading, "_register_atexit", None)
    try:
        (register or atexit.register)(arm)
    except RuntimeError:
        pass  # the interpreter is exiting already
