"""kongtask: a PostgreSQL job queue for Python, compatible with graphile-worker v0.1.0.

The public API:

- :func:`run` / :func:`run_once`: run workers on a folder of task files or a mapping of tasks;
- :func:`add_job` (async) and :func:`add_job_sync`: add a job from application code;
- :func:`add_jobs` (async) and :func:`add_jobs_sync`: add many jobs in one go, all or none;
- :func:`migrate`: bring a database to the newest schema;
- :class:`App`: tasks registered in code with ``@app.task``, cron items with ``app.cron(...)``;
- :class:`CronItem`, :func:`parse_crontab`, :func:`load_crontab`: recurring jobs (``cron_items=``);
- :class:`Job`, :class:`Helpers`, :class:`SyncHelpers`, :class:`Runner`, and the errors.
"""

from __future__ import annotations

from ._add_job import add_job, add_job_sync, add_jobs, add_jobs_sync, remove_job, remove_job_sync
from ._app import App
from ._helpers import Helpers, SyncHelpers
from ._job import JOB_KEY_MODES, Job, JobKeyMode, JobOptions, JobSpec
from ._run import migrate, run, run_once
from ._worker_pool import Runner
from .crontab import CronItem, load_crontab, parse_crontab
from .errors import (
    ConfigurationError,
    ConnectionFailed,
    CrontabError,
    KongtaskError,
    MigrationError,
    PayloadError,
    SchemaChanged,
    SchemaTooOld,
    TaskLoadError,
)

__version__ = "0.1.0"

__all__ = [
    "JOB_KEY_MODES",
    "App",
    "ConfigurationError",
    "ConnectionFailed",
    "CronItem",
    "CrontabError",
    "Helpers",
    "Job",
    "JobKeyMode",
    "JobOptions",
    "JobSpec",
    "KongtaskError",
    "MigrationError",
    "PayloadError",
    "Runner",
    "SchemaChanged",
    "SchemaTooOld",
    "SyncHelpers",
    "TaskLoadError",
    "__version__",
    "add_job",
    "add_job_sync",
    "add_jobs",
    "add_jobs_sync",
    "load_crontab",
    "migrate",
    "parse_crontab",
    "remove_job",
    "remove_job_sync",
    "run",
    "run_once",
]
