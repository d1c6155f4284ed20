"""Cron items and the crontab file: which task is added at which minute, read as graphile-worker
0.18 reads it. Pure: no database and no clock here (the scheduler is ``kongtask._cron_scheduler``).

A crontab line is ``minute hour day-of-month month day-of-week task ?options {payload}``, in UTC::

    # every fourth hour on the hour; after downtime, catch up on the last day's missed runs
    0 */4 * * * rebuild_index ?fill=1d&max=3 {full: true}

- Each of the five fields is a comma-separated list of numbers (``5``), ranges (``1-5``) and
  wildcards (``*`` or ``*/15``). Day of week 0 or 7 is Sunday. As in cron, when both the day of the
  month and the day of the week are restricted, a day matching either one is due.
- Options (a query string): ``id`` (the item's identity, default the task name), ``fill`` (how far
  back to catch up after downtime, such as ``4w3d2h1m``), ``max`` (max_attempts), ``queue``,
  ``jobKey``, ``jobKeyMode`` (``replace`` or ``preserve_run_at``) and ``priority``.
- The payload is a JSON5 object; each job's payload also gets ``_cron: {ts, backfilled}``.

Blank lines and lines starting with ``#`` are skipped. A line that cannot be read is one
:class:`~kongtask.errors.CrontabError` naming the file and line (``crontab:3: ...``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from .errors import CrontabError

__all__ = ["CronItem", "CronJobKeyMode", "CronPattern", "load_crontab", "parse_crontab", "parse_time_phrase"]

#: What adding a cron job whose ``job_key`` a waiting job has does (the modes a crontab accepts).
CronJobKeyMode = Literal["replace", "preserve_run_at"]

# --- the time fields ----------------------------------------------------------------------------

_FIELD = r"([0-9*/,-]+)"
_TIME = re.compile(rf"{_FIELD}\s+{_FIELD}\s+{_FIELD}\s+{_FIELD}\s+{_FIELD}")
_LINE = re.compile(rf"{_FIELD}\s+{_FIELD}\s+{_FIELD}\s+{_FIELD}\s+{_FIELD}\s+(.*)")
_NUMBER = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")
_WILDCARD = re.compile(r"\*(?:/([0-9]+))?")

#: The five fields: their names in messages, and their lowest and highest values.
_FIELDS = (("minutes", 0, 59), ("hours", 0, 23), ("days of the month", 1, 31), ("months", 1, 12),
           ("days of the week", 0, 6))


def _parse_field(text: str, name: str, low: int, high: int) -> tuple[int, ...]:
    """One field's values, sorted and unique; ValueError says what is wrong with it."""
    wrap = name == "days of the week"  # 7 is Sunday too
    values: set[int] = set()

    def add(number: int) -> None:
        value = low if wrap and number == high + 1 else number
        if value > high:
            raise ValueError(f"too large value '{number}' in {name}: expected values in the range {low}-{high}")
        if value < low:
            raise ValueError(f"too small value '{number}' in {name}: expected values in the range {low}-{high}")
        values.add(value)

    for part in text.split(","):
        if _NUMBER.fullmatch(part):
            add(int(part))
        elif found := _RANGE.fullmatch(part):
            start, end = int(found[1]), int(found[2])
            if end <= start:
                raise ValueError(f"invalid range '{part}' in {name}: the end must be larger than the start")
            for number in range(start, end + 1):
                add(number)
        elif found := _WILDCARD.fullmatch(part):
            step = int(found[1]) if found[1] else 1
            if step < 1:
                raise ValueError(f"invalid wildcard '{part}' in {name}: the divisor must be greater than zero")
            values.update(range(low, high + 1, step))
        else:
            raise ValueError(f"unsupported syntax '{part}' in {name}: not a number, range (a-b) or wildcard (*, */n)")
    return tuple(sorted(values))


@dataclass(frozen=True)
class CronPattern:
    """The UTC minutes a cron item is due: the values each of its five fields matches.

    ``dows`` are days of the week, 0 (Sunday) to 6. As in cron, when both ``dates`` and ``dows``
    are restricted (fewer than all 31 and 7 values), a day that matches either is due.
    """

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    dates: tuple[int, ...]
    months: tuple[int, ...]
    dows: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> CronPattern:
        """``minute hour day-of-month month day-of-week``; ValueError says what is wrong."""
        found = _TIME.fullmatch(text)
        if not found:
            raise ValueError(f"invalid cron pattern '{text}': expected five fields, "
                             "minute hour day-of-month month day-of-week, such as '0 4 * * *'")
        return cls._of(found.groups())

    @classmethod
    def _of(cls, fields: tuple[str, ...] | list[str]) -> CronPattern:
        values = [_parse_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
        return cls(*values)

    def _day_matches(self, date: int, dow: int) -> bool:
        restricts_date, restricts_dow = len(self.dates) != 31, len(self.dows) != 7
        if restricts_date and restricts_dow:
            return date in self.dates or dow in self.dows
        if restricts_date:
            return date in self.dates
        if restricts_dow:
            return dow in self.dows
        return True

    def matches(self, moment: datetime) -> bool:
        """Whether the UTC minute of ``moment`` (an aware datetime) is due."""
        utc = moment.astimezone(timezone.utc)
        return (utc.minute in self.minutes and utc.hour in self.hours and utc.month in self.months
                and self._day_matches(utc.day, utc.isoweekday() % 7))

    def next_runs(self, after: datetime, count: int, within: timedelta = timedelta(days=8 * 366)) -> list[datetime]:
        """The next ``count`` due minutes from ``after`` on (itself included when on a due minute),
        in UTC, looking no further than ``within`` (some patterns, such as 30 February, are never due)."""
        start = after.astimezone(timezone.utc)
        first = start.replace(second=0, microsecond=0)
        if first < start:
            first += timedelta(minutes=1)
        found: list[datetime] = []
        day = first.replace(hour=0, minute=0)
        while len(found) < count and day <= first + within:
            if day.month in self.months and self._day_matches(day.day, day.isoweekday() % 7):
                for hour in self.hours:
                    for minute in self.minutes:
                        moment = day.replace(hour=hour, minute=minute)
                        if moment >= first and len(found) < count:
                            found.append(moment)
            day += timedelta(days=1)
        return found


# --- time phrases (fill=) -----------------------------------------------------------------------

_PHRASE = re.compile(r"(?:[0-9]+[smhdw])+")
_PHRASE_PART = re.compile(r"([0-9]+)([smhdw])")
_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1),
          "s": timedelta(seconds=1)}


def parse_time_phrase(text: str) -> timedelta:
    """``4w3d2h1m`` (weeks, days, hours, minutes, seconds, each optional, in any order) as a duration."""
    if not _PHRASE.fullmatch(text):
        raise ValueError(f"invalid time phrase '{text}': write it as numbers with units s, m, h, d or w, "
                         "such as 1d or 4h30m")
    return sum((int(n) * _UNITS[unit] for n, unit in _PHRASE_PART.findall(text)), timedelta(0))


def time_phrase(duration: timedelta) -> str:
    """``duration`` written as a time phrase (``1d``, ``4h30m``), the way a crontab says it."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit, size in _UNITS.items():
        amount, seconds = divmod(seconds, int(size.total_seconds()))
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


# --- one item ------------------------------------------------------------------------------------

#: The limits the 0.18 schema puts on a job (its columns are smallints; names are checked by add_job).
_SMALLINT = (-(2**15), 2**15 - 1)
_MAX_NAME = 128
_MAX_JOB_KEY = 512


def _item_problem(task: Any, identifier: Any, payload: Any, fill: Any, max_attempts: Any, queue_name: Any,
                  priority: Any, job_key: Any, job_key_mode: Any) -> str | None:
    """What is wrong with a cron item's values, in a few words, or None."""
    if not isinstance(task, str) or not task or len(task) > _MAX_NAME:
        return f"the task must be a name of 1 to {_MAX_NAME} characters, got {task!r}"
    if not isinstance(identifier, str) or not identifier:
        return f"the identifier must be a non-empty string, got {identifier!r}"
    if payload is not None:
        if not isinstance(payload, Mapping):
            return f"the payload must be an object (a mapping), got {type(payload).__name__}"
        try:
            json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            return f"the payload cannot be sent as JSON ({exc})"
    if not isinstance(fill, timedelta) or fill < timedelta(0):
        return f"fill must be a duration of zero or more, got {fill!r}"
    if max_attempts is not None and (isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
                                     or not 1 <= max_attempts <= _SMALLINT[1]):
        return f"max attempts must be a whole number from 1 to {_SMALLINT[1]}, got {max_attempts!r}"
    if queue_name is not None and (not isinstance(queue_name, str) or not 1 <= len(queue_name) <= _MAX_NAME):
        return f"the queue name must have 1 to {_MAX_NAME} characters, got {queue_name!r}"
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not _SMALLINT[0] <= priority <= _SMALLINT[1]):
        return f"the priority must be a whole number from {_SMALLINT[0]} to {_SMALLINT[1]}, got {priority!r}"
    if job_key is not None and (not isinstance(job_key, str) or not 1 <= len(job_key) <= _MAX_JOB_KEY):
        return f"the job key must have 1 to {_MAX_JOB_KEY} characters, got {job_key!r}"
    if job_key_mode is not None and job_key_mode not in ("replace", "preserve_run_at"):
        return f"the job key mode must be replace or preserve_run_at, got {job_key_mode!r}"
    return None


@dataclass(frozen=True, kw_only=True)
class CronItem:
    """A recurring job: ``task`` is added at every UTC minute that ``match`` names. Built by keyword::

        CronItem(task="rebuild_index", match="0 */4 * * *", fill=timedelta(days=1))

    - ``match``: the five cron fields, ``"0 4 * * *"``;
    - ``identifier``: the item's identity among every worker's items (default: the task name).
      Workers that share a database add each due minute's job once per identifier;
    - ``payload``: a mapping; each job's payload is it plus ``_cron: {"ts": ..., "backfilled": ...}``;
    - ``fill``: after downtime, minutes up to this long ago that were missed are added late
      (marked ``backfilled``); never minutes before any worker first knew the identifier;
    - ``max_attempts``, ``queue_name``, ``priority``, ``job_key`` and ``job_key_mode``: the job's
      options (see :class:`kongtask.JobOptions`); with a ``job_key``, the mode defaults to ``replace``.

    Bad values raise :class:`~kongtask.errors.CrontabError`.
    """

    task: str
    match: str
    identifier: str = ""
    payload: Mapping[str, Any] | None = field(default=None, hash=False)
    fill: timedelta = timedelta(0)
    max_attempts: int | None = None
    queue_name: str | None = None
    priority: int | None = None
    job_key: str | None = None
    job_key_mode: CronJobKeyMode | None = None
    pattern: CronPattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.identifier == "" and isinstance(self.task, str):
            object.__setattr__(self, "identifier", self.task)
        if self.job_key is not None and self.job_key_mode is None:
            object.__setattr__(self, "job_key_mode", "replace")
        problem = _item_problem(self.task, self.identifier, self.payload, self.fill, self.max_attempts,
                                self.queue_name, self.priority, self.job_key, self.job_key_mode)
        try:
            if problem is not None:
                raise ValueError(problem)
            if not isinstance(self.match, str):
                raise ValueError(f"match must be a cron pattern such as '0 4 * * *', got {self.match!r}")
            object.__setattr__(self, "pattern", CronPattern.parse(self.match))
        except ValueError as exc:
            raise CrontabError(f"cron item {self.identifier or self.task!r}: {exc}") from None

    def matches(self, moment: datetime) -> bool:
        """Whether the item is due at the UTC minute of ``moment``."""
        return self.pattern.matches(moment)

    def next_runs(self, after: datetime, count: int = 3) -> list[datetime]:
        """The next ``count`` minutes the item is due, from ``after`` on (see :meth:`CronPattern.next_runs`)."""
        return self.pattern.next_runs(after, count)

    @property
    def options(self) -> str:
        """The item's options as a crontab writes them (``id=x&fill=1d``), or ``""``."""
        given = [
            ("id", self.identifier if self.identifier != self.task else None),
            ("fill", time_phrase(self.fill) if self.fill else None),
            ("max", self.max_attempts), ("queue", self.queue_name), ("jobKey", self.job_key),
            ("jobKeyMode", self.job_key_mode if self.job_key is not None else None), ("priority", self.priority),
        ]
        return "&".join(f"{key}={value}" for key, value in given if value is not None)


# --- the crontab file ----------------------------------------------------------------------------

_COMMAND = re.compile(r"([_a-zA-Z][_a-zA-Z0-9:/_-]*)(?:\s+\?([^\s]+))?(?:\s+(\{.*\}))?")
#: Each option's accepted values (upstream's), and the item field it sets.
_OPTIONS: dict[str, tuple[re.Pattern[str], str]] = {
    "id": (re.compile(r"[_a-zA-Z][-_a-zA-Z0-9]*"), "identifier"),
    "fill": (_PHRASE, "fill"),
    "max": (re.compile(r"[0-9]+"), "max_attempts"),
    "queue": (re.compile(r"[-a-zA-Z0-9_:]+"), "queue_name"),
    "jobKey": (re.compile(r".*"), "job_key"),
    "jobKeyMode": (re.compile(r"replace|preserve_run_at"), "job_key_mode"),
    "priority": (re.compile(r"-?[0-9]+"), "priority"),
}
_LINE_BREAK = re.compile(r"\r?\n")


def _parse_options(text: str | None) -> dict[str, Any]:
    """``id=x&fill=1d`` as CronItem arguments; ValueError says what is wrong."""
    found: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in parse_qsl(text or "", keep_blank_values=True):
        if key in seen:
            raise ValueError(f"option '{key}' is given more than once")
        seen.add(key)
        if key not in _OPTIONS:
            raise ValueError(f"unsupported option '{key}'; the options are: {', '.join(_OPTIONS)}")
        accepted, name = _OPTIONS[key]
        if not accepted.fullmatch(value):
            raise ValueError(f"invalid value '{value}' for option '{key}'")
        if name == "fill":
            found[name] = parse_time_phrase(value)
        elif name in ("max_attempts", "priority"):
            found[name] = int(value)
        else:
            found[name] = value
    return found


def _parse_payload(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    import json5  # only for a crontab that has a payload

    try:
        payload = json5.loads(text)
    except ValueError as exc:
        said = re.sub(r"^<string>:\d+\s*", "", str(exc))
        raise ValueError(f"the payload is not valid JSON5: {said}") from None
    except RecursionError:
        raise ValueError("the payload is nested too deeply to read") from None
    if not isinstance(payload, dict):
        raise ValueError(f"the payload must be an object, got {type(payload).__name__}")
    return payload


def _parse_line(line: str) -> CronItem:
    """One line that is not blank or a comment; ValueError says what is wrong with it."""
    found = _LINE.fullmatch(line)
    if not found:
        raise ValueError(f"expected 'minute hour day-of-month month day-of-week task', then optionally "
                         f"?options and a {{payload}}; got '{line}'")
    fields = found.groups()[:5]
    CronPattern._of(fields)  # the fields first, as upstream reports them
    command = _COMMAND.fullmatch(found[6])
    if not command:
        raise ValueError(f"invalid command '{found[6]}': expected a task name (letters, digits, _ - : /), then "
                         "optionally ?options (no spaces) and a {payload}")
    task, options_text, payload_text = command.groups()
    options = _parse_options(options_text)
    payload = _parse_payload(payload_text)
    arguments = {"task": task, "identifier": task, "payload": payload, **options}
    problem = _item_problem(**{"fill": timedelta(0), "max_attempts": None, "queue_name": None, "priority": None,
                               "job_key": None, "job_key_mode": None, **arguments})
    if problem is not None:
        raise ValueError(problem)
    return CronItem(match=" ".join(fields), **arguments)


def parse_crontab(text: str, source: str = "crontab") -> list[CronItem]:
    """The items of a crontab's text; ``source`` names it in errors (``crontab:3: ...``).

    Raises :class:`~kongtask.errors.CrontabError` for the first line that cannot be read, and for
    two items with one identifier.
    """
    items: list[CronItem] = []
    line_of: dict[str, int] = {}
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        line = raw.strip().lstrip("\ufeff").strip()
        if not line or line.startswith("#"):
            continue
        try:
            item = _parse_line(line)
        except ValueError as exc:
            raise CrontabError(f"{source}:{number}: {exc}") from None
        if item.identifier in line_of:
            raise CrontabError(
                f"{source}:{number}: the identifier '{item.identifier}' is also on line {line_of[item.identifier]}; "
                "give one of them another with ?id=..."
            )
        line_of[item.identifier] = number
        items.append(item)
    return items


def load_crontab(path: str | Path, source: str | None = None) -> list[CronItem]:
    """The items of the crontab file at ``path`` (see :func:`parse_crontab`); errors name ``source``
    (default: the path as given)."""
    where = str(path) if source is None else source
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CrontabError(f"crontab file {where} does not exist") from None
    except IsADirectoryError:
        raise CrontabError(f"crontab {where} is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise CrontabError(f"crontab file {where} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise CrontabError(f"cannot read crontab file {where}: {exc.strerror}") from None
    return parse_crontab(text, where)
