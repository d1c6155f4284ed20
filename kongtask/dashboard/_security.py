"""Who may use the dashboard, and which requests it believes: pure functions, no I/O.

- **Binding**: anything but a loopback address needs a token (:func:`check_binding`).
- **Authentication**: the token, sent as HTTP Basic auth's password (any user name; browsers ask
  for it themselves) or as ``Authorization: Bearer TOKEN`` (:func:`authorized`).
- **CSRF**: every form carries a token derived from a per-process secret and the form's own
  action (:func:`form_token`), and a POST whose ``Origin`` or ``Sec-Fetch-Site`` says it came from
  another site is refused (:func:`same_origin`).
- **DNS rebinding**: served on loopback without a token, only loopback host names are answered
  (:func:`host_allowed`), so a web page whose name was pointed at 127.0.0.1 cannot read it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

from ..errors import ConfigurationError

#: A token shorter than this is refused: it guards deleting jobs from the network.
MIN_TOKEN_LENGTH = 16

_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuses, in one line, a token too short to guard anything, and a dashboard reachable from
    other machines without one."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"the dashboard token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH}, such as the "
            "output of `python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"the dashboard listens on {host}, beyond this machine, so it needs a token: pass --token "
            "(or set KONGTASK_DASHBOARD_TOKEN), or listen on 127.0.0.1"
        )


def authorized(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (always true when there is none to ask)."""
    if token is None:
        return True
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    given: str | None = None
    if scheme.lower() == "bearer":
        given = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def form_token(secret: bytes, action: str) -> str:
    """The CSRF token of the form that posts to ``action`` (a path): valid for that action only."""
    return hmac.new(secret, action.encode("utf-8"), hashlib.sha256).hexdigest()


def form_token_ok(secret: bytes, action: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(form_token(secret, action), given)


def same_origin(headers: Mapping[str, str], scheme: str) -> bool:
    """Whether a POST came from the dashboard's own pages, as far as the browser says.

    A browser sends ``Origin`` with every POST and ``Sec-Fetch-Site`` with most; a request that
    sends neither (curl, a script with the token) is judged by its form token alone.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin == f"{scheme}://{headers.get('host', '')}"


def host_allowed(host_header: str | None, loopback_only: bool) -> bool:
    """Whether to answer a request for ``Host: host_header``."""
    if not loopback_only:
        return True
    if not host_header:
        return False
    # "[::1]:8000", "127.0.0.1:8000", "localhost"
    name = host_header.partition("]")[0] + "]" if host_header.startswith("[") else host_header.rsplit(":", 1)[0]
    return is_loopback(name)
