"""The latency probe as a plain ``def``: the time to a ``def`` task's start includes the hand-off
to the worker's task thread. Otherwise the same as ``bench/tasks/bench_latency.py``."""

from __future__ import annotations

import os
import time
from typing import Any


def task(payload: Any, helpers: Any) -> None:
    started_ns = time.monotonic_ns()  # first, before anything else costs time
    fd = os.open(os.environ["KONGTASK_BENCH_FIFO"], os.O_WRONLY)
    try:
        os.write(fd, f"{payload['sample']} {started_ns}\n".encode())
    finally:
        os.close(fd)
