"""Worker processes, kongtask's or Node's, started and timed the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .results import Unavailable

BENCH_DIR = Path(__file__).resolve().parent
LAUNCHER = BENCH_DIR / "launch.py"
#: kongtask is measured as two kinds of system: with ``async def`` tasks and with plain ``def`` twins
#: of them (what most users write), on each schema. The same task names in both, so the workers
#: fetch alike; the worker finds out which schema the database holds by itself.
KONGTASK_TASKS = BENCH_DIR / "tasks"
KONGTASK_DEF_TASKS = BENCH_DIR / "tasks_def"
KONGTASK_SYSTEMS: dict[str, Path] = {
    "kongtask": KONGTASK_TASKS, "kongtask-def": KONGTASK_DEF_TASKS,
    "kongtask-0.18": KONGTASK_TASKS, "kongtask-def-0.18": KONGTASK_DEF_TASKS,
}

#: A drain of 20,000 jobs takes seconds to a minute or two; this only stops a hung worker.
RUN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class WorkerCommand:
    """How to start one system's worker; both CLIs share ``-c URL --jobs N [--once]``."""

    system: str
    prefix: tuple[str, ...]
    cwd: Path

    def argv(self, url: str, jobs: int, once: bool) -> list[str]:
        return [*self.prefix, "-c", url, "--jobs", str(jobs), *(["--once"] if once else [])]

    def env(self, **extra: str) -> dict[str, str]:
        # -c names the database, so no DATABASE_URL. PYTHONDONTWRITEBYTECODE would make every start of
        # an editable install recompile kongtask from source; installed packages have their .pyc.
        dropped = {"DATABASE_URL", "PYTHONDONTWRITEBYTECODE"}
        env = {name: value for name, value in os.environ.items() if name not in dropped}
        # Neither worker should spend the run printing 20,000 "Completed task" lines.
        env["NO_LOG_SUCCESS"] = "1"
        return env | extra


@dataclass(frozen=True)
class Exit:
    wall_s: float
    cpu_s: float  # user + system time of the worker process itself (not the server's)
    returncode: int
    peak_rss_mb: float
    output_tail: str


def run_to_exit(command: WorkerCommand, url: str, jobs: int, log: Path) -> Exit:
    """Runs ``--once`` to the end; times it and reads the process's peak RSS from the kernel.

    The worker is started by bench/launch.py, which waits for it (``wait4``: CPU and peak RSS exact,
    not sampled) and writes the figures to a file next to the log. See launch.py for why the
    benchmark does not fork the worker itself.
    """
    report = log.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    argv = [sys.executable, "-S", str(LAUNCHER), str(report), *command.argv(url, jobs, once=True)]
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=command.cwd, env=command.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the hung worker under it
            proc.wait()
        wall = time.perf_counter() - started
    if proc.returncode != 0 or not report.exists():
        return Exit(wall, 0.0, proc.returncode or -signal.SIGKILL, 0.0, tail(log))
    status, worker_wall, user, system, maxrss_kib = report.read_text().split()
    exit_code = os.waitstatus_to_exitcode(int(status))
    return Exit(float(worker_wall), float(user) + float(system), exit_code, int(maxrss_kib) / 1024, tail(log))


def start(command: WorkerCommand, url: str, jobs: int, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """Starts a worker that keeps running (no ``--once``)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command.argv(url, jobs, once=False),
            cwd=command.cwd,
            env=command.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Asks for a graceful shutdown (SIGINT), and insists after a few seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(log: Path, lines: int = 6) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def kongtask_command(system: str = "kongtask") -> WorkerCommand:
    """The installed ``kongtask`` console script running ``system``'s tasks folder (see
    :data:`KONGTASK_SYSTEMS`), or :class:`Unavailable` saying why not."""
    script = Path(sys.executable).parent / "kongtask"
    if not script.exists():
        raise Unavailable(f"kongtask CLI not available: no console script at {script}")
    try:
        probe = subprocess.run([str(script), "worker", "--help"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise Unavailable("kongtask CLI not available: `kongtask worker --help` hung for 60 s") from None
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        raise Unavailable(f"kongtask CLI not available: {lines[-1] if lines else f'exit {probe.returncode}'}")
    return WorkerCommand(system, (str(script), "worker", "--tasks", str(KONGTASK_SYSTEMS[system])), BENCH_DIR)


def kongtask_package(command: WorkerCommand) -> str:
    """Where the worker's ``kongtask`` package is, as the worker would import it: with its
    environment (PYTHONPATH included) and working directory, by the interpreter the console script
    sits next to. Comparing two builds of kongtask depends on knowing which one ran."""
    probe = subprocess.run(
        [sys.executable, "-c", "import kongtask, os; print(os.path.dirname(kongtask.__file__))"],
        cwd=command.cwd, env=command.env(), capture_output=True, text=True, timeout=60,
    )
    lines = (probe.stdout if probe.returncode == 0 else probe.stderr).strip().splitlines()
    return lines[-1] if lines else f"unknown (exit {probe.returncode})"
