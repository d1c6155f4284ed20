"""The drain benchmark's task: as cheap as a task can be, so the queue itself is what we time."""

from __future__ import annotations

from typing import Any


async def task(payload: Any, helpers: Any) -> None:
    # Logging once out of 20,000 proves the task ran without making the run about log output.
    if payload.get("id") == 999:
        helpers.logger.info("found job 999")
