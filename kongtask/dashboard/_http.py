"""The little of HTTP the dashboard needs, on plain ASGI: a request read from the scope, a response
sent with the headers every page carries. No framework: a dozen routes and one form type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The most a form may send: the dashboard's own forms send a few hundred bytes.
MAX_BODY = 16 * 1024

#: Sent with every response. Scripts and styles only from the dashboard itself (no inline code,
#: so an injected tag could not run even if escaping failed); forms post only to it; no framing.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Not no-referrer: with it a browser sends "Origin: null" on POST, which the CSRF check refuses.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class BadRequest(Exception):
    """The request cannot be read: a 400 whose message is one line."""


@dataclass
class Request:
    method: str
    path: str  # below the app's root path
    root: str  # where the app is mounted ("" at the top)
    query: dict[str, str]
    headers: dict[str, str]
    scheme: str
    form: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        root = str(scope.get("root_path") or "").rstrip("/")
        path = str(scope.get("path") or "/")
        if root and path.startswith(root + "/"):
            path = path[len(root):]
        try:
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            query = _pairs(scope.get("query_string", b"").decode("latin-1"))
        except UnicodeDecodeError:
            raise BadRequest("the request's address is not valid UTF-8") from None
        return cls(str(scope["method"]).upper(), path, root, query, headers, str(scope.get("scheme") or "http"))

    async def read_form(self, receive: Receive) -> None:
        if self.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise BadRequest("a form must be sent as application/x-www-form-urlencoded")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client went away")
            body.extend(message.get("body", b""))
            if len(body) > MAX_BODY:
                raise BadRequest(f"a form of more than {MAX_BODY} bytes")
            if not message.get("more_body", False):
                break
        try:
            self.form = _pairs(body.decode("ascii"))
        except UnicodeDecodeError:
            raise BadRequest("the form is not URL-encoded") from None


def _pairs(text: str) -> dict[str, str]:
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=50))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the query or form is not valid UTF-8, or has too many fields") from None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("latin-1")),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def redirect(location: str) -> Response:
    """After a POST: see the result with a GET (303), so reloading never repeats the action."""
    return Response(303, headers=[(b"location", location.encode("utf-8"))])
