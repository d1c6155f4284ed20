"""The programmatic form: tasks registered in code, on one database and schema.

    app = kongtask.App(connection_string="postgres://...")

    @app.task
    async def send_email(payload, helpers): ...

    app.cron("0 8 * * 1", "send_email", payload={"to": "team@example.com"})  # Mondays, 08:00 UTC

    await app.add_job("send_email", {"to": "a@example.com"})
    await app.run_once()

It is the folder form's machinery with a ``task_list`` instead of a ``task_directory``, and
``cron_items`` instead of a crontab file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, overload

from psycopg_pool import AsyncConnectionPool

from . import _add_job, _run
from ._defaults import SCHEMA as DEFAULT_SCHEMA
from ._job import Job, JobOptions, Unpack
from ._options import WorkerOptions
from ._worker_pool import Runner
from .crontab import CronItem, CronJobKeyMode, parse_time_phrase
from .errors import ConfigurationError, CrontabError
from .tasks import Task, set_task_timeout

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Tasks registered by name, plus the database they run against."""

    def __init__(
        self,
        *,
        connection_string: str | None = None,
        pool: AsyncConnectionPool | None = None,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        if connection_string is not None and pool is not None:
            raise ConfigurationError("give either a pool or a connection string, not both")
        self.connection_string = connection_string
        self.pool = pool
        self.schema = schema
        self.tasks: dict[str, Task] = {}
        self.cron_items: list[CronItem] = []

    @overload
    def task(self, name: F) -> F: ...

    @overload
    def task(self, name: str | None = None, *, timeout: float | None = None) -> Callable[[F], F]: ...

    def task(self, name: str | F | None = None, *, timeout: float | None = None) -> F | Callable[[F], F]:
        """Registers a task: ``@app.task``, ``@app.task("name")`` or ``@app.task(timeout=30)``.

        A task is named after its function unless a name is given; ``timeout`` (seconds) overrides
        the worker's ``task_timeout`` for this task.
        """
        if callable(name):
            return self.task(None)(name)

        def register(fn: F) -> F:
            task_name = name or fn.__name__
            if task_name in self.tasks:
                raise ConfigurationError(f"a task named {task_name!r} is already registered")
            set_task_timeout(f"task {task_name!r}", fn, timeout)
            self.tasks[task_name] = fn
            return fn

        return register

    def cron(
        self,
        match: str,
        task: str,
        *,
        identifier: str | None = None,
        payload: Mapping[str, Any] | None = None,
        fill: str | timedelta = timedelta(0),
        max_attempts: int | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
        job_key: str | None = None,
        job_key_mode: CronJobKeyMode | None = None,
    ) -> CronItem:
        """Adds ``task``'s job at every UTC minute ``match`` names (``"0 4 * * *"``), from :meth:`run`.

        The options are a crontab line's (see :class:`kongtask.CronItem`); ``fill`` may be written
        as in a crontab (``"1d"``, ``"4h30m"``). Every worker on the database adds each due
        minute's job once between them, by ``identifier`` (default: the task's name).
        """
        if isinstance(fill, str):
            try:
                fill = parse_time_phrase(fill)
            except ValueError as exc:
                raise CrontabError(f"cron item {identifier or task!r}: {exc}") from None
        item = CronItem(
            task=task, match=match, identifier=identifier or "", payload=payload, fill=fill,
            max_attempts=max_attempts, queue_name=queue_name, priority=priority, job_key=job_key,
            job_key_mode=job_key_mode,
        )
        if any(known.identifier == item.identifier for known in self.cron_items):
            raise ConfigurationError(
                f"a cron item with the identifier {item.identifier!r} is already declared; pass identifier= to tell "
                "them apart"
            )
        self.cron_items.append(item)
        return item

    def _database(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string, "pool": self.pool, "schema": self.schema}

    async def add_job(self, identifier: str, payload: Any = None, **options: Unpack[JobOptions]) -> Job:
        """Adds a job on this app's database (see :func:`kongtask.add_job`)."""
        return await _add_job.add_job(identifier, payload, **options, **self._database())

    async def migrate(self) -> list[int]:
        return await _run.migrate(**self._database())

    async def run(self, **options: Unpack[WorkerOptions]) -> Runner:
        """Runs this app's tasks, and its cron items, until stopped; options as :func:`kongtask.run`."""
        return await _run.run(task_list=self.tasks, cron_items=self.cron_items, **self._database(), **options)

    async def run_once(self, **options: Unpack[WorkerOptions]) -> None:
        """Runs every runnable job of this app's tasks, then returns; options as :func:`kongtask.run_once`."""
        await _run.run_once(task_list=self.tasks, **self._database(), **options)
