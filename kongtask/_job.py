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
    """One job, as the SQL functions return it; the fields follow v0.1.0's ``jobs`` column order.

    On upstream 0.18's schema a job may have no queue (``queue_name`` is None), and it carries the
    last three fields: its ``key`` (``job_key``), ``revision`` (how often the key replaced it) and
    ``flags``. On v0.1.0 they keep their defaults.
    """

    id: int
    queue_name: str | None
    task_identifier: str
    payload: Any
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    key: str | None = None
    revision: int = 0
    flags: dict[str, bool] | None = None


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
