"""Starts one worker and reports its exit and resource use: ``python -S launch.py REPORT ARGV...``.

bench/workers.py runs every timed worker through this small process rather than starting it
itself. A process's peak RSS as the kernel reports it (``ru_maxrss``) is never below the resident
set of the process it was forked from: fork copies the parent's memory map, and exec keeps its
high-water mark. Forked from the benchmark (psycopg and all, some 40 MB), a worker would report at
least that much, whatever it used. Forked from this launcher (a few MB: no site, no imports but
``os``, ``sys`` and ``time``), its figure is its own.

REPORT gets one line: exit status, wall seconds from spawn to exit, user and system CPU seconds,
peak RSS in KiB. Standard streams, working directory and environment pass through to the worker.
Reads no kongtask: it must run under any build being timed.
"""

import os
import sys
import time


def main() -> int:
    report, *argv = sys.argv[1:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    with open(report, "w") as out:
        out.write(f"{status} {wall!r} {usage.ru_utime!r} {usage.ru_stime!r} {usage.ru_maxrss}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
