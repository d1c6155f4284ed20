"""One worker: fetch a job, run its task, release the job (complete or fail), go again.

A worker owns nothing but its id and, for plain ``def`` tasks, one daemon thread. The pool it
belongs to (:mod:`kongtask.pool`) wakes it when jobs arrive and tells it when to stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import queue
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import psycopg
from psycopg_pool import PoolTimeout

from . import jobs
from ._db import Backoff, OutageLog
from .errors import PayloadError
from .helpers import Helpers, SharedResources, SyncHelpers
from .job import Job
from .queries import queries_for
from .tasks import Task, is_async_task, task_timeout

log = logging.getLogger("kongtask.worker")

#: How long a fetch or release waits for a pool connection before trying again; short, so a
#: forced stop during an outage is not held up by the pool's own 30 s default.
CHECKOUT_TIMEOUT_S = 5.0

#: What a lost or unusable connection looks like to the worker: retried, never fatal.
CONNECTION_ERRORS = (psycopg.OperationalError, PoolTimeout)


def make_worker_id() -> str:
    """``worker-`` and 20 random hex characters: distinct across processes and machines."""
    return f"worker-{secrets.token_hex(10)}"


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker of a pool runs with."""

    tasks: Mapping[str, Task]
    schema: str
    poll_interval: float
    job_expiry: timedelta
    log_success: bool
    task_timeout: float | None = None
    #: Set up tolerant payload decoding on each fetch (a caller's pool) rather than per connection.
    decode_per_statement: bool = False
    task_names: list[str] = field(init=False)
    async_tasks: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_names", sorted(self.tasks))
        object.__setattr__(self, "async_tasks", frozenset(n for n, t in self.tasks.items() if is_async_task(t)))


class Coordinator(Protocol):
    """What a worker needs from its pool."""

    @property
    def stopping(self) -> bool: ...

    @property
    def outage(self) -> OutageLog: ...

    async def idle(self, worker: Worker) -> None:
        """Waits until a job may be waiting: a NOTIFY, the poll interval, or a stop."""

    def found_job(self) -> None:
        """A job was fetched: more may be waiting, so wake one more idle worker."""

    def release_abandoned(self) -> bool:
        """Whether a release that keeps failing should be given up (a forced end)."""


class TaskAborted(Exception):
    """The task was stopped from outside (forced shutdown); its message is the reason."""


class TaskTimedOut(Exception):
    """The task ran past its timeout."""


class _BaseExceptionInTask(Exception):
    """Carries a SystemExit or KeyboardInterrupt raised by task code, so it fails only that job."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


@dataclass(frozen=True)
class _Release:
    """How to release one job: alone, or together with fetching the next."""

    alone: str
    and_fetch: str
    params: tuple[Any, ...]


class _TaskThread:
    """A daemon thread that runs one worker's plain ``def`` tasks, one at a time.

    Daemon, so a task stuck in a loop never keeps the process alive after a forced shutdown.
    """

    def __init__(self, name: str) -> None:
        self._inbox: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._inbox.put((future, fn, args))
        return future

    def retire(self) -> None:
        """Ends the thread once its current call returns (if it ever does)."""
        self._inbox.put(None)

    def _serve(self) -> None:
        while (item := self._inbox.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the worker, which fails the job
                future.set_exception(exc)


def _forget_cancellation() -> None:
    # The cancellation that aborted a task has been handled; later awaits of this worker (the
    # release) must not see it as pending (Python 3.11+ counts cancellations per task).
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()


def _failure_line(job: Job, message: str, duration_ms: float, error: BaseException) -> str:
    """Upstream's line: the stack follows, indented, only when there is one."""
    line = f"Failed task {job.id} ({job.task_identifier}) with error {message} ({duration_ms:.2f}ms)"
    if isinstance(error, (TaskAborted, TaskTimedOut)) or error.__traceback__ is None:
        return line
    try:
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()
    except Exception:  # noqa: BLE001 - a hostile exception must not stop the worker
        return line
    return line + ":\n  " + stack.replace("\n", "\n  ")


def error_message(error: BaseException) -> str:
    """What ``last_error`` records: the message, else the class name; never empty, never NUL."""
    try:
        message = str(error)
    except Exception as exc:  # noqa: BLE001 - a hostile __str__ must not stop the worker
        message = f"{type(error).__name__} (its message could not be read: {type(exc).__name__})"
    if not message.strip():
        message = type(error).__name__
    elif not isinstance(error, Exception):
        # SystemExit(3) says just "3": name what was raised.
        message = f"{type(error).__name__}: {message}"
    # PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded to UTF-8.
    return message.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class Worker:
    """Runs jobs one after another until its pool stops it (or, ``once``, until none is left)."""

    def __init__(self, config: WorkerConfig, resources: SharedResources, coordinator: Coordinator) -> None:
        self.id = make_worker_id()
        self.current_job: Job | None = None
        self._config = config
        self._resources = resources
        self._coordinator = coordinator
        self._thread: _TaskThread | None = None
        self._running: asyncio.Future[Any] | None = None
        self._abortable = False
        self._task: asyncio.Task[Any] | None = None
        self._abort_reason: str | None = None
        self._cancelled = False  # this worker's own task was cancelled from outside
        # get_job's arguments never change for a worker: encoded once, sent as text every fetch.
        self._fetch_params = (
            self.id, jobs.text_array_literal(config.task_names), f"{config.job_expiry.total_seconds()} seconds"
        )

    async def run(self, once: bool = False) -> None:
        self._task = asyncio.current_task()
        job: Job | None = None
        try:
            while True:
                if job is None:
                    if self._coordinator.stopping:
                        return
                    job = await self._fetch()
                    if job is None:
                        if once or self._coordinator.stopping:
                            return
                        await self._coordinator.idle(self)
                        continue
                # A job in hand always runs (or, after a forced stop, fails at once): a stop that
                # lands while the next job is being checked out must not strand it.
                self._coordinator.found_job()
                release = await self._perform(job)
                fetch_next = not (self._coordinator.stopping or self._cancelled)
                job = await self._release(release, fetch_next=fetch_next)
                if self._cancelled:
                    raise asyncio.CancelledError()
        finally:
            if self._thread is not None:
                self._thread.retire()

    def abort(self, reason: str) -> None:
        """Stops the running task now; its job fails with ``reason`` so it is retried."""
        self._abort_reason = reason
        if self._running is not None and not self._running.done():
            self._running.cancel()
        elif self._abortable and self._task is not None:
            self._task.cancel()

    # --- fetch ---------------------------------------------------------------------------------

    async def _fetch(self) -> Job | None:
        statement = queries_for(self._config.schema).get_job, self._fetch_params
        backoff = Backoff()
        while True:
            try:
                async with self._resources.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    job = await jobs.fetch_job(conn, statement, tolerant=self._config.decode_per_statement)
                self._coordinator.outage.recovered()
                return job
            except CONNECTION_ERRORS as exc:
                self._coordinator.outage.failed(exc)
                if self._coordinator.stopping:
                    return None
                await asyncio.sleep(backoff.next())

    # --- run -----------------------------------------------------------------------------------

    async def _perform(self, job: Job) -> _Release:
        """Runs the job's task; returns the statement that releases the job."""
        self.current_job = job
        start = time.perf_counter()
        error: BaseException | None = None
        timeout = task_timeout(self._config.tasks[job.task_identifier], self._config.task_timeout)
        try:
            if self._abort_reason is not None:
                # Checked out while a forced stop was under way: give it back for a retry.
                error = TaskAborted(self._abort_reason)
            elif timeout is None:
                # Awaited in place, with no task of its own: abort() cancels this worker's task
                # while (and only while) it waits here.
                self._abortable = True
                try:
                    await self._invoke(job)
                finally:
                    self._abortable = False
            else:
                self._running = asyncio.ensure_future(self._invoke(job))
                await asyncio.wait_for(self._running, timeout)
        except asyncio.TimeoutError:
            error = TaskTimedOut(f"Task timed out after {timeout:g}s")
            self._abandon_thread(job)
        except asyncio.CancelledError as exc:
            error = self._explain_cancellation(exc, in_place=timeout is None)
            self._abandon_thread(job)
        except _BaseExceptionInTask as exc:
            error = exc.original
        except Exception as exc:  # noqa: BLE001 - any task failure fails the job, nothing more
            error = exc
        finally:
            self._running = None
            self.current_job = None
        duration_ms = (time.perf_counter() - start) * 1000
        queries = queries_for(self._config.schema)
        if error is None:
            if self._config.log_success:
                log.info("Completed task %s (%s) with success (%.2fms)", job.id, job.task_identifier, duration_ms)
            return _Release(queries.complete_job_quietly, queries.complete_job_and_get_job, (self.id, job.id))
        message = error_message(error)
        log.error(_failure_line(job, message, duration_ms, error))
        return _Release(queries.fail_job_quietly, queries.fail_job_and_get_job, (self.id, job.id, message))

    def _explain_cancellation(self, exc: asyncio.CancelledError, *, in_place: bool) -> BaseException:
        """Why the task's await ended in CancelledError: our abort, our own task being cancelled
        from outside (the job is failed, then the worker stops), or the task's own doing."""
        if self._abort_reason is not None:
            if in_place:
                _forget_cancellation()  # abort() cancelled this worker's task; handled here
            return TaskAborted(self._abort_reason)
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)
        # Python 3.10 cannot tell a task's own CancelledError from ours: take it as ours.
        if cancelling is None or cancelling() > 0:
            self._cancelled = True
            return TaskAborted("Worker cancelled before the task finished")
        return exc

    async def _invoke(self, job: Job) -> Any:
        task = self._config.tasks[job.task_identifier]
        if isinstance(job.payload, jobs.UndecodablePayload):
            raise PayloadError(f"job payload cannot be decoded ({job.payload.reason})")
        try:
            if job.task_identifier in self._config.async_tasks:
                return await task(job.payload, Helpers(job, self._resources))
            if self._thread is None:
                self._thread = _TaskThread(f"kongtask-{self.id}")
            future = self._thread.submit(task, job.payload, SyncHelpers(job, self._resources))
            result = await asyncio.wrap_future(future)
            if inspect.isawaitable(result):
                # A plain def that returns a coroutine (a decorated async function, say).
                result = await result
            return result
        except (KeyboardInterrupt, SystemExit) as exc:
            raise _BaseExceptionInTask(exc) from exc

    def _abandon_thread(self, job: Job) -> None:
        # A plain def task cannot be interrupted: leave its thread to finish alone, unobserved.
        if job.task_identifier not in self._config.async_tasks and self._thread is not None:
            self._thread.retire()
            self._thread = None

    # --- release -------------------------------------------------------------------------------

    async def _release(self, release: _Release, *, fetch_next: bool) -> Job | None:
        """Completes or fails a job, and with ``fetch_next`` checks out the next one in the same
        statement. Should that fail, the release is retried on its own."""
        if fetch_next:
            try:
                async with self._resources.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    statement = release.and_fetch, release.params + self._fetch_params
                    job = await jobs.fetch_job(conn, statement, tolerant=self._config.decode_per_statement)
                self._coordinator.outage.recovered()
                return job
            except CONNECTION_ERRORS as exc:
                self._coordinator.outage.failed(exc)
        await self._release_alone(release.alone, release.params)
        return None

    async def _release_alone(self, query: str, params: tuple[Any, ...]) -> None:
        """Completes or fails the job, retrying through outages until it lands or we are forced."""
        backoff = Backoff(ceiling=2.0)
        while True:
            try:
                async with self._resources.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    await conn.execute(query, params)
                self._coordinator.outage.recovered()
                return
            except CONNECTION_ERRORS as exc:
                self._coordinator.outage.failed(exc)
                if self._coordinator.release_abandoned():
                    log.error(
                        "could not release job %s before shutdown; its queue stays locked by %s until the "
                        "job expiry passes",
                        params[1], self.id,
                    )
                    return
                await asyncio.sleep(backoff.next())
