"""Jobs written as JSON lines (``kongtask add-jobs``): one object per line becomes a :class:`JobSpec`.

The keys are those of ``kongtask add-job``: ``task``, ``payload``, ``queue``, ``run_at``,
``max_attempts``, ``priority``, ``job_key`` and ``flags`` (an array of strings).
A line that cannot be a job raises :class:`JobLineError` naming its number, what
is wrong and how to write it; the job's own values are checked later, by the same checks as every job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._job import JobSpec
from .settings import parse_timestamp

#: The keys a line may hold, as ``kongtask add-job`` names them, and the JobSpec field of each.
KEYS = {"task": "identifier", "payload": "payload", "queue": "queue_name", "run_at": "run_at",
        "max_attempts": "max_attempts", "priority": "priority", "job_key": "job_key", "flags": "flags"}

EXAMPLE = '{"task": "send_email", "payload": {"to": "a@example.com"}, "queue": "mail"}'


class JobLineError(ValueError):
    """A line that is not a job; the message starts with ``line N:``."""


@dataclass(frozen=True)
class JobLines:
    """The jobs of a file, and the line each came from (blank lines hold none)."""

    specs: list[JobSpec]
    line_numbers: list[int]

    def name_of(self, index: int) -> str:
        return f"line {self.line_numbers[index]}"


def read_job_lines(lines: Iterable[bytes]) -> JobLines:
    """The jobs of ``lines`` (UTF-8, one JSON object each; blank lines skipped)."""
    specs: list[JobSpec] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # the byte order mark Windows editors write
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobLineError(
                f"line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                "save the file as UTF-8"
            ) from None
        if not text.strip():
            continue
        try:
            specs.append(_job(text))
        except ValueError as exc:
            raise JobLineError(f"line {number}: {exc}") from None
        numbers.append(number)
    return JobLines(specs, numbers)


def _job(text: str) -> JobSpec:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}; write one object per line, "
                         f"such as {EXAMPLE}") from None
    except RecursionError:
        raise ValueError("nested too deeply for Python to read; flatten the payload") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {_json_type(value)}; write one object per line, "
                         f"such as {EXAMPLE}")
    unknown = [key for key in value if key not in KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}")
    if "task" not in value:
        raise ValueError(f'no "task"; every job names its task, such as {EXAMPLE}')
    fields: dict[str, Any] = {KEYS[key]: item for key, item in value.items()}
    queue = value.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise ValueError(f'"queue" must be a string, got {_json_type(queue)}')
    run_at = value.get("run_at")
    if run_at is not None:
        if not isinstance(run_at, str):
            raise ValueError(f'"run_at" must be an ISO 8601 string such as "2030-01-31T09:00:00+00:00", '
                             f"got {_json_type(run_at)}")
        try:
            fields["run_at"] = parse_timestamp(run_at)
        except ValueError as exc:
            raise ValueError(f'"run_at": {exc}') from None
    return JobSpec(**fields)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(type(value), "a number")
