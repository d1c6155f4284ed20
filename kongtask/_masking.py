"""Passwords never reach a log line or an error message: :func:`mask_password`."""

from __future__ import annotations

import re
from collections.abc import Iterator

# Masking runs on every log line, in the event loop's thread, so its cost must stay linear in the
# text whatever the text holds. It looks only where a secret can start (after "//" or ":/" and a
# user name, or after "password="), and every pattern either has bounded repetition or consumes
# what it scans, so each character is examined a bounded number of times.

#: Text beyond this many characters is not shown: a log line that long is not read, only stored.
MASK_SCAN_LIMIT = 1_000_000
#: How far after "user:" a URL's "@" may be: the password may hold unencoded "@", "/" or spaces.
_URL_SECRET_MAX = 2048

# "scheme://user:", also malformed as "scheme//user:", "scheme:/user:" or "scheme:///user:".
_URL_USER = re.compile(r"(?::/{1,3}|/{2,3})[^\s:/?#@]{0,256}:")
_SPACE = re.compile(r"\s")
_WORD_WITH_AT = re.compile(r"\s+[^\s@]*@")
# "password=", "PGPASSWORD = ", "sslpassword=" ...
_PASSWORD_KEY = re.compile(r"password\s{0,32}=\s{0,32}", re.IGNORECASE)
# A quoted value runs to its closing quote, else to the end of the line; a bare one to a space.
# A value masked already stays "***", so masking a masked text again changes nothing.
_PASSWORD_VALUE = re.compile(r"""\*\*\*(?=['"\s]|$)|'[^'\\\n]*(?:\\.[^'\\\n]*)*'?|"[^"\\\n]*(?:\\.[^"\\\n]*)*"?|\S+""")


def mask_password(text: str) -> str:
    """``text`` with whatever looks like a password in a connection string replaced by ``***``.

    Also in strings that do not parse: ``user:secret@host`` after something URL-like (the secret
    may hold spaces or "@") and ``password=`` values. Beyond :data:`MASK_SCAN_LIMIT` characters
    the text is cut, with a note saying how much.
    """
    limit = min(len(text), MASK_SCAN_LIMIT)
    spans = secret_spans(text, limit)
    if not spans and limit == len(text):
        return text
    pieces: list[str] = []
    shown = 0
    for start, end in spans:
        if start < shown:  # overlaps a secret already masked
            shown = max(shown, end)
            continue
        pieces += (text[shown:start], "***")
        shown = end
    cut = max(limit, shown)
    pieces.append(text[shown:cut])
    if cut < len(text):
        pieces.append(f" [... {len(text) - cut} more characters not shown]")
    return "".join(pieces)


def secret_spans(text: str, limit: int) -> list[tuple[int, int]]:
    """Where the secrets starting before ``limit`` are, in order; they may overlap."""
    return sorted([*_url_secrets(text, limit), *_keyword_secrets(text, limit)])


def _url_secrets(text: str, limit: int) -> Iterator[tuple[int, int]]:
    """The spans from after ``user:`` to the "@" before the host.

    A password may hold unencoded "@" and spaces, so the secret runs to the last "@" of the first
    word after it that holds one, and on through each next word that holds an "@" ("u:p w@h/db",
    "u:p@ss@h/db", "u:p@ss w@h/db"), on the same line and within :data:`_URL_SECRET_MAX`
    characters.
    """
    end = len(text)
    # Caches: no scan below re-reads text an earlier one has passed.
    next_at = next_newline = -1
    pos = 0
    while pos < limit:
        head = _URL_USER.search(text, pos, limit + 262)
        if head is None or head.start() >= limit:
            return
        start = head.end()
        if next_at < start:
            next_at = text.find("@", start)
            if next_at < 0:
                return
        if next_newline < start:
            next_newline = text.find("\n", start)
            if next_newline < 0:
                next_newline = end
        window_end = min(next_newline, start + _URL_SECRET_MAX)
        if next_at >= window_end:
            pos = start - 1  # that ":" may begin the next "://"
            continue
        at = next_at
        while True:
            space = _SPACE.search(text, at, window_end)
            at = text.rfind("@", at, window_end if space is None else space.start())
            more = None if space is None else _WORD_WITH_AT.match(text, space.start(), window_end)
            if more is None:
                break
            at = more.end() - 1
        yield start, at
        pos = at


def _keyword_secrets(text: str, limit: int) -> Iterator[tuple[int, int]]:
    """The spans of the values of ``password=`` pairs."""
    pos = 0
    while pos < limit:
        key = _PASSWORD_KEY.search(text, pos, limit + 80)
        if key is None or key.start() >= limit:
            return
        value = _PASSWORD_VALUE.match(text, key.end())
        if value is None or value.end() == value.start():
            pos = key.end()
            continue
        yield value.start(), value.end()
        pos = value.end()
