"""The job row, as the SQL functions return it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # typing_extensions comes with psycopg wherever Python lacks Unpack
    from typing_extensions import Unpack

__all__ = ["Job", "JobOptions", "JobSpec", "Unpack"]


@dataclass(frozen=True, slots=True)
class Job:
    """One row of ``<schema>.jobs``; the fields follow the table's column order."""

    id: int
    queue_name: str
    task_identifier: str
    payload: Any
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class JobOptions(TypedDict, total=False):
    """The options of a new job, wherever a job is added.

    - ``queue_name``: jobs sharing a queue run one at a time, in order (default: a queue of its own);
    - ``run_at``: a timezone-aware datetime before which the job does not run (default: now);
    - ``max_attempts``: how many times the job is tried (default: 25).
    """

    queue_name: str | None
    run_at: datetime | None
    max_attempts: int | None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :func:`kongtask.add_jobs`: a task identifier, its payload and the options of
    :class:`JobOptions`, each ``None`` for its default."""

    identifier: str
    payload: Any = None
    queue_name: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
