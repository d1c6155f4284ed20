"""Latency: from just before ``add_job`` to the moment the task starts, one job at a time.

Each worker runs continuously, idle on LISTEN, so each sample measures the NOTIFY wake-up path.
The ``bench_latency`` task stamps CLOCK_MONOTONIC as it starts and writes the stamp to a FIFO; we
stamp the same clock just before ``add_job``. kongtask and Node run that same task (in Python, as
``async def`` and as ``def``, and in JS), so all are measured by one method.

The workers under test run side by side, each on its own database, and take turns: sample 1 of
each, then sample 2 of each, and so on. Most of a sample is ``add_job``'s commit waiting for the
disk, which swings widely on a shared machine; taking turns gives every system the same swings.
"""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .results import Measured, Unavailable
from .workers import WorkerCommand, start, stop, tail

_ADD_JOB = "select graphile_worker.add_job('bench_latency', json_build_object('sample', %s::int))"
_ANY_JOB = "select exists (select 1 from graphile_worker.jobs)"

#: After a sample's job is gone, the worker still asks once more for a job before it goes idle.
#: Waiting this long lets it get there, so the next sample measures an idle worker's wake-up.
SETTLE_S = 0.005

#: How long the first job may take: it waits for the worker process to start up.
FIRST_JOB_TIMEOUT_S = 60.0
SAMPLE_TIMEOUT_S = 10.0


class _Fifo:
    """The read end of the FIFO the task writes to, with a deadline on each line."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._read = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # Holding a write end ourselves means the FIFO never reports end-of-file between tasks.
        self._keep_open = os.open(path, os.O_WRONLY)
        self._buffer = b""

    def line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._read], [], [], remaining)[0]:
                raise TimeoutError
            self._buffer += os.read(self._read, 4096)
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        os.close(self._read)
        os.close(self._keep_open)


@dataclass
class _Probe:
    """One worker under test: its process, the FIFO its task reports to, and what it measured."""

    system: str
    conn: psycopg.Connection[Any]
    fifo: _Fifo
    proc: subprocess.Popen[bytes]
    log: Path
    # Per sample, in ns from just before add_job: task start, add_job returned, we heard of it.
    taken: list[tuple[int, int, int]] = field(default_factory=list)
    failure: str | None = None

    def sample(self, number: int) -> None:
        timeout = FIRST_JOB_TIMEOUT_S if number == 0 else SAMPLE_TIMEOUT_S
        before = time.monotonic_ns()
        self.conn.execute(_ADD_JOB, (number,), prepare=True)
        added = time.monotonic_ns()
        try:
            line = self.fifo.line(timeout)
        except TimeoutError:
            state = "exited" if self.proc.poll() is not None else "still running"
            self.failure = (
                f"{self.system} worker ({state}) did not start latency job {number} within {timeout:.0f} s: "
                f"{tail(self.log) or 'no output'}"
            )
            return
        heard = time.monotonic_ns()
        sample, started = (int(part) for part in line.split())
        if sample != number:
            self.failure = f"{self.system} latency probe got sample {sample}, expected {number}"
            return
        self.taken.append((started - before, added - before, heard - before))
        # The next sample starts from an idle worker: the job is completed and the worker is back
        # on LISTEN, not still finishing this one.
        while self.conn.execute(_ANY_JOB, prepare=True).fetchone() != (False,):
            time.sleep(0.0002)
        time.sleep(SETTLE_S)


@contextmanager
def _probe(command: WorkerCommand, url: str, logs: Path) -> Iterator[_Probe]:
    fifo = _Fifo(logs / f"{command.system}-latency.fifo")
    log = logs / f"{command.system}-latency.log"
    try:
        proc = start(command, url, 1, log, KONGTASK_BENCH_FIFO=str(fifo.path))
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                yield _Probe(command.system, conn, fifo, proc, log)
        finally:
            stop(proc)
    finally:
        fifo.close()


def latency(
    workers: Mapping[str, tuple[WorkerCommand, str]], samples: int, warmup: int, logs: Path
) -> dict[str, Measured | Unavailable]:
    """Samples every worker in turn; ``workers`` maps a system to its command and database URL."""
    with ExitStack() as stack:
        probes = [stack.enter_context(_probe(command, url, logs)) for command, url in workers.values()]
        for number in range(warmup + samples):
            # Alternate who goes first, so neither always samples right after the other.
            turn = probes if number % 2 == 0 else probes[::-1]
            for probe in turn:
                if probe.failure is None:
                    probe.sample(number)
    return {probe.system: _measured(probe, warmup) for probe in probes}


def _measured(probe: _Probe, warmup: int) -> Measured | Unavailable:
    if probe.failure is not None:
        return Unavailable(probe.failure)
    kept = probe.taken[warmup:]
    to_start = _stats([ns / 1e6 for ns, _, _ in kept])
    # From add_job's return to task start: the worker's own wake-up, without the commit's disk wait.
    wake = _stats([(ns - added) / 1e6 for ns, added, _ in kept])
    heard = _stats([heard / 1e6 for _, _, heard in kept])
    figures = {f"latency_{name}": value for name, value in to_start.items()} | {"latency_wake_avg": wake["avg"]}
    return Measured(figures, {"samples": len(kept), "warmup": warmup, "wake_ms": wake, "heard_ms": heard})


def _stats(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"min": min(values), "avg": statistics.fmean(values), "p50": cuts[49], "p99": cuts[98], "max": max(values)}
