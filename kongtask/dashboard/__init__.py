"""``kongtask dashboard``: a small web app to watch the queue and look after its jobs.

An overview (jobs by state, per task and per named queue; failures and throughput over the last
hour; who holds which locks), a job list with filters and keyset paging, a page per job, and the
actions of :mod:`kongtask.admin` (retry, delete, reschedule, change priority, unlock a dead
worker's queues) behind confirmations. Server-rendered HTML on plain ASGI, with a few lines of
script that refresh the page in place; on both schema generations.

Needs ``pip install 'kongtask[dashboard]'`` (uvicorn and Jinja2). :class:`Dashboard` is an ASGI
application, so it can also be mounted in another ASGI app or served by another server.
"""

from __future__ import annotations

from ._app import Dashboard
from ._security import MIN_TOKEN_LENGTH, check_binding, is_loopback
from ._serve import listen, serve, url_of

__all__ = ["MIN_TOKEN_LENGTH", "Dashboard", "check_binding", "is_loopback", "listen", "serve", "url_of"]
