"""When a cron pattern is due: a port of upstream graphile-worker 0.18's ``__tests__/cronMatcher.test.ts``,
then kongtask's own checks of the same rules (UTC, 7 as Sunday, the day-of-month or day-of-week
rule, the next run times). No database here.

Upstream matches a "digest" (minute, hour, date, month, day of week) that need not be a real day;
kongtask matches real UTC times, so each digest becomes the first day from 2000 on that has it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kongtask.crontab import CronPattern


def moment(minute: int, hour: int, date: int, month: int, dow: int) -> datetime:
    """The first UTC time from 2000 on with these fields (``dow`` 0 is Sunday)."""
    for year in range(2000, 2100):
        candidate = datetime(year, month, date, hour, minute, tzinfo=timezone.utc)
        if candidate.isoweekday() % 7 == dow:
            return candidate
    raise AssertionError("no such day")


_0_0_1_1_0 = moment(0, 0, 1, 1, 0)
_0_0_1_1_5 = moment(0, 0, 1, 1, 5)
_0_0_1_1_4 = moment(0, 0, 1, 1, 4)
_0_15_1_7_0 = moment(0, 15, 1, 7, 0)
_0_15_4_7_2 = moment(0, 15, 4, 7, 2)
_0_15_4_7_5 = moment(0, 15, 4, 7, 5)
_6_15_4_7_5 = moment(6, 15, 4, 7, 5)
DIGESTS = (_0_0_1_1_0, _0_0_1_1_5, _0_0_1_1_4, _0_15_1_7_0, _0_15_4_7_2, _0_15_4_7_5, _6_15_4_7_5)


def matches(pattern: str) -> list[bool]:
    parsed = CronPattern.parse(pattern)
    return [parsed.matches(m) for m in DIGESTS]


# --- cronMatcher.test.ts: "matches datetime" -----------------------------------------------------


def test_matches_datetime_every_minute() -> None:
    assert matches("* * * * *") == [True, True, True, True, True, True, True]


def test_matches_datetime_dow_range() -> None:
    assert matches("* * * * 5-6") == [False, True, False, False, False, True, True]


def test_matches_datetime_dow_and_date_range() -> None:
    assert matches("0-5 15 3-4 7 0-2") == [False, False, False, True, True, True, False]


# --- kongtask's own ------------------------------------------------------------------------------


def test_times_are_read_in_utc() -> None:
    four_am_utc = datetime(2021, 1, 1, 4, tzinfo=timezone.utc)
    in_auckland = four_am_utc.astimezone(timezone(timedelta(hours=13)))
    assert CronPattern.parse("0 4 * * *").matches(in_auckland)
    assert not CronPattern.parse("0 17 * * *").matches(in_auckland)


@pytest.mark.parametrize(
    ("pattern", "dows"),
    [("* * * * 0", (0,)), ("* * * * 7", (0,)), ("* * * * 5-7", (0, 5, 6)), ("* * * * 0-7", (0, 1, 2, 3, 4, 5, 6)),
     ("* * * * */2", (0, 2, 4, 6))],
)
def test_seven_is_sunday(pattern: str, dows: tuple[int, ...]) -> None:
    assert CronPattern.parse(pattern).dows == dows


def test_a_day_is_due_when_either_restricted_day_field_matches() -> None:
    # the 13th, or a Friday; 2021-08-13 is a Friday, 2021-08-12 a Thursday, 2021-08-20 a Friday
    either = CronPattern.parse("0 0 13 * 5")
    assert [either.matches(datetime(2021, 8, d, tzinfo=timezone.utc)) for d in (12, 13, 20, 21)] == [
        False, True, True, False]
    # one restricted field alone decides; */2 restricts, a full range does not
    assert not CronPattern.parse("0 0 13 * *").matches(datetime(2021, 8, 20, tzinfo=timezone.utc))
    assert CronPattern.parse("0 0 1-31 * 5").matches(datetime(2021, 8, 20, tzinfo=timezone.utc))
    assert not CronPattern.parse("0 0 1-31 * 5").matches(datetime(2021, 8, 21, tzinfo=timezone.utc))
    assert CronPattern.parse("0 0 */2 * 6").matches(datetime(2021, 8, 21, tzinfo=timezone.utc))


def test_next_runs() -> None:
    start = datetime(2021, 1, 1, 1, 0, 0, tzinfo=timezone.utc)
    every_four_hours = CronPattern.parse("0 */4 * * *")
    assert every_four_hours.next_runs(start, 3) == [start.replace(hour=h) for h in (4, 8, 12)]
    # on a due minute, that minute is the first
    assert every_four_hours.next_runs(start.replace(hour=4), 1) == [start.replace(hour=4)]
    # seconds past a due minute: the next one
    assert every_four_hours.next_runs(start.replace(hour=4, second=1), 1) == [start.replace(hour=8)]
    leap_day = CronPattern.parse("0 0 29 2 *")
    assert leap_day.next_runs(start, 2) == [datetime(2024, 2, 29, tzinfo=timezone.utc),
                                           datetime(2028, 2, 29, tzinfo=timezone.utc)]
    assert CronPattern.parse("0 0 31 2 *").next_runs(start, 1) == []  # never due
