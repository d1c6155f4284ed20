"""The seam between kongtask and the schema a database holds: what every generation provides.

A *generation* is one version of the graphile-worker database contract: v0.1.0, the default
(:mod:`kongtask._schema.v0_1`), and upstream's current 0.18 (:mod:`kongtask._schema.v0_18`), opt-in.
The worker and admin code talk to one :class:`DatabaseSchema` object, chosen when a worker starts
(:func:`kongtask._schema.held_by`), and never to a generation's tables directly. A generation declares what it can do in
:class:`Capabilities`, so callers branch on a capability, not on a version number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._defaults import SCHEMA as DEFAULT_SCHEMA

__all__ = ["DEFAULT_SCHEMA", "MIGRATION_SCHEMA_TOKEN", "Capabilities", "DatabaseSchema", "schema_name_problem"]

#: Stands for the quoted schema name in the numbered migration files, where SQL code may hold a
#: name (kongtask._schema.migrate reads comments, strings and function bodies as PostgreSQL does).
MIGRATION_SCHEMA_TOKEN = ":KONGTASK_SCHEMA"

#: PostgreSQL silently cuts a longer name to its first NAMEDATALEN - 1 bytes.
MAX_NAME_BYTES = 63


@dataclass(frozen=True)
class Capabilities:
    """What a generation's schema can do beyond the v0.1.0 contract (all False there)."""

    #: ``add_job(job_key=..., job_key_mode=...)`` and ``remove_job(job_key)``.
    job_keys: bool = False
    #: Jobs carry ``flags``; a worker may forbid some at fetch.
    flags: bool = False
    #: Jobs live in private tables; ``jobs`` is a view without the payload, read by admin code.
    jobs_view: bool = False
    #: ``locked_by`` names the worker pool (one per process), not one worker.
    pool_locks: bool = False
    #: Cron: ``_private_known_crontabs`` records each item's last minute, so a fleet adds it once.
    cron: bool = False


class DatabaseSchema(Protocol):
    """The statements and capabilities of the schema one database holds, under one schema name:
    what a running worker and the admin calls send.

    Each statement attribute is rendered once for :attr:`name` and executed with parameters (named
    ones, so that each generation takes what it needs from the same mapping). A generation without
    a statement's capability leaves it out of its own class, and callers check
    :attr:`capabilities` first.
    """

    generation: str
    name: str
    quoted_schema: str
    capabilities: Capabilities

    # the job lifecycle: fetch, release (complete or fail), and their recovery
    get_jobs: str
    release_jobs: str
    return_jobs: str
    return_stray_checkouts: str
    due_jobs_without_task: str
    heartbeat: str
    # metrics
    job_gauges: str
    # admin
    list_jobs: str
    force_unlock_workers: str
    complete_jobs: str
    permanently_fail_jobs: str
    reschedule_jobs: str
    present_jobs: str
    retry_job: str
    # the dashboard's reads (kongtask.dashboard)
    dashboard_counts: str
    dashboard_count_settings: str
    dashboard_task_estimates: str
    dashboard_table_stats: str
    dashboard_lock_holders: str
    dashboard_locked_queues: str
    dashboard_jobs_older: str
    dashboard_jobs_newer: str
    dashboard_job: str
    # NOTIFY wake-ups: new jobs, and migrations run by other processes
    listen: str

    @property
    def register_tasks(self) -> str | None:
        """Records the pool's task names where the schema keeps a table of them (0.18), else None."""

    @property
    def expire_locks(self) -> str | None:
        """Unlocks what a dead pool left locked, where fetching does not take it over (0.18), else None."""


def schema_name_problem(schema: str) -> str | None:
    """Why PostgreSQL cannot hold ``schema`` as it is (one line), or None when it can."""
    if not schema:
        return "the schema name must be non-empty, such as graphile_worker"
    if "\x00" in schema:
        return "the schema name holds a NUL character, which PostgreSQL names cannot; choose another"
    try:
        size = len(schema.encode("utf-8"))
    except UnicodeEncodeError:
        return "the schema name is not valid text (undecodable bytes); choose another"
    if size > MAX_NAME_BYTES:
        # Cut, two long names would share one schema and its jobs.
        shown = repr(schema if len(schema) <= 24 else schema[:24] + "...")
        return (
            f"the schema name {shown} is {size} bytes; PostgreSQL keeps only the first {MAX_NAME_BYTES} bytes"
            f" of a name, so choose one of at most {MAX_NAME_BYTES} bytes (UTF-8)"
        )
    return None
