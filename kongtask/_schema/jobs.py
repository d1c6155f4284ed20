"""The SQL API from Python: ``add_job`` (and many at once), ``get_job``, ``complete_job`` and ``fail_job``.

Each function runs one statement of the schema (:func:`kongtask._schema.schema_named`) on a
connection you hold and returns the job row as a :class:`~kongtask.Job`. The async functions are
the core; the ``*_sync`` twins share their statement building and row decoding, and differ only in
the connection they await.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import psycopg.errors
from psycopg import adapters, pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import AdaptersMap, Loader
from psycopg.rows import tuple_row
from psycopg.types.json import JsonLoader

from .._job import JOB_KEY_MODES, Job, JobOptions, JobSpec, Unpack
from ..errors import PayloadError, SchemaTooOld
from . import schema_named, v0_18
from .v0_1 import ADD_JOB_OPTIONS

#: Upstream's get_job default: a queue locked longer than this is taken as abandoned. The SQL API
#: keeps it; kongtask's workers pass defaults.JOB_EXPIRY, which their heartbeats make safe.
UPSTREAM_JOB_EXPIRY = timedelta(hours=4)

_Statement = tuple[str, Any]  # the text and its parameters: a tuple, or a mapping for named ones

#: The longest task identifier or queue name a job may have. v0.1.0's columns are unbounded text,
#: but a name of thousands of characters fails inside PostgreSQL's index on the queue; upstream's
#: later schema caps both at 128, and so does kongtask, before anything is sent.
MAX_NAME_LENGTH = 128
#: max_attempts is an int4 column.
MAX_ATTEMPTS = 2**31 - 1


@dataclass(frozen=True)
class UndecodablePayload:
    """Stands in for a payload PostgreSQL stored but Python cannot decode (nested too deeply)."""

    reason: str


class TolerantJsonLoader(JsonLoader):
    """Decodes json columns; a payload that cannot be decoded becomes :class:`UndecodablePayload`.

    PostgreSQL accepts JSON nested thousands of levels deep, deeper than Python's decoder goes; one
    such job must fail on its own rather than stop the worker that fetched it.
    """

    def load(self, data: Any) -> Any:
        try:
            return super().load(data)
        except (RecursionError, ValueError) as exc:
            return UndecodablePayload(f"{type(exc).__name__}: {exc}")


#: What a timestamp that Python cannot hold becomes: ``-infinity`` and dates before year 1 (BC)
#: load as the earliest datetime, ``infinity`` and dates after year 9999 as the latest.
DISTANT_PAST = datetime.min.replace(tzinfo=timezone.utc)
DISTANT_FUTURE = datetime.max.replace(tzinfo=timezone.utc)

_TIMESTAMPTZ_OID = adapters.types["timestamptz"].oid
# The fast loader psycopg registers; it cannot be subclassed (a C type), so it is wrapped.
_StrictTimestamptzLoader = adapters.get_loader(_TIMESTAMPTZ_OID, pq.Format.TEXT)


class TolerantTimestamptzLoader(Loader):
    """Decodes timestamptz columns; a value Python cannot represent is clamped, not an error.

    PostgreSQL holds ``-infinity``, ``infinity``, BC dates and years past 9999; datetime does not.
    One such job (added from SQL, say) must run or fail on its own rather than stop the worker that
    fetched it, so it loads as :data:`DISTANT_PAST` or :data:`DISTANT_FUTURE`.
    """

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        assert _StrictTimestamptzLoader is not None
        self._strict = _StrictTimestamptzLoader(oid, context)

    def load(self, data: Buffer) -> datetime | None:
        try:
            return self._strict.load(data)  # type: ignore[no-any-return]
        except psycopg.DataError:
            return self.unrepresentable(bytes(data))

    def unrepresentable(self, text: bytes) -> datetime | None:
        """What a value Python cannot hold loads as, given the server's text of it."""
        return DISTANT_PAST if text.startswith(b"-") or text.endswith(b" BC") else DISTANT_FUTURE


def register_tolerant_loaders(target: AdaptersMap) -> None:
    """Makes the job columns that PostgreSQL may hold but Python cannot decode load anyway."""
    target.register_loader("json", TolerantJsonLoader)
    target.register_loader("timestamptz", TolerantTimestamptzLoader)


# One encoder for every payload: json.dumps with options builds a new one per call, a third of the
# time it takes to check a small job (measured adding 100,000).
_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False)


def encode_payload(payload: Any) -> str:
    """``payload`` as JSON text, or :class:`PayloadError` before anything reaches the database."""
    if payload is None:
        payload = {}
    try:
        # NaN and Infinity are not JSON, and PostgreSQL's json type rejects them.
        text = _JSON.encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(
            f"job payload cannot be serialised to JSON ({exc}); pass dicts, lists, strings, "
            "finite numbers, booleans and None only"
        ) from None
    _check_utf8("job payload", text)
    return text


def _check_utf8(what: str, text: str) -> None:
    # A lone surrogate ("\ud800" in JSON, or an undecodable byte in a command-line argument) is a
    # valid Python str that cannot travel to PostgreSQL as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{what} holds a lone surrogate ({text[exc.start:exc.end]!r} at character {exc.start}) "
            "that cannot be sent as UTF-8; use whole characters only"
        ) from None


def _check_name(what: str, name: str, limit: int | None = MAX_NAME_LENGTH) -> None:
    if not name:
        # An empty queue name would be one queue that every such job shares, one at a time.
        raise PayloadError(f"{what} must not be empty; leave it out for the default")
    if limit is not None and len(name) > limit:
        raise PayloadError(
            f"{what} is {len(name)} characters long; at most {limit} are allowed"
        )
    if "\x00" in name:
        raise PayloadError(f"{what} holds a NUL character (at character {name.index(chr(0))}), which "
                           "PostgreSQL text cannot; remove it")
    _check_utf8(what, name)


def check_run_at(run_at: datetime) -> None:
    """Raises :class:`PayloadError` unless ``run_at`` is aware and representable in UTC.

    PostgreSQL stores years past 9999 and BC dates, but Python cannot hold them: a job added with
    one could not be read back (by this call, the worker or ``kongtask jobs``).
    """
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise PayloadError(
            f"run_at {run_at.isoformat()} has no time zone; pass an aware datetime, "
            "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
        )
    try:
        run_at.astimezone(timezone.utc)
    except OverflowError:
        raise PayloadError(
            f"run_at {run_at.isoformat()} falls outside years 1 to 9999 in UTC; "
            "give a time between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
        ) from None


#: A job's priority: 0.18's column is a smallint (v0.1.0's an int; kongtask keeps one range).
PRIORITY_RANGE = (-(2**15), 2**15 - 1)
#: upstream's limits on a job key.
MAX_JOB_KEY_LENGTH = 512

#: The options only graphile-worker's 0.18 schema has.
MODERN_OPTIONS = ("job_key", "job_key_mode", "flags")


def check_job(
    identifier: str,
    payload: Any = None,
    *,
    queue_name: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    priority: int | None = None,
    job_key: str | None = None,
    job_key_mode: str | None = None,
    flags: Any = None,
) -> str:
    """Checks the options of one job, wherever it is added; returns its payload as JSON text."""
    if not isinstance(identifier, str) or not identifier:
        raise PayloadError(f"task identifier must be a non-empty string, got {identifier!r}")
    _check_name("task identifier", identifier)
    if queue_name is not None:
        if not isinstance(queue_name, str):
            raise PayloadError(f"queue_name must be a string, got {queue_name!r}")
        _check_name("queue_name", queue_name)
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise PayloadError(f"run_at must be a datetime, got {run_at!r}")
        check_run_at(run_at)
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= MAX_ATTEMPTS
    ):
        raise PayloadError(f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS}, got {max_attempts!r}")
    low, high = PRIORITY_RANGE
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not low <= priority <= high):
        raise PayloadError(f"priority must be a whole number from {low} to {high} (smaller runs first), "
                           f"got {priority!r}")
    if job_key is not None:
        if not isinstance(job_key, str) or not 1 <= len(job_key) <= MAX_JOB_KEY_LENGTH:
            shown = f"{len(job_key)} characters long" if isinstance(job_key, str) else repr(job_key)
            raise PayloadError(f"job_key must be a string of 1 to {MAX_JOB_KEY_LENGTH} characters, got {shown}")
        _check_name("job_key", job_key, limit=MAX_JOB_KEY_LENGTH)
    if job_key_mode is not None:
        if job_key_mode not in JOB_KEY_MODES:
            raise PayloadError(f"job_key_mode must be one of {', '.join(JOB_KEY_MODES)}, got {job_key_mode!r}")
        if job_key is None:
            raise PayloadError(f"job_key_mode {job_key_mode!r} needs a job_key; give one, or leave the mode out")
    if flags is not None:
        if isinstance(flags, str) or not isinstance(flags, (list, tuple)):
            raise PayloadError(f"flags must be a list of strings, got {flags!r}")
        for flag in flags:
            if not isinstance(flag, str):
                raise PayloadError(f"flags must be a list of strings, got {flag!r} among them")
            _check_name("a flag", flag, limit=None)
    return encode_payload(payload)


@dataclass(frozen=True)
class AddJob:
    """One checked job, ready to be added to the schema a database holds.

    Most jobs are added with one statement that both schemas accept; a job with an option that
    only 0.18's schema has, or with a priority, is added after one question about which schema
    the database holds (:attr:`needs_schema`).
    """

    schema: str
    identifier: str
    payload: str
    options: dict[str, Any]

    @property
    def queue_name(self) -> str | None:
        return self.options.get("queue_name")

    @property
    def needs_schema(self) -> bool:
        return any(name in self.options for name in (*MODERN_OPTIONS, "priority"))

    def statement(self, modern: bool | None = None) -> _Statement:
        """The statement that adds the job: to 0.18's schema, v0.1.0's, or (``None``) either."""
        if modern:
            params = dict.fromkeys(("queue_name", "run_at", "max_attempts", "priority", "job_key", "job_key_mode"))
            params.update(self.options, identifier=self.identifier, payload=self.payload)
            params["flags"] = list(self.options["flags"]) if "flags" in self.options else None
            return v0_18.schema_named(self.schema).add_job, params
        if modern is False:
            given = [name for name in MODERN_OPTIONS if name in self.options]
            if given:
                raise schema_too_old(self.schema, given[0])
            if "priority" in self.options:
                params = dict.fromkeys(ADD_JOB_OPTIONS)
                params.update(self.options, identifier=self.identifier, payload=self.payload)
                return schema_named(self.schema).add_job_with_priority, params
        names = tuple(name for name in ADD_JOB_OPTIONS if name in self.options)
        return schema_named(self.schema).add_job(names), (self.identifier, self.payload,
                                                          *(self.options[name] for name in names))


def plan_add_job(schema: str, identifier: str, payload: Any = None, **options: Unpack[JobOptions]) -> AddJob:
    """Checks the options of one job (raising :class:`PayloadError` before anything is sent)."""
    unknown = sorted(set(options) - set(JobOptions.__annotations__))
    if unknown:
        raise PayloadError(f"unknown job option {unknown[0]!r}; a job takes {', '.join(JobOptions.__annotations__)}")
    text = check_job(identifier, payload, **options)
    given = {name: value for name, value in options.items() if value is not None}
    return AddJob(schema, identifier, text, given)


def add_job_statement(schema: str, identifier: str, payload: Any = None, **options: Unpack[JobOptions]) -> _Statement:
    """Checks the options of one job and builds its ``add_job`` call, for either schema (so only
    the options both schemas take)."""
    return plan_add_job(schema, identifier, payload, **options).statement()


#: Rows per INSERT when adding jobs in bulk. Measured with ``python -m bench.bulk_add``: from about
#: 5,000 rows up the rate hardly changes, while each statement's parameters take memory on both sides.
ADD_JOBS_CHUNK = 10_000

_SPEC_KEYS = tuple(field.name for field in dataclasses.fields(JobSpec))


def _job_index(index: int) -> str:
    return f"job {index}"


#: From this many jobs on, add_jobs refreshes the planner's statistics of the job tables.
ANALYZE_AFTER_JOBS = 1000


#: The parameter arrays of the bulk statements, one element per job.
_BULK_COLUMNS = ("identifier", "payload", "queue_name", "run_at", "max_attempts", "priority", "job_key", "flags")


@dataclass(frozen=True)
class JobsToAdd:
    """Checked jobs, in chunks of parameter arrays, ready to be added to the schema a database holds."""

    schema: str
    chunks: list[dict[str, list[Any]]]
    analyze: bool
    #: 0.18's add_jobs: a job whose key a waiting job has keeps that job's run_at (else "replace").
    job_key_preserve_run_at: bool = False

    def __bool__(self) -> bool:
        return bool(self.chunks)

    def statements(self, modern: bool) -> list[_Statement]:
        """One statement per chunk for v0.1.0's tables or, ``modern``, for 0.18's add_jobs; then ANALYZE."""
        if not modern:
            for option, column in (("job_key", "job_key"), ("flags", "flags")):
                if any(value is not None for chunk in self.chunks for value in chunk[column]):
                    raise schema_too_old(self.schema, option, "; no job was added")
        queries: Any = v0_18.schema_named(self.schema) if modern else schema_named(self.schema)
        statements: list[_Statement] = [
            (queries.add_jobs, chunk | {"preserve_run_at": self.job_key_preserve_run_at}) for chunk in self.chunks
        ]
        if self.analyze:
            statements.append((queries.analyze_jobs, ()))
        return statements


def add_jobs_statements(
    schema: str,
    specs: Iterable[JobSpec | Mapping[str, Any]],
    *,
    chunk_size: int = ADD_JOBS_CHUNK,
    name_of: Callable[[int], str] = _job_index,
    job_key_preserve_run_at: bool = False,
) -> JobsToAdd:
    """Checks every job of ``specs`` and groups them for the statements that add them, ``chunk_size``
    rows each (see :meth:`JobsToAdd.statements`).

    A bad job raises :class:`PayloadError` naming it (``name_of`` its index: ``job 3`` by default)
    before anything is sent. Each job is checked by :func:`check_job`, as ``add_job`` checks one.
    """
    columns: dict[str, list[Any]] = {name: [] for name in _BULK_COLUMNS}
    keys: dict[str, int] = {}
    for index, spec in enumerate(specs):
        try:
            job = _as_job_spec(spec)
            if job.job_key is not None and keys.setdefault(job.job_key, index) != index:
                # 0.18's add_jobs cannot change one row twice in one statement.
                raise PayloadError(f"job_key {job.job_key!r} is {name_of(keys[job.job_key])}'s too; one call can "
                                   "add one job per key")
            columns["payload"].append(
                check_job(job.identifier, job.payload, queue_name=job.queue_name, run_at=job.run_at,
                          max_attempts=job.max_attempts, priority=job.priority, job_key=job.job_key, flags=job.flags)
            )
        except PayloadError as exc:
            raise PayloadError(f"{name_of(index)}: {exc}") from None
        columns["identifier"].append(job.identifier)
        columns["queue_name"].append(job.queue_name)
        columns["run_at"].append(job.run_at)
        columns["max_attempts"].append(job.max_attempts)
        columns["priority"].append(job.priority)
        columns["job_key"].append(job.job_key)
        # As JSON: one array parameter cannot hold arrays of different lengths.
        columns["flags"].append(None if job.flags is None else _JSON.encode(list(job.flags)))
    starts = range(0, len(columns["identifier"]), chunk_size)
    chunks = [{name: column[start:start + chunk_size] for name, column in columns.items()} for start in starts]
    return JobsToAdd(schema, chunks, analyze=len(columns["identifier"]) >= ANALYZE_AFTER_JOBS,
                     job_key_preserve_run_at=job_key_preserve_run_at)


def _as_job_spec(spec: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(spec, JobSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise PayloadError(f"expected a JobSpec or a mapping, got {type(spec).__name__}")
    unknown = [key for key in spec if key not in _SPEC_KEYS]
    if unknown:
        raise PayloadError(f"unknown key {unknown[0]!r}; a job takes {', '.join(_SPEC_KEYS)}")
    if "identifier" not in spec:
        raise PayloadError("identifier is missing; give the task identifier of every job")
    return JobSpec(**spec)


def text_array_literal(values: list[str]) -> str:
    """``values`` as a PostgreSQL array literal (``{"a","b"}``), for a ``%s::text[]`` parameter."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def get_job_statement(
    schema: str, worker_id: str, task_names: list[str] | None, job_expiry: timedelta
) -> _Statement:
    return schema_named(schema).get_job, (worker_id, task_names, job_expiry)


def complete_job_statement(schema: str, worker_id: str, job_id: int) -> _Statement:
    return schema_named(schema).complete_job, (worker_id, job_id)


def fail_job_statement(schema: str, worker_id: str, job_id: int, message: str) -> _Statement:
    return schema_named(schema).fail_job, (worker_id, job_id, message)


def job_or_none(row: tuple[Any, ...] | None) -> Job | None:
    """The job in a ``select *`` row of the jobs table, in column order."""
    # A plpgsql function that returns null for a row type yields a row of nulls to `select *`.
    return None if row is None or row[0] is None else Job(*row)


async def fetch_job(
    conn: psycopg.AsyncConnection[Any], statement: _Statement, *, tolerant: bool = False
) -> Job | None:
    """Runs a statement that returns at most one jobs row; the hot path of every worker.

    The cursor sets its own row factory (a caller's pool may use dict rows), and with ``tolerant``
    its own loaders (see :func:`register_tolerant_loaders`), leaving the connection as it was.
    """
    cursor = conn.cursor(row_factory=tuple_row)
    if tolerant:
        register_tolerant_loaders(cursor.adapters)
    await cursor.execute(*statement)
    return job_or_none(await cursor.fetchone())


async def fetch_rows(
    conn: psycopg.AsyncConnection[Any], query: str, params: Any, *, tolerant: bool = False
) -> list[tuple[Any, ...]]:
    """Runs one of the worker's statements and returns its rows as tuples (see :func:`fetch_job`)."""
    cursor = conn.cursor(row_factory=tuple_row)
    if tolerant:
        register_tolerant_loaders(cursor.adapters)
    await cursor.execute(query, params)
    return await cursor.fetchall()


def _added_job(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], row: tuple[Any, ...] | None,
               identifier: str, queue_name: str | None) -> Job:
    """The job that ``add_job`` returned: a row of v0.1.0's jobs table, or of 0.18's private table,
    which names its task and queue by id (they are the ones the job was added with)."""
    assert row is not None and cursor.description is not None
    names = [column.name for column in cursor.description]
    if "job_queue_id" not in names:
        job = job_or_none(row)
        assert job is not None
        return job
    value = dict(zip(names, row, strict=True))
    return Job(
        value["id"], queue_name, identifier, value["payload"], value["priority"], value["run_at"], value["attempts"],
        value["max_attempts"], value["last_error"], value["created_at"], value["updated_at"], value["key"],
        value["revision"], value["flags"],
    )


def _refusal(exc: psycopg.Error) -> PayloadError | None:
    """A job that 0.18's add_job refuses (its GWB* checks) or its smallint columns cannot hold, as
    the one line a :class:`PayloadError` is; None for any other error."""
    state = exc.sqlstate or ""
    said = exc.diag.message_primary or str(exc)
    if state.startswith("GWB"):
        return PayloadError(f"the database refused the job: {said}")
    if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
        return PayloadError(f"the database refused the job: {said} (0.18's schema keeps max_attempts and "
                            "priority in smallints: at most 32767)")
    return None


async def insert_job(conn: psycopg.AsyncConnection[Any], job: AddJob) -> Job:
    """Adds a job planned by :func:`plan_add_job` to the schema the database holds; returns it."""
    cursor = conn.cursor(row_factory=tuple_row)
    modern = await _holds_0_18(cursor, job.schema) if job.needs_schema else None
    try:
        await cursor.execute(*job.statement(modern))
    except psycopg.Error as exc:
        refused = _refusal(exc)
        if refused is None:
            raise
        raise refused from None
    return _added_job(cursor, await cursor.fetchone(), job.identifier, job.queue_name)


def insert_job_sync(conn: psycopg.Connection[Any], job: AddJob) -> Job:
    """The synchronous twin of :func:`insert_job`."""
    cursor = conn.cursor(row_factory=tuple_row)
    modern = _holds_0_18_sync(cursor, job.schema) if job.needs_schema else None
    try:
        cursor.execute(*job.statement(modern))
    except psycopg.Error as exc:
        refused = _refusal(exc)
        if refused is None:
            raise
        raise refused from None
    return _added_job(cursor, cursor.fetchone(), job.identifier, job.queue_name)


def fetch_job_sync(conn: psycopg.Connection[Any], statement: _Statement) -> Job | None:
    cursor = conn.cursor(row_factory=tuple_row)
    cursor.execute(*statement)
    return job_or_none(cursor.fetchone())


def _holds_0_18_probe(schema: str) -> _Statement:
    # Whether the schema's jobs live in 0.18's private table: the one question adding jobs asks,
    # since the statements differ and the caller's connection may point at either generation.
    queries = schema_named(schema)
    return queries.migrations_table, (f"{queries.quoted_schema}._private_jobs",)


async def _holds_0_18(cursor: psycopg.AsyncCursor[Any], schema: str) -> bool:
    """Whether the database behind ``cursor`` (a tuple-row cursor) holds 0.18's private job table."""
    await cursor.execute(*_holds_0_18_probe(schema))
    found = await cursor.fetchone()
    return found is not None and found[0] is not None


def _holds_0_18_sync(cursor: psycopg.Cursor[Any], schema: str) -> bool:
    """The synchronous twin of :func:`_holds_0_18`."""
    found = cursor.execute(*_holds_0_18_probe(schema)).fetchone()
    return found is not None and found[0] is not None


def _added(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> int:
    # v0.1.0's INSERT counts its rows; 0.18's add_jobs call returns the count; ANALYZE neither.
    return max(cursor.rowcount, 0) if cursor.description is None else -1


async def insert_jobs(conn: psycopg.AsyncConnection[Any], plan: JobsToAdd) -> int:
    """Adds the jobs of :func:`add_jobs_statements` to the schema the database holds, all or none.

    Returns how many were added. Like ``add_job``, the jobs join the caller's transaction (inside a
    savepoint, so a failure leaves it usable) and count only if it commits; on an autocommit
    connection they are one transaction of their own.
    """
    added = 0
    async with conn.transaction() if _needs_transaction(conn) else contextlib.nullcontext():
        cursor = conn.cursor(row_factory=tuple_row)
        for statement in plan.statements(modern=await _holds_0_18(cursor, plan.schema)):
            try:
                await cursor.execute(*statement)
            except psycopg.Error as exc:
                raise _refusal(exc) or exc from None
            count = _added(cursor)
            added += count if count >= 0 else (await cursor.fetchone() or (0,))[0]
    return added


def insert_jobs_sync(conn: psycopg.Connection[Any], plan: JobsToAdd) -> int:
    """The synchronous twin of :func:`insert_jobs`."""
    added = 0
    with conn.transaction() if _needs_transaction(conn) else contextlib.nullcontext():
        cursor = conn.cursor(row_factory=tuple_row)
        for statement in plan.statements(modern=_holds_0_18_sync(cursor, plan.schema)):
            try:
                cursor.execute(*statement)
            except psycopg.Error as exc:
                raise _refusal(exc) or exc from None
            count = _added(cursor)
            added += count if count >= 0 else (cursor.fetchone() or (0,))[0]
    return added


def _needs_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    # psycopg's transaction() on a connection outside autocommit with no transaction open yet would
    # open one and commit it at the end, behind the caller's back. There the first statement opens
    # the caller's transaction instead; should a later one fail, that transaction cannot commit.
    return conn.autocommit or conn.info.transaction_status != pq.TransactionStatus.IDLE


async def add_job(
    conn: psycopg.AsyncConnection[Any], schema: str, identifier: str, payload: Any = None, **options: Unpack[JobOptions]
) -> Job:
    """Adds a job with ``<schema>.add_job`` and returns it."""
    return await insert_job(conn, plan_add_job(schema, identifier, payload, **options))


async def get_job(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    worker_id: str,
    task_names: list[str] | None = None,
    job_expiry: timedelta = UPSTREAM_JOB_EXPIRY,
) -> Job | None:
    """Checks out the next runnable job for ``worker_id``, or ``None`` when there is none."""
    return await fetch_job(conn, get_job_statement(schema, worker_id, task_names, job_expiry))


async def complete_job(
    conn: psycopg.AsyncConnection[Any], schema: str, worker_id: str, job_id: int
) -> Job | None:
    """Deletes a finished job and unlocks its queue; returns the deleted row."""
    return await fetch_job(conn, complete_job_statement(schema, worker_id, job_id))


async def fail_job(
    conn: psycopg.AsyncConnection[Any], schema: str, worker_id: str, job_id: int, message: str
) -> Job | None:
    """Records a failure, schedules the retry and unlocks the queue; returns the row."""
    return await fetch_job(conn, fail_job_statement(schema, worker_id, job_id, message))


def add_job_sync(
    conn: psycopg.Connection[Any], schema: str, identifier: str, payload: Any = None, **options: Unpack[JobOptions]
) -> Job:
    """The synchronous twin of :func:`add_job`."""
    return insert_job_sync(conn, plan_add_job(schema, identifier, payload, **options))


def get_job_sync(
    conn: psycopg.Connection[Any],
    schema: str,
    worker_id: str,
    task_names: list[str] | None = None,
    job_expiry: timedelta = UPSTREAM_JOB_EXPIRY,
) -> Job | None:
    """The synchronous twin of :func:`get_job`."""
    return fetch_job_sync(conn, get_job_statement(schema, worker_id, task_names, job_expiry))


def complete_job_sync(conn: psycopg.Connection[Any], schema: str, worker_id: str, job_id: int) -> Job | None:
    """The synchronous twin of :func:`complete_job`."""
    return fetch_job_sync(conn, complete_job_statement(schema, worker_id, job_id))


def fail_job_sync(
    conn: psycopg.Connection[Any], schema: str, worker_id: str, job_id: int, message: str
) -> Job | None:
    """The synchronous twin of :func:`fail_job`."""
    return fetch_job_sync(conn, fail_job_statement(schema, worker_id, job_id, message))



async def remove_job(conn: psycopg.AsyncConnection[Any], schema: str, job_key: str) -> Job | None:
    """Removes the waiting job with ``job_key`` (0.18's schema); returns it, or None when none has it."""
    statement = _remove_job_statement(schema, job_key)
    cursor = conn.cursor(row_factory=tuple_row)
    if not await _holds_0_18(cursor, schema):
        raise schema_too_old(schema, "remove_job")
    await cursor.execute(*statement)
    return job_or_none(await cursor.fetchone())


def remove_job_sync(conn: psycopg.Connection[Any], schema: str, job_key: str) -> Job | None:
    """The synchronous twin of :func:`remove_job`."""
    statement = _remove_job_statement(schema, job_key)
    cursor = conn.cursor(row_factory=tuple_row)
    if not _holds_0_18_sync(cursor, schema):
        raise schema_too_old(schema, "remove_job")
    cursor.execute(*statement)
    return job_or_none(cursor.fetchone())


def _remove_job_statement(schema: str, job_key: str) -> _Statement:
    if not isinstance(job_key, str) or not 1 <= len(job_key) <= MAX_JOB_KEY_LENGTH:
        raise PayloadError(f"job_key must be a string of 1 to {MAX_JOB_KEY_LENGTH} characters, got {job_key!r}")
    return v0_18.schema_named(schema).remove_job, {"job_key": job_key}


def schema_too_old(schema: str, what: str, outcome: str = "") -> SchemaTooOld:
    """The one line that says ``what`` needs the 0.18 schema, and how to get it."""
    return SchemaTooOld(
        f"{what} needs graphile-worker's 0.18 schema, and this database holds v0.1.0's in schema {schema!r}: "
        "upgrade it with `kongtask migrate --to latest` (see the README, \"Two schemas: which one to choose\")"
        + outcome
    )
