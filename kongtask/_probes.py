"""The metrics and probes server of one running pool: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

It listens from the moment the workers start (before the database answers, so that a liveness
probe passes while a worker waits for PostgreSQL) until they have stopped: the runner closes it
before its ``wait()`` returns. Requests are served on threads of their own; what they need from
the workers they ask the event loop for, with a deadline:

- ``/healthz``: 200 while the event loop runs. A heartbeat on the loop stamps the time every
  second; a loop stuck for :data:`LOOP_STALL_S` (an ``async def`` task that blocks, say) is 503,
  and a restart is the cure.
- ``/readyz``: 200 while the database answers on a connection of the probe's own and holds the
  schema generation the workers run on; 503 while the workers start or stop, in an outage, or
  once the schema has changed under them. It answers within a second, as Kubernetes' default
  ``timeoutSeconds: 1`` expects, and asks the database at most every :data:`READY_EVERY_S`.
- ``/metrics``: the runner's registry (:mod:`kongtask._metrics`), in the format the scraper asks for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client.exposition import choose_encoder
from psycopg_pool import AsyncConnectionPool

from . import _connections
from ._masking import mask_password
from ._metrics import Metrics
from ._outages import first_line
from ._schema import DatabaseSchema, held_by
from ._worker_pool import Runner
from .errors import ConfigurationError, ConnectionFailed, MigrationError

log = logging.getLogger("kongtask.metrics")

#: How often the event loop stamps its heartbeat (seconds).
LOOP_BEAT_S = 1.0
#: A loop whose heartbeat is older than this is stuck: /healthz says 503.
LOOP_STALL_S = 10.0
#: The longest /readyz waits for the database (seconds), within Kubernetes' default 1 s timeout.
READY_WAIT_S = 0.8
#: A readiness answer is reused this long, however many probes ask.
READY_EVERY_S = 1.0

_TEXT = "text/plain; charset=utf-8"


class MetricsServer:
    """Serves one runner's metrics and probes; :meth:`start` binds the port, :meth:`close` frees it."""

    def __init__(self, server: _Server, metrics: Metrics, loop: asyncio.AbstractEventLoop) -> None:
        self.metrics = metrics
        self._server = server
        self._loop = loop
        self._beat_at = time.monotonic()
        self._heartbeat = asyncio.ensure_future(self._beat())
        self._runner: Runner | None = None
        self._readiness: _Readiness | None = None
        self._closed = False
        self._thread = threading.Thread(target=server.serve_forever, name="kongtask-metrics", daemon=True)
        server.monitor = self
        self._thread.start()

    @classmethod
    def start(cls, host: str, port: int) -> MetricsServer:
        """Listens on ``host:port`` now (0: a free port), or says in one line why it cannot."""
        try:
            server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {_address(host, port)}: {_bind_problem(exc, host)}") \
                from None
        self = cls(server, Metrics(), asyncio.get_running_loop())
        self.metrics.at_stop(self.close)
        url = f"http://{_address(host, self.port)}"
        log.info("serving metrics on %s/metrics and probes on /healthz and /readyz%s", url,
                 "; other machines cannot reach it (set --metrics-host 0.0.0.0 to let them)"
                 if host in ("127.0.0.1", "localhost", "::1") else "")
        return self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def watch(self, runner: Runner, pool: AsyncConnectionPool, database: DatabaseSchema, *, concurrency: int,
              task_names: Sequence[str]) -> None:
        """The workers run: from now on the metrics describe them and count the jobs, and /readyz asks
        the database. ``runner`` closes the server when it stops."""
        self.metrics.describe_worker(database=database, worker_id=runner.worker_ids[0], concurrency=concurrency,
                                     task_names=task_names)
        self.metrics.count_jobs(pool, database, self._loop, task_names)
        self._runner = runner
        self._readiness = _Readiness(pool, database)

    async def close(self) -> None:
        """Stops listening and lets go of the probe's connection."""
        if self._closed:
            return
        self._closed = True
        self._heartbeat.cancel()
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        if self._readiness is not None:
            await self._readiness.close()

    async def _beat(self) -> None:
        while True:
            self._beat_at = time.monotonic()
            await asyncio.sleep(LOOP_BEAT_S)

    # --- what the server's threads ask ------------------------------------------------------------

    def liveness(self) -> tuple[int, str]:
        stalled = time.monotonic() - self._beat_at
        if stalled > LOOP_STALL_S:
            return 503, f"stuck: the event loop has not run for {stalled:.0f}s"
        return 200, "ok"

    def readiness(self) -> tuple[int, str]:
        if self._runner is not None and self._runner.stopping:
            return 503, "not ready: the worker is stopping"
        readiness = self._readiness
        if readiness is None:
            return 503, "not ready: the worker is starting (connecting to PostgreSQL, migrating)"
        try:
            asked = asyncio.run_coroutine_threadsafe(readiness.check(), self._loop)
        except RuntimeError:  # the loop is closed
            return 503, "not ready: the worker has stopped"
        try:
            problem = asked.result(timeout=READY_WAIT_S + 0.1)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            asked.cancel()
            return 503, "not ready: no answer within a second (the database, or the worker's event loop, is slow)"
        return (503, f"not ready: {problem}") if problem else (200, "ok")


class _Readiness:
    """Whether the database answers and holds the generation the workers run on, asked on a
    connection of its own: tasks may hold every pooled one, and that is no reason to be unready."""

    def __init__(self, pool: AsyncConnectionPool, database: DatabaseSchema) -> None:
        self._conninfo, self._kwargs = _connections.pool_conninfo(pool)
        self._database = database
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._answer: str | None = None
        self._answered_at = -READY_EVERY_S

    async def check(self) -> str | None:
        """None when ready, else why not (one line)."""
        async with self._lock:
            if time.monotonic() - self._answered_at >= READY_EVERY_S:
                try:
                    self._answer = await asyncio.wait_for(self._ask(), READY_WAIT_S)
                except asyncio.TimeoutError:
                    self._answer = f"PostgreSQL did not answer within {READY_WAIT_S:g}s"
                    await self.close()
                self._answered_at = time.monotonic()
            return self._answer

    async def _ask(self) -> str | None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await _connections.connect(self._conninfo, **self._kwargs)
            held = await held_by(self._conn, self._database.name)
        except (ConnectionFailed, MigrationError) as exc:
            await self.close()
            return str(exc)
        except psycopg.Error as exc:
            await self.close()
            return f"PostgreSQL does not answer ({mask_password(first_line(exc))})"
        if held.generation != self._database.generation:
            return (f"the database now holds the {held.generation} schema, and this worker runs on "
                    f"{self._database.generation}: restart it")
        return None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        monitor = self.server.monitor
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encode, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encode(monitor.metrics.registry), content_type)
            return
        if path == "/healthz":
            status, text = monitor.liveness()
        elif path == "/readyz":
            status, text = monitor.readiness()
        else:
            status, text = 404, "not found: kongtask serves /metrics, /healthz and /readyz"
        self._send(status, (text + "\n").encode(), _TEXT)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # http.server writes every request to stderr; the library's lines go through logging only.
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    monitor: MetricsServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a failed request's traceback to stderr; log it instead.
        log.exception("the metrics server failed to answer %s", client_address[0] if client_address else "a client")


class _Server6(_Server):
    address_family = socket.AF_INET6


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_problem(exc: OSError, host: str) -> str:
    if isinstance(exc, socket.gaierror):
        return f"{host!r} is not a host name or address this machine can resolve"
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use by another process; choose another metrics port, or stop that process"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); choose a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; use 0.0.0.0 for every interface, or 127.0.0.1"
    return exc.strerror or str(exc)
