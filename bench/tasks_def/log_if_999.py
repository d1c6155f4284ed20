"""The drain benchmark's task as a plain ``def``, the way most users write tasks.

The same work as ``bench/tasks/log_if_999.py``; what differs is the worker's path to it: kongtask
runs a ``def`` task on a thread of the worker's rather than on its event loop, so the drains
measure that hand-off too.
"""

from __future__ import annotations

from typing import Any


def task(payload: Any, helpers: Any) -> None:
    # Logging once out of 20,000 proves the task ran without making the run about log output.
    if payload.get("id") == 999:
        helpers.logger.info("found job 999")
