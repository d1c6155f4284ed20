"""Stops a project's embedded PostgreSQL once no kongtask process uses it any more.

``python -m kongtask._embedded.watchdog HOME FD``: started, detached, by the kongtask process that
finds the server without a watchdog (see :func:`kongtask._embedded.project._ensure_watchdog`), holding the
lock ``FD`` on ``HOME/locks/watchdog`` for as long as it lives. A kongtask that leaves normally
stops the server itself; this covers the one that cannot: ``kill -9``, a crash, a closed terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from .project import server_in, stop_if_unused

#: How often it looks (s): a server nobody uses stops within about this long.
_INTERVAL_S = 1.0


def watch(home: Path) -> None:
    pid_file = server_in(home).data_dir / "postmaster.pid"
    while True:
        time.sleep(_INTERVAL_S)
        if not os.path.lexists(pid_file):
            return  # stopped by the last kongtask to leave, or removed
        if stop_if_unused(home):
            return


def main(argv: list[str]) -> int:
    home = Path(argv[1])
    # argv[2] is the descriptor of the watchdog lock, held open (and so locked) until we exit.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog[%(process)d] %(message)s")
    try:
        watch(home)
    except FileNotFoundError:
        pass  # the home was removed
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
