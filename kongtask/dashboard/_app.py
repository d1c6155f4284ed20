"""The dashboard as an ASGI application: its routes, its pages and its actions.

Pages are HTML rendered on the server (Jinja2, which escapes every value unless told otherwise);
the part of a page that changes (``#live``) is fetched again by a few lines of script and swapped
in place. Every action is a POST behind a confirmation page, carrying a CSRF token, and goes
through :mod:`kongtask.admin`, which works on both schema generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import jinja2
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import _defaults, admin
from .._connections import connect, connection_kwargs, conninfo_or_environment, describe_target
from .._masking import mask_password
from .._outages import first_line
from .._schema import DatabaseSchema, held_by, schema_named
from ..errors import ConfigurationError, KongtaskError
from . import _data
from ._http import BadRequest, Receive, Request, Response, Scope, Send, redirect
from ._security import authorized, form_token, form_token_ok, host_allowed, same_origin

log = logging.getLogger("kongtask.dashboard")

PAGE_SIZE = 50
#: How long a page waits for a connection from the dashboard's pool (seconds).
POOL_TIMEOUT = 5.0
_STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
_JOB_ACTION = re.compile(r"/jobs/(\d{1,18})/(retry|delete|reschedule)")
_JOB_PAGE = re.compile(r"/jobs/(\d{1,18})")
#: What a finished action says on the page it leads to: fixed sentences, never text from the request.
_DONE = {
    "retried": "Job {n} is due now; a worker will pick it up.",
    "rescheduled": "Job {n} is rescheduled.",
    "deleted": "Job {n} is deleted.",
    "unchanged": "Job {n} was not changed: it is running now, or it is gone.",
    "unlocked": "Unlocked {n} queue(s).",
}
#: Shown in full up to this size; a bigger payload or error is cut, with a note.
SHOWN_TEXT = 200_000


class Dashboard:
    """The ``kongtask dashboard`` web app, for any ASGI server (``kongtask dashboard`` runs it on uvicorn).

    ``token``: required on every request, as Basic auth's password or a Bearer token; without one
    only loopback host names are answered. ``read_only``: no actions. ``refresh``: seconds between
    the page's own refreshes. ``count_timeout``: seconds exact counting may take before the
    overview shows the planner's estimates. ``sample_interval``: seconds between samples of the jobs
    table's running totals (the throughput).

    Open it with ``async with`` (or the server's lifespan events); it opens its own small pool
    from ``connection_string`` (default ``DATABASE_URL``), or uses ``pool``.
    """

    def __init__(
        self,
        *,
        connection_string: str | None = None,
        pool: AsyncConnectionPool[Any] | None = None,
        schema: str = _defaults.SCHEMA,
        read_only: bool = False,
        token: str | None = None,
        refresh: float = 5.0,
        count_timeout: float = 5.0,
        sample_interval: float = 10.0,
    ) -> None:
        if connection_string is not None and pool is not None:
            raise ConfigurationError("give the dashboard connection_string or pool, not both")
        if pool is None:
            connection_string = conninfo_or_environment(connection_string)
        schema_named(schema)  # a bad name fails here, not on the first page
        self.schema = schema
        self.read_only = read_only
        self.token = token
        self.refresh = refresh
        self.count_timeout = count_timeout
        self.sample_interval = sample_interval
        self.throughput = _data.Throughput()
        self._conninfo = connection_string
        self._own_pool = pool is None
        self._pool = pool
        shown = connection_string if pool is None else pool.conninfo
        self._target = describe_target(shown) if isinstance(shown, str) else "the pool's database"
        self._secret = secrets.token_bytes(32)  # the CSRF tokens' key: a new one each process
        self._overview_cache: tuple[float, str, _data.Overview] | None = None
        self._counting = asyncio.Lock()
        self._sampler: asyncio.Task[None] | None = None
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("kongtask.dashboard", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        )
        self._templates.filters.update(when=_when, ago=_ago, number=_number)

    # --- life: the pool and the sampler ------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is None:
            assert self._conninfo is not None
            self._pool = AsyncConnectionPool(
                self._conninfo, kwargs=connection_kwargs(self._conninfo), min_size=1, max_size=4, open=False,
                name="kongtask-dashboard", timeout=POOL_TIMEOUT,
            )
            await self._pool.open(wait=False)
        if self._sampler is None:
            self._sampler = asyncio.ensure_future(self._sample_forever())

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> Dashboard:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def check(self) -> str:
        """Reads which schema the database holds, raising the one-line error of a database that
        cannot be used; returns the generation (``v0.1.0`` or ``0.18``)."""
        async with self._connection() as conn:
            return (await held_by(conn, self.schema)).generation

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            await self.open()
        assert self._pool is not None
        async with self._pool.connection() as conn:
            yield conn

    async def _sample_forever(self) -> None:
        while True:
            try:
                async with self._connection() as conn:
                    database = await held_by(conn, self.schema)
                    self.throughput.record(await _data.read_table_stats(conn, database))
            except (psycopg.Error, PoolTimeout, KongtaskError) as exc:
                log.debug("could not sample the jobs table: %s", mask_password(first_line(exc)))
            await asyncio.sleep(self.sample_interval)

    def forget_counts(self) -> None:
        """The next overview counts afresh (after an action, say)."""
        self._overview_cache = None

    async def _overview_of(self, conn: psycopg.AsyncConnection[Any], database: DatabaseSchema) -> _data.Overview:
        """Counts and locks, from the cache while they are fresh: for about ten times what counting
        took (at least the refresh interval), so a big table is not counted over and over."""
        async with self._counting:
            now = time.monotonic()
            if self._overview_cache is not None:
                counted_at, generation, overview = self._overview_cache
                took = overview.counts.took_ms / 1000
                fresh_for = 60.0 if overview.counts.estimated else max(self.refresh, 10 * took)
                if generation == database.generation and now - counted_at < fresh_for:
                    return overview
            overview = await _data.read_overview(conn, database, self.count_timeout)
            self._overview_cache = (time.monotonic(), database.generation, overview)
            return overview

    # --- ASGI ----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            request = Request.from_scope(scope)
            response = await self._respond(request, receive)
        except BadRequest as exc:
            response = Response(400, str(exc).encode(), "text/plain; charset=utf-8")
        await response.send(send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.open()
                except Exception as exc:  # noqa: BLE001 - the server reports it and does not start
                    await send({"type": "lifespan.startup.failed", "message": mask_password(str(exc))})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, request: Request, receive: Receive) -> Response:
        if not host_allowed(request.headers.get("host"), loopback_only=self.token is None):
            return _text(400, "this dashboard answers only to localhost, 127.0.0.1 or [::1] (it has no --token)")
        if not authorized(request.headers.get("authorization"), self.token):
            return Response(401, b"a token is needed: give it as the password (any user name)",
                            "text/plain; charset=utf-8",
                            [(b"www-authenticate", b'Basic realm="kongtask dashboard", charset="UTF-8"')])
        if request.method == "GET" and request.path.startswith("/static/"):
            return _static(request.path.removeprefix("/static/"))
        if request.method not in ("GET", "POST"):
            return _text(405, "only GET and POST")
        try:
            return await self._route(request, receive)
        except (psycopg.OperationalError, PoolTimeout, KongtaskError) as exc:
            # The database is away, refuses us, or holds no usable schema: one line, and the page
            # tries again at its next refresh.
            problem = await self._why_no_connection() if isinstance(exc, PoolTimeout) else first_line(exc)
            return self._page(request, "trouble.html", status=503, title="The database cannot be used",
                              problem=mask_password(problem), retrying=True)

    async def _why_no_connection(self) -> str:
        """Why the pool had no connection to give: what PostgreSQL says to a connection of our own."""
        if self._conninfo is None:
            return f"no connection from the pool within {POOL_TIMEOUT:g} s"
        try:
            conn = await connect(self._conninfo)
        except KongtaskError as exc:
            return str(exc)
        await conn.close()
        return f"every connection of the dashboard's pool stayed busy for {POOL_TIMEOUT:g} s; try again"

    async def _route(self, request: Request, receive: Receive) -> Response:
        path = request.path
        action = _JOB_ACTION.fullmatch(path)
        if request.method == "POST":
            if not (action or path == "/workers/unlock"):
                return _text(405, "only the actions take POST")
            if self.read_only:
                return self._refuse(request, "this dashboard is read-only (--read-only): it changes nothing")
            await request.read_form(receive)
            if not same_origin(request.headers, request.scheme):
                return self._refuse(request, "this form came from another site; open the dashboard and try again")
            if not form_token_ok(self._secret, path, request.form.get("csrf")):
                return self._refuse(request, "this form is stale (the dashboard restarted?); open the page again")
        if path == "/":
            return await self._overview(request)
        if path == "/jobs":
            return await self._jobs(request)
        if path == "/workers/unlock":
            return await self._unlock(request)
        if action:
            return await self._job_action(request, int(action[1]), action[2])
        page = _JOB_PAGE.fullmatch(path)
        if page and request.method == "GET":
            return await self._job(request, int(page[1]))
        return self._page(request, "trouble.html", status=404, title="No such page", problem=f"nothing at {path}")

    # --- pages ---------------------------------------------------------------------------------------

    async def _overview(self, request: Request) -> Response:
        async with self._connection() as conn:
            database = await held_by(conn, self.schema)
            overview = await self._overview_of(conn, database)
        rates = self.throughput.rates()
        return self._page(
            request, "overview.html", title="Overview", database=database, counts=overview.counts,
            holders=overview.holders, locked_queues=overview.locked_queues, rates=rates,
            spark=_sparkline(rates.per_minute) if rates else "", states=_data.STATES, now=_now(),
        )

    async def _jobs(self, request: Request) -> Response:
        query = request.query
        where = _data.JobFilter(
            task=_field(query, "task"), queue=_field(query, "queue"),
            state=_choice(query, "state", _data.STATES), error=_field(query, "error", 200),
        )
        before, after = _cursor(query, "before"), _cursor(query, "after")
        async with self._connection() as conn:
            database = await held_by(conn, self.schema)
            page = await _data.read_page(conn, database, where, before=before, after=after, size=PAGE_SIZE)
            counts = self._overview_cache[2].counts if self._overview_cache is not None else None
        filters = {k: v for k, v in vars(where).items() if v is not None}
        return self._page(
            request, "jobs.html", title="Jobs", database=database, page=page, where=where, filters=filters,
            states=_data.STATES, counts=counts, now=_now(),
            newer=_url(request.root, "/jobs", filters | {"after": page.newer_than}) if page.newer_than else None,
            older=_url(request.root, "/jobs", filters | {"before": page.older_than}) if page.older_than else None,
            first=_url(request.root, "/jobs", filters),
        )

    async def _job(self, request: Request, job_id: int) -> Response:
        async with self._connection() as conn:
            database = await held_by(conn, self.schema)
            job = await _data.read_job(conn, database, job_id)
        return self._page(
            request, "job.html", status=200 if job is not None else 404, title=f"Job {job_id}",
            database=database, job=job, job_id=job_id, payload=_pretty_json(job.payload) if job else "",
            last_error=_cut(job.last_error) if job and job.last_error else None, now=_now(),
        )

    # --- actions: GET asks, POST does ---------------------------------------------------------------

    async def _job_action(self, request: Request, job_id: int, action: str) -> Response:
        if self.read_only:
            return self._refuse(request, "this dashboard is read-only (--read-only): it changes nothing")
        values = request.form if request.method == "POST" else request.query
        run_at = priority = None
        if action == "reschedule":
            run_at, priority = _reschedule_values(values)
        if request.method == "POST":
            if action == "retry":
                done = await admin.retry_job(job_id, pool=self._pool, schema=self.schema)
            elif action == "delete":
                done = await admin.delete_job(job_id, pool=self._pool, schema=self.schema)
            else:
                done = await admin.reschedule_job(
                    job_id, run_at=run_at, priority=priority, pool=self._pool, schema=self.schema
                )
            self.forget_counts()
            outcome = {"retry": "retried", "delete": "deleted", "reschedule": "rescheduled"}[action]
            if done is None:
                outcome = "unchanged"
            where = "/jobs" if outcome == "deleted" else f"/jobs/{job_id}"
            return redirect(_url(request.root, where, {"done": outcome, "n": job_id}))
        async with self._connection() as conn:
            database = await held_by(conn, self.schema)
            job = await _data.read_job(conn, database, job_id)
        if job is None:
            return self._page(request, "trouble.html", status=404, title=f"Job {job_id}",
                              problem=f"there is no job {job_id}: it completed, or was deleted")
        hidden = {"run_at": values.get("run_at", ""), "priority": values.get("priority", "")}
        return self._page(
            request, "confirm.html", title=f"{action.capitalize()} job {job_id}?", action=action, job=job,
            run_at=run_at, priority=priority, hidden=hidden if action == "reschedule" else {},
            post_to=f"/jobs/{job_id}/{action}", cancel=_url(request.root, f"/jobs/{job_id}", {}),
            database=database, now=_now(),
        )

    async def _unlock(self, request: Request) -> Response:
        if self.read_only:
            return self._refuse(request, "this dashboard is read-only (--read-only): it changes nothing")
        values = request.form if request.method == "POST" else request.query
        worker = (values.get("worker") or "").strip()
        if not worker or len(worker) > 256:
            raise BadRequest("name the worker to unlock: worker=WORKER_ID")
        if request.method == "POST":
            queues = await admin.unlock_worker(worker, pool=self._pool, schema=self.schema)
            self.forget_counts()
            return redirect(_url(request.root, "/", {"done": "unlocked", "n": len(queues)}))
        async with self._connection() as conn:
            database = await held_by(conn, self.schema)
            holders, _ = await _data.read_locks(conn, database)
        holder = next((h for h in holders if h.locked_by == worker), None)
        return self._page(
            request, "confirm.html", title="Unlock a worker's queues?", action="unlock", worker=worker,
            holder=holder, hidden={"worker": worker}, post_to="/workers/unlock", cancel=_url(request.root, "/", {}),
            database=database, now=_now(),
        )

    def _refuse(self, request: Request, why: str) -> Response:
        return self._page(request, "trouble.html", status=403, title="Refused", problem=why)

    # --- rendering -----------------------------------------------------------------------------------

    def _page(self, request: Request, name: str, *, status: int = 200, title: str, **values: Any) -> Response:
        done = request.query.get("done")
        n = request.query.get("n", "")
        flash = _DONE[done].format(n=int(n)) if done in _DONE and n.isdigit() and len(n) < 19 else None
        context = {
            "title": title, "root": request.root, "read_only": self.read_only, "target": self._target,
            "schema": self.schema, "refresh": self.refresh, "flash": flash, "database": None, "path": request.path,
            "csrf": lambda action: form_token(self._secret, action),
            "url": lambda path, **query: _url(request.root, path, query),
            **values,
        }
        template = self._templates.get_template(name)
        if request.headers.get("x-kongtask-refresh") and "live" in template.blocks:
            # The page's own refresh: only the part that changes.
            body = "".join(template.blocks["live"](template.new_context(context)))
        else:
            body = template.render(context)
        return Response(status, body.encode("utf-8"))


# --- small helpers: request values, URLs, text ------------------------------------------------------------


def _text(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8"), "text/plain; charset=utf-8")


def _static(name: str) -> Response:
    if name not in _STATIC:
        return _text(404, "no such file")
    body = (resources.files("kongtask.dashboard") / "static" / name).read_bytes()
    return Response(200, body, _STATIC[name])


def _field(query: dict[str, str], name: str, longest: int = 128) -> str | None:
    value = query.get(name, "").strip()
    if len(value) > longest:
        raise BadRequest(f"{name} is longer than {longest} characters")
    return value or None


def _choice(query: dict[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = _field(query, name)
    if value is not None and value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}")
    return value


def _cursor(query: dict[str, str], name: str) -> int | None:
    value = query.get(name, "")
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadRequest(f"{name} must be a job id")
    return int(value)


def _reschedule_values(values: dict[str, str]) -> tuple[datetime | None, int | None]:
    """The form's run_at (UTC, as a datetime-local field sends it) and priority; at least one."""
    run_at = priority = None
    text = values.get("run_at", "").strip()
    if text:
        try:
            run_at = datetime.fromisoformat(text.replace("Z", "").replace(" ", "T")).replace(tzinfo=timezone.utc)
        except ValueError:
            raise BadRequest("run_at must be a time such as 2030-01-31T09:00 (UTC)") from None
    text = values.get("priority", "").strip()
    if text:
        try:
            priority = int(text)
        except ValueError:
            raise BadRequest("priority must be a whole number") from None
        if not -32768 <= priority <= 32767:
            raise BadRequest("priority must be between -32768 and 32767")
    if run_at is None and priority is None:
        raise BadRequest("give a new run_at, a new priority, or both")
    return run_at, priority


def _url(root: str, path: str, query: dict[str, Any]) -> str:
    shown = {k: v for k, v in query.items() if v is not None and v != ""}
    return f"{root}{path}?{urlencode(shown)}" if shown else f"{root}{path}"


def _cut(text: str) -> str:
    if len(text) <= SHOWN_TEXT:
        return text
    return f"{text[:SHOWN_TEXT]}\n[... {len(text) - SHOWN_TEXT:,} more characters not shown]"


def _pretty_json(text: str) -> str:
    """The payload indented, when it decodes; as stored otherwise (too deep, too big)."""
    if len(text) <= SHOWN_TEXT:
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
    return _cut(text)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _when(moment: datetime | None, fallback: str = "") -> str:
    if moment is None:
        return fallback or "(not set)"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = (moment - _now()).total_seconds()
    span = abs(seconds)
    amount = (f"{span:.0f} s" if span < 90 else f"{span / 60:.0f} min" if span < 5400
              else f"{span / 3600:.0f} h" if span < 172800 else f"{span / 86400:.0f} days")
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def _number(value: int | float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


@dataclass(frozen=True)
class _Spark:
    points: str
    peak: int


def _sparkline(per_minute: list[int]) -> _Spark:
    """Completions per minute over the last hour, as the points of an SVG polyline (120 x 30)."""
    peak = max(per_minute) or 1
    points = " ".join(f"{i * 2},{30 - 28 * value / peak:.1f}" for i, value in enumerate(per_minute))
    return _Spark(points, max(per_minute))

