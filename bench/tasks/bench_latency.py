"""The latency probe: tells the benchmark the instant this task started.

The harness stamps ``time.monotonic_ns()`` just before ``add_job``; this task stamps the same clock
(CLOCK_MONOTONIC, shared by every process on the machine and never stepped or slewed apart from
itself) and writes ``<sample> <ns>`` to the FIFO named by ``KONGTASK_BENCH_FIFO``. The Node twin
in ``bench/node_worker/tasks`` does the same, so both workers are timed by one method.
"""

from __future__ import annotations

import os
import time
from typing import Any


async def task(payload: Any, helpers: Any) -> None:
    started_ns = time.monotonic_ns()  # first, before anything else costs time
    fd = os.open(os.environ["KONGTASK_BENCH_FIFO"], os.O_WRONLY)
    try:
        os.write(fd, f"{payload['sample']} {started_ns}\n".encode())
    finally:
        os.close(fd)
