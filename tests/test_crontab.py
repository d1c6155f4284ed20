"""Reading a crontab: a port of upstream graphile-worker 0.18's ``__tests__/crontab.test.ts`` (and its
snapshot), then what kongtask adds: errors name the file and line, and values a job cannot hold are
refused when the crontab is read rather than every minute after.

Upstream's tests are read at its main branch (0.17.3 plus the 0.18 changes), checked against the
graphile-worker@0.18.0 npm package's ``dist/crontab.js`` and ``dist/cronMatcher.js``. Each ported
test names its twin. Error messages are kongtask's own words (``crontab:1: ...``), so the ports check
the facts upstream's messages give (the value, the field, the range, the key) rather than the text.
No database here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import kongtask
from kongtask.crontab import CronItem, load_crontab, parse_crontab, parse_time_phrase, time_phrase

ALL_MINUTES = tuple(range(60))
ALL_HOURS = tuple(range(24))
ALL_DATES = tuple(range(1, 32))
ALL_MONTHS = tuple(range(1, 13))
ALL_DOWS = (0, 1, 2, 3, 4, 5, 6)

MINUTE = timedelta(minutes=1)
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY

EXAMPLE_CRONTAB = """\
# ┌───────────── UTC minute (0 - 59)
# │ ┌───────────── UTC hour (0 - 23)
# │ │ ┌───────────── UTC day of the month (1 - 31)
# │ │ │ ┌───────────── UTC month (1 - 12)
# │ │ │ │ ┌───────────── UTC day of the week (0 - 6) (Sunday to Saturday)
# │ │ │ │ │ ┌───────────── task (identifier) to schedule
# │ │ │ │ │ │    ┌────────── optional scheduling options
# │ │ │ │ │ │    │     ┌────── optional payload to merge
# │ │ │ │ │ │    │     │
# │ │ │ │ │ │    │     │
# * * * * * task ?opts {payload}

* * * * * simple
0 4 * * * every_day_at_4_am
0 4 * * 0 every_sunday_at_4_am
0 4 * * 7 every_sunday_at_4_am ?id=sunday_7




0 4 * * 2 every_tuesday_at_4_am {isTuesday: true}
*/10,7,56-59 1 1 1 1 one ?id=stuff&fill=4w3d2h1m&max=3&queue=my_queue&priority=3 {myExtraPayload:{stuff:"here with # hash char"}}
    *     *      *       *       *      lots_of_spaces     
* * * * * with_key ?jobKey=my_key
* * * * * with_key_and_mode ?jobKey=my_key&jobKeyMode=preserve_run_at
* * * * * nested/task ?jobKey=my_key&jobKeyMode=preserve_run_at
* * * * * nested/folder/task ?jobKey=my_key&jobKeyMode=preserve_run_at
"""


def _options(item: CronItem) -> dict[str, object]:
    """The job options of an item, as upstream's snapshot lists them (None for undefined)."""
    return {"fill": item.fill, "job_key": item.job_key, "job_key_mode": item.job_key_mode,
            "max_attempts": item.max_attempts, "priority": item.priority, "queue_name": item.queue_name}


NO_OPTIONS = {"fill": timedelta(0), "job_key": None, "job_key_mode": None, "max_attempts": None, "priority": None,
              "queue_name": None}


# --- crontab.test.ts: "parses crontab file correctly" (with its snapshot) ------------------------


def test_parses_crontab_file_correctly() -> None:
    parsed = parse_crontab(EXAMPLE_CRONTAB)
    assert len(parsed) == 11

    every_minute = (ALL_MINUTES, ALL_HOURS, ALL_DATES, ALL_MONTHS, ALL_DOWS)

    def fields(item: CronItem) -> tuple[tuple[int, ...], ...]:
        p = item.pattern
        return p.minutes, p.hours, p.dates, p.months, p.dows

    assert (parsed[0].task, parsed[0].identifier) == ("simple", "simple")
    assert fields(parsed[0]) == every_minute
    assert _options(parsed[0]) == NO_OPTIONS
    assert parsed[0].payload is None

    assert (parsed[1].task, parsed[1].identifier) == ("every_day_at_4_am", "every_day_at_4_am")
    assert fields(parsed[1]) == ((0,), (4,), ALL_DATES, ALL_MONTHS, ALL_DOWS)
    assert _options(parsed[1]) == NO_OPTIONS
    assert parsed[1].payload is None

    assert (parsed[2].task, parsed[2].identifier) == ("every_sunday_at_4_am", "every_sunday_at_4_am")
    assert fields(parsed[2]) == ((0,), (4,), ALL_DATES, ALL_MONTHS, (0,))
    assert _options(parsed[2]) == NO_OPTIONS

    # 7 is Sunday too
    assert (parsed[3].task, parsed[3].identifier) == ("every_sunday_at_4_am", "sunday_7")
    assert fields(parsed[3]) == ((0,), (4,), ALL_DATES, ALL_MONTHS, (0,))
    assert _options(parsed[3]) == NO_OPTIONS

    assert (parsed[4].task, parsed[4].identifier) == ("every_tuesday_at_4_am", "every_tuesday_at_4_am")
    assert fields(parsed[4]) == ((0,), (4,), ALL_DATES, ALL_MONTHS, (2,))
    assert _options(parsed[4]) == NO_OPTIONS
    assert parsed[4].payload == {"isTuesday": True}

    # */10,7,56-59 1 1 1 1 one ?id=stuff&fill=4w3d2h1m&max=3&queue=my_queue&priority=3 {myExtraPayload:{...}}
    assert (parsed[5].task, parsed[5].identifier) == ("one", "stuff")
    assert fields(parsed[5]) == ((0, 7, 10, 20, 30, 40, 50, 56, 57, 58, 59), (1,), (1,), (1,), (1,))
    assert _options(parsed[5]) == {
        **NO_OPTIONS, "fill": 4 * WEEK + 3 * DAY + 2 * HOUR + 1 * MINUTE, "max_attempts": 3, "priority": 3,
        "queue_name": "my_queue",
    }
    assert (4 * WEEK + 3 * DAY + 2 * HOUR + 1 * MINUTE) / timedelta(milliseconds=1) == 2685660000  # the snapshot
    assert parsed[5].payload == {"myExtraPayload": {"stuff": "here with # hash char"}}

    assert (parsed[6].task, parsed[6].identifier) == ("lots_of_spaces", "lots_of_spaces")
    assert fields(parsed[6]) == every_minute
    assert _options(parsed[6]) == NO_OPTIONS
    assert parsed[6].payload is None

    assert (parsed[7].task, parsed[7].identifier) == ("with_key", "with_key")
    assert fields(parsed[7]) == every_minute
    assert _options(parsed[7]) == {**NO_OPTIONS, "job_key": "my_key", "job_key_mode": "replace"}

    assert (parsed[8].task, parsed[8].identifier) == ("with_key_and_mode", "with_key_and_mode")
    assert fields(parsed[8]) == every_minute
    assert _options(parsed[8]) == {**NO_OPTIONS, "job_key": "my_key", "job_key_mode": "preserve_run_at"}

    assert (parsed[9].task, parsed[9].identifier) == ("nested/task", "nested/task")
    assert fields(parsed[9])[:2] == (ALL_MINUTES, ALL_HOURS)
    assert _options(parsed[9]) == {**NO_OPTIONS, "job_key": "my_key", "job_key_mode": "preserve_run_at"}

    assert (parsed[10].task, parsed[10].identifier) == ("nested/folder/task", "nested/folder/task")
    assert fields(parsed[10])[:2] == (ALL_MINUTES, ALL_HOURS)
    assert _options(parsed[10]) == {**NO_OPTIONS, "job_key": "my_key", "job_key_mode": "preserve_run_at"}


# --- crontab.test.ts: "gives error on syntax error" -----------------------------------------------


def _error(text: str) -> str:
    with pytest.raises(kongtask.CrontabError) as caught:
        parse_crontab(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_gives_error_on_syntax_error_too_few_parameters() -> None:
    message = _error("* * * * too_few_parameters\n")
    assert message.startswith("crontab:1: ") and "'* * * * too_few_parameters'" in message


def test_gives_error_on_syntax_error_invalid_command_two_parts() -> None:
    message = _error("* * * * * two tasks\n")
    assert message.startswith("crontab:1: invalid command 'two tasks'")


def test_gives_error_on_syntax_error_range_exceeded() -> None:
    message = _error("1,60 * * * * out_of_range\n")
    assert message == "crontab:1: too large value '60' in minutes: expected values in the range 0-59"


def test_gives_error_on_syntax_error_invalid_wildcard_divisor() -> None:
    message = _error("*/0 * * * * division_by_zero\n")
    assert message.startswith("crontab:1: invalid wildcard '*/0' in minutes") and "greater than zero" in message


def test_gives_error_on_syntax_error_unknown_option() -> None:
    message = _error("* * * * * invalid_options ?unknown=3\n")
    assert message == (
        "crontab:1: unsupported option 'unknown'; the options are: id, fill, max, queue, jobKey, jobKeyMode, priority"
    )


def test_gives_error_on_syntax_error_invalid_json5_syntax() -> None:
    message = _error("* * * * * json_syntax_error {invalidJson=true}\n")
    assert message.startswith("crontab:1: the payload is not valid JSON5: ")


# --- crontab.test.ts: "parses JS cron items correctly" (the Python form) ---------------------------


def test_parses_js_cron_items_correctly_defaults_backfill_period_to_0() -> None:
    assert CronItem(task="task", match="* * * * *").fill == timedelta(0)


def test_parses_js_cron_items_correctly_validates_match_strings() -> None:
    with pytest.raises(kongtask.CrontabError, match="cron item 'task': invalid cron pattern 'foo'"):
        CronItem(task="task", match="foo")


# --- kongtask's own ------------------------------------------------------------------------------


def test_an_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text("# nightly\n0 4 * * * rebuild_index\n\n0 25 * * * too_late\n")
    with pytest.raises(kongtask.CrontabError) as caught:
        load_crontab(crontab)
    assert str(caught.value) == f"{crontab}:4: too large value '25' in hours: expected values in the range 0-23"
    with pytest.raises(kongtask.CrontabError, match="^crontab:4: "):
        load_crontab(crontab, source="crontab")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("0 4 * * * a\n0 5 * * * a", "crontab:2: the identifier 'a' is also on line 1; give one of them another"),
        ("* * * * * a ?max=0", "max attempts must be a whole number from 1 to 32767, got 0"),
        ("* * * * * a ?max=40000", "from 1 to 32767, got 40000"),
        ("* * * * * a ?priority=-40000", "from -32768 to 32767, got -40000"),
        ("* * * * * a ?jobKey=", "the job key must have 1 to 512 characters"),
        ("* * * * * a ?jobKeyMode=unsafe_dedupe", "invalid value 'unsafe_dedupe' for option 'jobKeyMode'"),
        ("* * * * * a ?fill=1y", "invalid value '1y' for option 'fill'"),
        ("* * * * * a ?id=1abc", "invalid value '1abc' for option 'id'"),
        ("* * * * * a ?queue=a%20b", "invalid value 'a b' for option 'queue'"),
        ("* * * * * a ?id=x&id=y", "option 'id' is given more than once"),
        ("* * * * * a {n: NaN}", "the payload cannot be sent as JSON"),
        ("* * * * * a {n: 1} {m: 2}", "the payload is not valid JSON5"),
        ("0-0 * * * * a", "invalid range '0-0' in minutes: the end must be larger than the start"),
        ("1-5/2 * * * * a", "unsupported syntax '1-5/2' in minutes"),
        ("* * * * 8 a", "too large value '8' in days of the week: expected values in the range 0-6"),
        ("* * 0 * * a", "too small value '0' in days of the month: expected values in the range 1-31"),
        ("* * * JAN * a", "expected 'minute hour day-of-month month day-of-week task'"),
    ],
)
def test_a_line_a_job_could_not_hold_is_refused_when_read(line: str, fragment: str) -> None:
    assert fragment in _error(line)


def test_blank_lines_comments_crlf_and_a_byte_order_mark_are_skipped(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_bytes("\ufeff# weekly\r\n\r\n  0 8 * * 1 weekly_digest ?fill=2d {to: 'team'}  \r\n".encode())
    (item,) = load_crontab(crontab)
    assert (item.task, item.fill, item.payload) == ("weekly_digest", 2 * DAY, {"to": "team"})
    assert parse_crontab("\ufeff0 8 * * 1 weekly_digest")[0].task == "weekly_digest"


def test_options_are_url_decoded_as_a_query_string() -> None:
    (item,) = parse_crontab("* * * * * a ?jobKey=daily%2Freport+1&queue=q:1")
    assert (item.job_key, item.queue_name) == ("daily/report 1", "q:1")


def test_a_missing_or_unreadable_crontab_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(kongtask.CrontabError, match="does not exist"):
        load_crontab(tmp_path / "crontab")
    with pytest.raises(kongtask.CrontabError, match="is a folder, not a file"):
        load_crontab(tmp_path)
    (tmp_path / "latin1").write_bytes(b"* * * * * caf\xe9\n")
    with pytest.raises(kongtask.CrontabError, match="is not UTF-8 text"):
        load_crontab(tmp_path / "latin1")


def test_time_phrases_read_and_write() -> None:
    assert parse_time_phrase("4w3d2h1m") == 4 * WEEK + 3 * DAY + 2 * HOUR + MINUTE
    assert parse_time_phrase("30s") == timedelta(seconds=30)
    assert parse_time_phrase("1h1h") == 2 * HOUR  # as upstream: parts add up
    assert [time_phrase(d) for d in (DAY, 4 * HOUR + 30 * MINUTE, 10 * DAY)] == ["1d", "4h30m", "1w3d"]
    with pytest.raises(ValueError, match="invalid time phrase"):
        parse_time_phrase("1 day")


def test_options_are_shown_as_a_crontab_writes_them() -> None:
    (item,) = parse_crontab("*/10,7,56-59 1 1 1 1 one ?id=stuff&fill=4w3d2h1m&max=3&queue=my_queue&priority=3")
    assert item.options == "id=stuff&fill=4w3d2h1m&max=3&queue=my_queue&priority=3"
    assert parse_crontab("* * * * * simple")[0].options == ""


def test_cron_items_in_code_are_checked_as_crontab_lines_are() -> None:
    with pytest.raises(kongtask.CrontabError, match="cron item 'a': the payload must be an object"):
        CronItem(task="a", match="* * * * *", payload=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(kongtask.CrontabError, match="max attempts"):
        CronItem(task="a", match="* * * * *", max_attempts=0)
    with pytest.raises(kongtask.CrontabError, match="the task must be a name of 1 to 128 characters"):
        CronItem(task="", match="* * * * *")
    item = CronItem(task="a", match="0 4 * * *", identifier="a_daily", job_key="k")
    assert (item.identifier, item.job_key_mode) == ("a_daily", "replace")
    assert item.next_runs(datetime(2021, 1, 1, 4, 0, 30, tzinfo=timezone.utc), 2) == [
        datetime(2021, 1, 2, 4, tzinfo=timezone.utc), datetime(2021, 1, 3, 4, tzinfo=timezone.utc)
    ]
