"""The programmatic form: tasks registered in code, on one database and schema.

    app = kongtask.App(connection_string="postgres://...")

    @app.task
    async def send_email(payload, helpers): ...

    await app.add_job("send_email", {"to": "a@example.com"})
    await app.run_once()

It is the folder form's machinery with a ``task_list`` instead of a ``task_directory``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from psycopg_pool import AsyncConnectionPool

from . import _add_job, _run
from ._defaults import SCHEMA as DEFAULT_SCHEMA
from ._job import Job, JobOptions, Unpack
from ._options import WorkerOptions
from ._worker_pool import Runner
from .errors import ConfigurationError
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

    def _database(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string, "pool": self.pool, "schema": self.schema}

    async def add_job(self, identifier: str, payload: Any = None, **options: Unpack[JobOptions]) -> Job:
        """Adds a job on this app's database (see :func:`kongtask.add_job`)."""
        return await _add_job.add_job(identifier, payload, **options, **self._database())

    async def migrate(self) -> list[int]:
        return await _run.migrate(**self._database())

    async def run(self, **options: Unpack[WorkerOptions]) -> Runner:
        """Runs this app's tasks until stopped; options as :func:`kongtask.run`."""
        return await _run.run(task_list=self.tasks, **self._database(), **options)

    async def run_once(self, **options: Unpack[WorkerOptions]) -> None:
        """Runs every runnable job of this app's tasks, then returns; options as :func:`kongtask.run_once`."""
        await _run.run_once(task_list=self.tasks, **self._database(), **options)
