"""Helpers the dashboard's tests share: requests straight to the ASGI app, jobs in every state on
either schema, and the dashboard served by uvicorn in a thread (for the browser)."""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import psycopg
import uvicorn

import kongtask
from kongtask.dashboard import Dashboard, listen, url_of


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


class AsgiClient:
    """Sends requests to the app as uvicorn would, without a socket: one event loop, one process."""

    def __init__(self, app: Dashboard, host: str = "127.0.0.1:8000", auth: str | None = None, root: str = "") -> None:
        self.app = app
        self.host = host
        self.auth = auth
        self.root = root  # where the app is mounted: paths are given below it

    async def request(
        self, method: str, path: str, query: str = "", form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent_headers = {"host": self.host} | ({"authorization": self.auth} if self.auth else {}) | (headers or {})
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            sent_headers.setdefault("content-type", "application/x-www-form-urlencoded")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": self.root + path, "raw_path": (self.root + path).encode(), "query_string": query.encode(),
            "root_path": self.root,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sent_headers.items()],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        }
        reply = Reply(0, {}, "")
        chunks: list[bytes] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                reply.status = message["status"]
                reply.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        reply.body = b"".join(chunks).decode()
        return reply

    async def get(self, path: str, query: str = "", **headers: str) -> Reply:
        return await self.request("GET", path, query, headers=headers)

    async def confirm(self, path: str, query: str = "", **headers: str) -> Reply:
        """GETs an action's confirmation page, then POSTs its form as the browser would."""
        page = await self.get(path, query)
        assert page.status == 200, page.body
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.body))
        return await self.request("POST", path, form={k: _unescape(v) for k, v in form.items()},
                                  headers={"origin": f"http://{self.host}", **headers})


def _unescape(text: str) -> str:
    return text.replace("&#34;", '"').replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def modern(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return bool(conn.execute("select to_regclass('graphile_worker._private_jobs') is not null").fetchone()[0])  # type: ignore[index]


async def fail_jobs(url: str, task: str, message: str) -> None:
    """Runs every due job of ``task`` once, failing it with ``message``."""

    def failing(payload: Any, helpers: Any) -> None:
        raise RuntimeError(message)

    await kongtask.run_once(task_list={task: failing}, connection_string=url)


def lock_queue(url: str, queue: str, worker: str) -> None:
    """``queue`` held by ``worker``, as a running job of it leaves it (its first job too, on 0.18)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if modern(url):
            conn.execute("update graphile_worker._private_job_queues set locked_by = %s, locked_at = now()"
                         " where queue_name = %s", (worker, queue))
            conn.execute("update graphile_worker._private_jobs set locked_by = %s, locked_at = now(), attempts = 1"
                         " where id = (select min(j.id) from graphile_worker._private_jobs as j"
                         " join graphile_worker._private_job_queues as q on q.id = j.job_queue_id"
                         " where q.queue_name = %s)", (worker, queue))
        else:
            conn.execute("update graphile_worker.job_queues set locked_by = %s, locked_at = now() where queue_name = %s",
                         (worker, queue))


class ServedDashboard:
    """The dashboard on a real socket, served by uvicorn on a thread of its own."""

    def __init__(self, app: Dashboard) -> None:
        self.app = app
        self._sock = listen("127.0.0.1", 0)
        self.url = url_of(self._sock)
        self._server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, access_log=False))
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])),
                                        daemon=True)

    def __enter__(self) -> ServedDashboard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(20)
        self._sock.close()
