"""Serving the dashboard with uvicorn on a socket we bind ourselves, so the address it really
listens on (``--port 0`` picks a free one) is known and a port in use is one readable line."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

import uvicorn

from ..errors import ConfigurationError
from ._app import Dashboard


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGINT, SIGTERM and SIGHUP stop it gracefully and the command exits 0, as a worker does;
        # uvicorn's own handlers would raise the signal again once it has stopped.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line :class:`ConfigurationError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {host}: {exc.strerror} (check --host)") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def serve(dashboard: Dashboard, sock: socket.socket, *, access_log: bool = False) -> None:
    """Serves ``dashboard`` on ``sock`` (see :func:`listen`) until SIGINT, SIGTERM or SIGHUP."""
    config = uvicorn.Config(
        dashboard, lifespan="on", log_config=None, access_log=access_log, server_header=False,
        proxy_headers=False, timeout_graceful_shutdown=5,
    )
    await _Server(config).serve(sockets=[sock])
