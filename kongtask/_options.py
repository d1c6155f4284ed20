"""The worker's options, declared once: what ``run``, ``run_once`` and ``App.run`` accept.

:class:`WorkerOptions` and :class:`RunOptions` are what a caller may pass (typed, checked by mypy
through ``Unpack``); :class:`ResolvedOptions` is the same set with the defaults filled in and the
values checked, built from them by keyword only. The settings layer passes its worker options
under these names (tests/test_options.py keeps the three in step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeAlias, TypedDict

from psycopg_pool import AsyncConnectionPool

from . import _defaults
from .crontab import CronItem
from .errors import ConfigurationError
from .tasks import Task

#: Flags whose jobs a pool does not fetch: a list, or a function (plain or async) the pool calls
#: before each fetch, so that the list may change (a rate limiter, say).
ForbiddenFlags: TypeAlias = Sequence[str] | Callable[[], Sequence[str] | Awaitable[Sequence[str] | None] | None]


class WorkerOptions(TypedDict, total=False):
    """How the workers run; the defaults are in ``kongtask/_defaults.py``.

    - ``concurrency``: how many workers (jobs at once) this process runs.
    - ``poll_interval`` (seconds): how often an idle worker looks for jobs when no NOTIFY arrives.
    - ``shutdown_timeout`` (seconds): how long running jobs may take to finish after a stop request.
    - ``heartbeat_interval`` (seconds) and ``job_expiry``: running jobs refresh their queue's lock
      every heartbeat; a lock older than ``job_expiry`` belongs to a dead worker and is taken over.
    - ``task_timeout`` (seconds): the default limit for one task; a task may set its own.
    - ``batch_size``: the most jobs one fetch checks out (and so the most held in the local
      buffer); the buffer adapts below it, so the default needs no tuning. 1 fetches one job a time.
    - ``handle_signals``: SIGINT/SIGTERM/SIGHUP stop gracefully; a second signal stops at once.
    - ``log_success``: log a ``Completed task ...`` line per successful job; ``None`` (the default)
      means yes unless the environment variable ``NO_LOG_SUCCESS`` is set, as upstream.
    - ``forbidden_flags``: jobs carrying any of these flags are left for other workers (see
      :data:`ForbiddenFlags`); needs graphile-worker's 0.18 schema.
    - ``metrics_port``: serve Prometheus metrics (``/metrics``) and health probes (``/healthz``,
      ``/readyz``) on this port while the workers run; ``None`` (the default) serves nothing, 0 any
      free port. ``metrics_host``: the address it listens on (``127.0.0.1``: this machine only).
    """

    concurrency: int
    poll_interval: float
    shutdown_timeout: float
    job_expiry: timedelta
    heartbeat_interval: float
    task_timeout: float | None
    batch_size: int
    handle_signals: bool
    log_success: bool | None
    forbidden_flags: ForbiddenFlags | None
    metrics_port: int | None
    metrics_host: str


class RunOptions(WorkerOptions, total=False):
    """The worker options, plus where the tasks and the database come from.

    - Tasks: ``task_directory`` (a folder of task files) or ``task_list`` (``{name: function}``).
    - Database: ``pool`` (an open ``AsyncConnectionPool``), ``connection_string``, or ``DATABASE_URL``;
      ``schema``: the schema that holds the jobs.
    - ``cron_items``: recurring jobs (:class:`kongtask.CronItem`, or :func:`kongtask.load_crontab`'s
      items) that this runner adds once per due minute, with every other worker on the database;
      they need graphile-worker's 0.18 schema. ``run_once`` does not run cron.
    """

    task_directory: str | Path | None
    task_list: Mapping[str, Task] | None
    cron_items: Sequence[CronItem] | None
    pool: AsyncConnectionPool | None
    connection_string: str | None
    schema: str


@dataclass(frozen=True, kw_only=True)
class ResolvedOptions:
    """:class:`RunOptions` with every default filled in; :meth:`check` says what is wrong."""

    task_directory: str | Path | None = None
    task_list: Mapping[str, Task] | None = None
    cron_items: Sequence[CronItem] | None = None
    pool: AsyncConnectionPool | None = None
    connection_string: str | None = None
    schema: str = _defaults.SCHEMA
    concurrency: int = _defaults.CONCURRENCY
    poll_interval: float = _defaults.POLL_INTERVAL
    shutdown_timeout: float = _defaults.SHUTDOWN_TIMEOUT
    job_expiry: timedelta = _defaults.JOB_EXPIRY
    heartbeat_interval: float = _defaults.HEARTBEAT_INTERVAL
    task_timeout: float | None = _defaults.TASK_TIMEOUT
    batch_size: int = _defaults.BATCH_SIZE
    handle_signals: bool = False
    log_success: bool | None = None
    forbidden_flags: ForbiddenFlags | None = None
    metrics_port: int | None = _defaults.METRICS_PORT
    metrics_host: str = _defaults.METRICS_HOST

    def check(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be positive, got {self.poll_interval}")
        if self.heartbeat_interval <= 0:
            raise ConfigurationError(f"heartbeat_interval must be positive, got {self.heartbeat_interval}")
        if self.job_expiry.total_seconds() <= self.heartbeat_interval:
            raise ConfigurationError(
                f"job_expiry ({self.job_expiry.total_seconds():g}s) must be longer than the heartbeat interval "
                f"({self.heartbeat_interval:g}s), or live workers would lose their jobs"
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or not 1 <= self.batch_size <= 10_000:
            raise ConfigurationError(f"batch_size must be a whole number from 1 to 10000, got {self.batch_size!r}")
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ConfigurationError(f"task_timeout must be positive, got {self.task_timeout}")
        flags = self.forbidden_flags
        if flags is not None and not callable(flags) and (
            isinstance(flags, str) or not all(isinstance(flag, str) and flag for flag in flags)
        ):
            raise ConfigurationError(
                f"forbidden_flags must be a list of flag names or a function returning one, got {flags!r}"
            )
        seen: set[str] = set()
        for item in self.cron_items or ():
            if not isinstance(item, CronItem):
                raise ConfigurationError(f"cron_items holds {item!r}, not a kongtask.CronItem")
            if item.identifier in seen:
                raise ConfigurationError(
                    f"two cron items have the identifier {item.identifier!r}; give one of them another identifier="
                )
            seen.add(item.identifier)
        if self.metrics_port is not None and (isinstance(self.metrics_port, bool) or not isinstance(
                self.metrics_port, int) or not 0 <= self.metrics_port <= 65535):
            raise ConfigurationError(f"metrics_port must be a port number from 0 to 65535, got {self.metrics_port!r}")
        if not isinstance(self.metrics_host, str) or not self.metrics_host.strip():
            raise ConfigurationError(f"metrics_host must be a host name or address, got {self.metrics_host!r}")
