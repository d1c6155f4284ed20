"""The job row, as the SQL functions return it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # typing_extensions comes with psycopg wherever Python lacks Unpack
    from typing_extensions import Unpack

__all__ = ["JOB_KEY_MODES", "Job", "JobKeyMode", "JobOptions", "JobSpec", "Unpack"]

#: What adding a job whose ``job_key`` an existing job has does (graphile-worker's modes):
#: ``replace`` the waiting job (debounce), the same but ``preserve_run_at`` (throttle), or
#: ``unsafe_dedupe``: leave the existing job as it is, even one that is running.
JobKeyMode = Literal["replace", "preserve_run_at", "unsafe_dedupe"]
JOB_KEY_MODES: tuple[JobKeyMode, ...] = ("replace", "preserve_run_at", "unsafe_dedupe")


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

    - ``queue_name``: jobs sharing a queue run one at a time, in order (default: a queue of its own
      on v0.1.0's schema, no queue on 0.18's);
    - ``run_at``: a timezone-aware datetime before which the job does not run (default: now);
    - ``max_attempts``: how many times the job is tried (default: 25);
    - ``priority``: a smaller number runs first (default 0; -32768 to 32767);
    - ``job_key``: at most one waiting job has this key: adding another with it changes that job
      as ``job_key_mode`` says (default ``"replace"``); see :data:`JobKeyMode`;
    - ``flags``: names a worker may refuse to run (its ``forbidden_flags``), e.g. for rate limits.

    ``job_key``, ``job_key_mode`` and ``flags`` need graphile-worker's 0.18 schema
    (``kongtask migrate --to latest``); on v0.1.0's they raise :class:`~kongtask.SchemaTooOld`.
    """

    queue_name: str | None
    run_at: datetime | None
    max_attempts: int | None
    priority: int | None
    job_key: str | None
    job_key_mode: JobKeyMode | None
    flags: list[str] | None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :func:`kongtask.add_jobs`: a task identifier, its payload and the options of
    :class:`JobOptions` (but ``job_key_mode``, which ``add_jobs`` takes for all), each ``None`` for
    its default."""

    identifier: str
    payload: Any = None
    queue_name: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    priority: int | None = None
    job_key: str | None = None
    flags: list[str] | None = None
