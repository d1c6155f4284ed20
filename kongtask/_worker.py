"""One worker: take a job from the pool's checkouts, run its task, hand back the outcome, go again.

A worker owns nothing but, for plain ``def`` tasks, one daemon thread. Where jobs come from and
how they are released is :mod:`kongtask._checkouts`; the pool (:mod:`kongtask._worker_pool`) tells
the worker when to stop.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import os
import queue
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ._checkouts import Checkouts
from ._helpers import Helpers, SyncHelpers
from ._job import Job
from ._observer import NO_OBSERVER, Observer
from ._options import ForbiddenFlags
from ._resources import SharedResources
from ._schema import DatabaseSchema, jobs
from .errors import PayloadError
from .tasks import Task, is_async_task, task_timeout

log = logging.getLogger("kongtask.worker")

#: The longest error message kept in ``last_error`` and in the log (characters). A task may fail
#: with megabytes of text; storing and logging all of it costs every reader, and says no more.
ERROR_MESSAGE_LIMIT = 8192

#: The longest stack logged with a failure (characters); its head and tail are kept.
STACK_LIMIT = 16384

#: How many buffered def jobs a busy worker queues in its thread behind the running one. Each is
#: taken back for a worker that becomes free, or on a stop, unless the thread has started it.
LOOKAHEAD = 8

#: After a task is cancelled (timeout, forced stop), how long it may take to wind down before the
#: worker moves on without it.
_CANCEL_GRACE_S = 1.0

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def make_worker_id() -> str:
    """``worker-`` and 20 random hex characters: distinct across processes and machines."""
    return f"worker-{secrets.token_hex(10)}"


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker of a pool runs with."""

    tasks: Mapping[str, Task]
    #: The schema this database holds, chosen when the pool started: every statement comes from it.
    database: DatabaseSchema
    poll_interval: float
    job_expiry: timedelta
    log_success: bool
    task_timeout: float | None = None
    #: The most jobs one fetch checks out (the buffer adapts below it).
    batch_size: int = 1
    #: Jobs with any of these flags are not fetched (a list, or a function asked before each fetch).
    forbidden_flags: ForbiddenFlags | None = None
    #: Set up tolerant payload decoding on each fetch (a caller's pool) rather than per connection.
    decode_per_statement: bool = False
    #: Told of every job's start and end (the metrics); does nothing by default.
    observer: Observer = NO_OBSERVER
    task_names: list[str] = field(init=False)
    async_tasks: frozenset[str] = field(init=False)

    @property
    def schema(self) -> str:
        return self.database.name

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_names", sorted(self.tasks))
        object.__setattr__(self, "async_tasks", frozenset(n for n, t in self.tasks.items() if is_async_task(t)))


class BatchItemsFailed(Exception):
    """Some items of a batch job (an array payload whose task returned one result per item) failed:
    the job fails, and only those items stay in its payload for the retry, as upstream does."""

    def __init__(self, failures: list[tuple[int, BaseException]], remaining: list[Any], total: int) -> None:
        shown = "; ".join(f"[{index}] {error_message(error)}" for index, error in failures[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(f"{len(failures)} of {total} batch items failed: {shown}{more}")
        self.remaining = remaining


class TaskAborted(Exception):
    """The task was stopped from outside (forced shutdown); its message is the reason."""


class TaskTimedOut(Exception):
    """The task ran past its timeout."""


class _RaisedInTask(Exception):
    """Carries what task code raised that is not an ``Exception`` (SystemExit, KeyboardInterrupt,
    its own CancelledError), so it fails only that job and is never taken for the worker's own."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


Outcome = tuple[Any, BaseException | None]


def _settle(outcome: asyncio.Future[Outcome], value: Any, error: BaseException | None) -> None:
    if not outcome.done():
        outcome.set_result((value, error))


class _Submission:
    """A plain ``def`` job handed to a task thread. Exactly one party claims it: the thread, to
    run it, or the pool, taking it back before it starts (for an idle worker, or on a stop)."""

    __slots__ = ("_unclaimed", "args", "fn", "job", "outcome", "taken_back")

    def __init__(self, job: Job, outcome: asyncio.Future[Outcome], fn: Callable[..., Any], *args: Any) -> None:
        self.job = job
        self.outcome = outcome
        self.fn = fn
        self.args = args
        self.taken_back = False
        self._unclaimed = [True]

    def claim(self) -> bool:
        # list.pop is atomic under the GIL: one caller gets the item, any other an IndexError.
        try:
            return self._unclaimed.pop()
        except IndexError:
            return False

    def take_back(self) -> bool:
        """Takes the job back unless its thread has started it or it was taken back already;
        says whether this call took it."""
        if self.claim():
            self.taken_back = True
            return True
        return False


class _TaskThread:
    """A daemon thread that runs one worker's plain ``def`` tasks, one at a time.

    Daemon, so a task stuck in a loop never keeps the process alive after a forced shutdown.
    """

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._inbox: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def submit(self, item: _Submission) -> None:
        """Runs the item in the thread after those before it; its outcome future gets
        ``(result, error)`` on the loop."""
        self._inbox.put(item)

    def retire(self) -> None:
        """Ends the thread once its current call returns (if it ever does)."""
        self._inbox.put(None)

    def _serve(self) -> None:
        while (item := self._inbox.get()) is not None:
            if not item.claim():
                continue  # taken back before it started
            value: Any = None
            error: BaseException | None = None
            try:
                value = item.fn(*item.args)
            except Exception as exc:  # noqa: BLE001 - handed to the worker, which fails the job
                error = exc
            except BaseException as exc:  # noqa: BLE001 - SystemExit and the like fail the job only
                error = _RaisedInTask(exc)
            try:
                self._loop.call_soon_threadsafe(_settle, item.outcome, value, error)
            except RuntimeError:  # the loop is closed: nobody waits for this outcome any more
                return


def _truncated(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, its head and tail kept around a note."""
    if len(text) <= limit:
        return text
    keep = limit
    while True:  # the note's own length depends on the count it gives
        note = f" [... {len(text) - keep} characters cut ...] "
        if keep + len(note) <= limit:
            break
        keep = limit - len(note)
    head = keep // 2
    return f"{text[:head]}{note}{text[len(text) - (keep - head):]}"


def _user_stack(error: BaseException) -> str:
    """The error's traceback without kongtask's own frames: the lines a task's author can act on."""
    summary = traceback.TracebackException.from_exception(error)
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack if not frame.filename.startswith(_PACKAGE_DIR)]
    )
    return "".join(summary.format()).strip()


def _next_try(job: Job, now: datetime) -> str:
    """When a failed job runs again, as fail_job computes it: attempt N waits e^min(N, 10) s."""
    if job.attempts >= job.max_attempts:
        return f"giving up after {job.attempts} attempt{'s' if job.attempts != 1 else ''}"
    start = max(now, job.run_at)
    try:
        at = start + timedelta(seconds=math.exp(min(job.attempts, 10)))
        when = at.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    except OverflowError:
        when = "the job's run_at"
    return f"attempt {job.attempts} of {job.max_attempts}, retrying at {when}"


def _failure_line(job: Job, message: str, duration_ms: float, error: BaseException) -> str:
    """Upstream's line, then when the job runs again; the stack follows, indented, when there is one."""
    line = (
        f"Failed task {job.id} ({job.task_identifier}) with error {message} ({duration_ms:.2f}ms); "
        f"{_next_try(job, datetime.now(timezone.utc))}"
    )
    if isinstance(error, (TaskAborted, TaskTimedOut)) or error.__traceback__ is None:
        return line
    try:
        stack = _truncated(_user_stack(error), STACK_LIMIT)
    except Exception:  # noqa: BLE001 - a hostile exception must not stop the worker
        return line
    return line + ":\n  " + stack.replace("\n", "\n  ")


def error_message(error: BaseException) -> str:
    """What ``last_error`` records: the message, else the class name; never empty, never NUL, and
    at most :data:`ERROR_MESSAGE_LIMIT` characters."""
    try:
        message = str(error)
    except Exception as exc:  # noqa: BLE001 - a hostile __str__ must not stop the worker
        message = f"{type(error).__name__} (its message could not be read: {type(exc).__name__})"
    if not message.strip():
        message = type(error).__name__
    elif not isinstance(error, Exception):
        # SystemExit(3) says just "3": name what was raised.
        message = f"{type(error).__name__}: {message}"
    message = _truncated(message, ERROR_MESSAGE_LIMIT)
    # PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded to UTF-8.
    return message.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class WorkerTask(asyncio.Task):  # type: ignore[type-arg]
    """The asyncio task a worker runs in; it remembers being cancelled from outside kongtask.

    A task's own ``raise CancelledError`` and a cancellation of the worker look alike where the task
    is awaited, on every Python version (3.10 has no ``Task.cancelling()``). The worker's own
    interruptions (timeout, forced stop) go through :meth:`interrupt`; anything else that cancels
    this task is marked here, so the worker can tell the three apart.
    """

    _outside_cancels = 0

    def cancel(self, msg: Any = None) -> bool:
        self._outside_cancels += 1
        return super().cancel(msg)

    def uncancel(self) -> int:
        # asyncio.timeout() and TaskGroup in task code cancel this task, then take it back.
        if self._outside_cancels:
            self._outside_cancels -= 1
        return super().uncancel()  # type: ignore[no-any-return,misc,unused-ignore]  # 3.10 has no uncancel

    @property
    def cancelled_from_outside(self) -> bool:
        return self._outside_cancels > 0

    def interrupt(self) -> None:
        asyncio.Task.cancel(self)

    def forget_interruption(self) -> None:
        # Python 3.11+ counts cancellations; one the worker handled must not look pending to later
        # awaits (the release) or to asyncio.timeout in task code.
        uncancel = getattr(asyncio.Task, "uncancel", None)
        if uncancel is not None:
            uncancel(self)


class Worker:
    """Runs jobs one after another until the checkouts have none left for it (a stop, or ``once``).

    Start it with ``WorkerTask(worker.run(), loop=loop)``: the worker relies on that task type to
    tell its own interruptions from a task's own CancelledError.
    """

    def __init__(self, config: WorkerConfig, resources: SharedResources, checkouts: Checkouts, number: int) -> None:
        self.current_job: Job | None = None
        self._config = config
        self._resources = resources
        self._checkouts = checkouts
        self._number = number
        self._thread: _TaskThread | None = None
        # The next def job, handed to the thread while the current one runs, so that the thread
        # goes from job to job without waiting for the loop; and one taken back from it.
        self._ahead: collections.deque[_Submission] = collections.deque()
        self._started_ahead: _Submission | None = None
        self._in_hand: collections.deque[Job] = collections.deque()
        self._task: WorkerTask | None = None
        self._abort_reason: str | None = None
        self._interruptible = False  # awaiting a task: abort() and the timeout may interrupt it
        self._interruption: BaseException | None = None  # why the worker interrupted the task
        self._cancelled = False  # this worker's own task was cancelled from outside

    async def run(self) -> None:
        task = asyncio.current_task()
        if not isinstance(task, WorkerTask):
            raise TypeError("run a Worker inside a WorkerTask")
        self._task = task
        try:
            while (job := await self._next_job()) is not None:
                # A job in hand always runs (or, after a forced stop, fails at once) and is always
                # handed back: a stop that lands meanwhile must not strand it.
                self._checkouts.release(job, *await self._perform(job))
                if self._cancelled:
                    raise asyncio.CancelledError()
        finally:
            if self._thread is not None:
                self._thread.retire()

    async def _next_job(self) -> Job | None:
        while self._ahead:
            ahead = self._ahead.popleft()
            self._checkouts.unlend(ahead)
            if not ahead.taken_back:
                self._started_ahead = ahead
                return ahead.job
        if self._in_hand:
            return self._in_hand.popleft()
        return await self._checkouts.next_job()

    def abort(self, reason: str) -> None:
        """Stops the running task now; its job fails with ``reason`` so it is retried."""
        self._abort_reason = reason
        self._interrupt(TaskAborted(reason))

    def _interrupt(self, why: BaseException) -> None:
        if self._interruptible and self._interruption is None and self._task is not None:
            self._interruption = why
            self._task.interrupt()

    # --- run -----------------------------------------------------------------------------------

    async def _perform(self, job: Job) -> tuple[str | None, Any]:
        """Runs the job's task and logs how it went; returns None for a success, else the error
        message its release records, and what its payload becomes (None: as it is)."""
        self.current_job = job
        self._config.observer.job_started(job)
        start = time.perf_counter()
        if self._abort_reason is not None:
            # Handed over while a forced stop was under way: give it back for a retry.
            error: BaseException | None = TaskAborted(self._abort_reason)
        else:
            error = await self._run_task(job)
        self.current_job = None
        duration_ms = (time.perf_counter() - start) * 1000
        self._config.observer.job_finished(job, duration_ms / 1000, error is not None)
        if error is None:
            if self._config.log_success:
                log.info("Completed task %s (%s) with success (%.2fms)", job.id, job.task_identifier, duration_ms,
                         extra=_job_fields(job, duration_ms))
            return None, None
        message = error_message(error)
        log.error(_failure_line(job, message, duration_ms, error), extra=_job_fields(job, duration_ms, message))
        return message, error.remaining if isinstance(error, BatchItemsFailed) else None

    async def _run_task(self, job: Job) -> BaseException | None:
        """Runs the job's task in this worker's asyncio task; returns what failed it, if anything.

        One path for ``def`` and ``async def`` tasks alike: the worker interrupts the await with a
        cancellation of its own for a timeout or a forced stop, and tells those apart from the
        task's own CancelledError and from a cancellation of the worker by who asked for them.
        """
        timeout = task_timeout(self._config.tasks[job.task_identifier], self._config.task_timeout)
        assert self._task is not None
        timer = None
        if timeout is not None:
            timer = self._task.get_loop().call_later(
                timeout, self._interrupt, TaskTimedOut(f"Task timed out after {timeout:g}s")
            )
        self._interruptible = True
        try:
            return await _batch_failures(job, await self._invoke(job))
        except asyncio.CancelledError as exc:
            if self._interruption is not None:
                self._abandon_thread(job)
                return self._interruption
            if self._task.cancelled_from_outside:
                self._cancelled = True
                self._abandon_thread(job)
                return TaskAborted("Worker cancelled before the task finished")
            return exc  # the task raised CancelledError itself: its job fails, nothing more
        except _RaisedInTask as exc:
            return exc.original
        except Exception as exc:  # noqa: BLE001 - any task failure fails the job, nothing more
            return exc
        finally:
            self._interruptible = False
            if timer is not None:
                timer.cancel()
            if self._interruption is not None:
                # Handled above, or swallowed by the task: either way it is over.
                self._interruption = None
                self._task.forget_interruption()

    async def _invoke(self, job: Job) -> Any:
        task = self._config.tasks[job.task_identifier]
        if isinstance(job.payload, jobs.UndecodablePayload):
            raise PayloadError(f"job payload cannot be decoded ({job.payload.reason})")
        if job.task_identifier in self._config.async_tasks:
            try:
                return await task(job.payload, Helpers(job, self._resources))
            except (KeyboardInterrupt, SystemExit) as exc:
                raise _RaisedInTask(exc) from exc
        assert self._task is not None
        item, self._started_ahead = self._started_ahead, None
        if item is None or item.job is not job:
            if self._thread is None:
                self._thread = _TaskThread(f"kongtask-worker-{self._number}", self._task.get_loop())
            item = self._submission(job)
            self._thread.submit(item)
        self._look_ahead()
        outcome = item.outcome
        result, error = await outcome
        if error is not None:
            raise error
        if inspect.isawaitable(result):
            # A plain def that returns a coroutine (a decorated async function, say).
            result = await result
        return result

    def _look_ahead(self) -> None:
        """Hands the thread the next buffered def jobs now, to start each as soon as the one
        before it ends: the thread then runs a run of quick jobs without waiting for the loop."""
        if self._thread is None or self._abort_reason is not None:
            return
        while len(self._ahead) < LOOKAHEAD:
            job = self._checkouts.lend(self._runs_in_thread)
            if job is None:
                return
            item = self._submission(job)
            self._ahead.append(item)
            self._checkouts.lent(item)
            self._thread.submit(item)

    def _submission(self, job: Job) -> _Submission:
        assert self._task is not None
        task = self._config.tasks[job.task_identifier]
        return _Submission(job, self._task.get_loop().create_future(), task, job.payload,
                           SyncHelpers(job, self._resources))

    def _runs_in_thread(self, job: Job) -> bool:
        return job.task_identifier not in self._config.async_tasks and not isinstance(
            job.payload, jobs.UndecodablePayload
        )

    def _abandon_thread(self, job: Job) -> None:
        # A plain def task cannot be interrupted: leave its thread to finish alone, unobserved.
        if job.task_identifier not in self._config.async_tasks and self._thread is not None:
            self._thread.retire()
            self._thread = None
            # The jobs handed to it ahead run elsewhere, unless the thread already started them.
            for item in self._ahead:
                if item.take_back():
                    self._checkouts.unlend(item)
                    self._in_hand.append(item.job)


async def _batch_failures(job: Job, result: Any) -> BatchItemsFailed | None:
    """For a batch job (an array payload) whose task returned a list of one result per item: the
    items that failed (an exception, or an awaitable that raised), else None. Any other result
    means the whole job succeeded."""
    payload = job.payload
    if not isinstance(payload, list) or not isinstance(result, (list, tuple)) or len(result) != len(payload):
        return None
    waiting = [index for index, item in enumerate(result) if inspect.isawaitable(item)]
    outcomes = list(result)
    if waiting:
        settled = await asyncio.gather(*(result[index] for index in waiting), return_exceptions=True)
        for index, value in zip(waiting, settled, strict=True):
            outcomes[index] = value
    failures = [(index, item) for index, item in enumerate(outcomes) if isinstance(item, BaseException)]
    if not failures:
        return None
    return BatchItemsFailed(failures, [payload[index] for index, _ in failures], len(payload))


def _job_fields(job: Job, duration_ms: float, error: str | None = None) -> dict[str, Any]:
    """The structured fields of a job's log lines (JSON logs show them as keys)."""
    fields: dict[str, Any] = {
        "job_id": job.id, "task": job.task_identifier, "queue": job.queue_name,
        "attempt": job.attempts, "max_attempts": job.max_attempts, "duration_ms": round(duration_ms, 2),
    }
    if error is not None:
        fields["error"] = error
    return fields
