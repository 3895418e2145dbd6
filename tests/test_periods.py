"""Billing periods from the tenant's anchor day, in UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_metering.schemas import (
    Period,
    ValidationError,
    parse_period_label,
    period_containing,
    period_starting_in,
    previous_period,
)

pytestmark = pytest.mark.unit

UTC = timezone.utc


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_anchor_1_is_the_calendar_month() -> None:
    period = period_containing(at(2024, 2, 14, 9), 1)
    assert period == Period(at(2024, 2, 1), at(2024, 3, 1))
    assert period.label() == "2024-02"
    assert period.to_json_dict() == {"start": "2024-02-01T00:00:00Z", "end": "2024-03-01T00:00:00Z"}


def test_anchor_15_before_and_after_the_anchor() -> None:
    assert period_containing(at(2024, 5, 14, 23, 59, 59), 15) == Period(at(2024, 4, 15), at(2024, 5, 15))
    assert period_containing(at(2024, 5, 15), 15) == Period(at(2024, 5, 15), at(2024, 6, 15))


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (at(2023, 1, 31), at(2023, 1, 31), at(2023, 2, 28)),
        (at(2023, 2, 27), at(2023, 1, 31), at(2023, 2, 28)),
        (at(2023, 2, 28), at(2023, 2, 28), at(2023, 3, 31)),  # short month: last day
        (at(2024, 2, 29), at(2024, 2, 29), at(2024, 3, 31)),  # leap year
        (at(2024, 3, 30), at(2024, 2, 29), at(2024, 3, 31)),
        (at(2024, 4, 30, 12), at(2024, 4, 30), at(2024, 5, 31)),  # 30-day month
    ],
)
def test_anchor_31_clamps_to_short_months(moment: datetime, start: datetime, end: datetime) -> None:
    assert period_containing(moment, 31) == Period(start, end)


def test_boundary_moment_belongs_to_the_next_period() -> None:
    boundary = at(2024, 7, 1)
    period = period_containing(boundary, 1)
    assert period.start == boundary
    assert period.contains(boundary)
    before = period_containing(boundary - timedelta(microseconds=1), 1)
    assert before.end == boundary
    assert not before.contains(boundary)


def test_year_rollover() -> None:
    assert period_containing(at(2024, 12, 31, 23), 1) == Period(at(2024, 12, 1), at(2025, 1, 1))
    assert period_containing(at(2025, 1, 10), 20) == Period(at(2024, 12, 20), at(2025, 1, 20))
    assert period_containing(at(2024, 12, 25), 20) == Period(at(2024, 12, 20), at(2025, 1, 20))


def test_non_utc_moment_is_converted() -> None:
    # 00:30 on March 1st in UTC+02:00 is still February 29th in UTC
    moment = datetime(2024, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_containing(moment, 1) == Period(at(2024, 2, 1), at(2024, 3, 1))


def test_previous_period() -> None:
    assert previous_period(Period(at(2024, 1, 1), at(2024, 2, 1)), 1) == Period(at(2023, 12, 1), at(2024, 1, 1))
    march = period_containing(at(2024, 3, 31), 31)
    assert previous_period(march, 31) == Period(at(2024, 2, 29), at(2024, 3, 31))
    assert previous_period(previous_period(march, 31), 31) == Period(at(2024, 1, 31), at(2024, 2, 29))


def test_parse_period_label() -> None:
    assert parse_period_label("period", "2024-02") == Period(at(2024, 2, 1), at(2024, 3, 1))
    assert parse_period_label("period", "2024-02", 31) == Period(at(2024, 2, 29), at(2024, 3, 31))
    assert parse_period_label("period", "2024-12", 15) == Period(at(2024, 12, 15), at(2025, 1, 15))
    assert parse_period_label("period", "2024-02").label() == "2024-02"


@pytest.mark.parametrize("bad", ["2024-13", "2024-00", "2024-2", "24-02", "2024/02", "2024-02-01", "", None, 202402])
def test_parse_period_label_errors(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_period_label("period", bad)
    assert (info.value.field, info.value.code) == ("period", "invalid_period")


MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)
ANCHORS = st.integers(1, 31)


@settings(max_examples=500)
@given(moment=MOMENTS, anchor=ANCHORS)
def test_period_properties(moment: datetime, anchor: int) -> None:
    period = period_containing(moment, anchor)
    assert period.contains(moment)
    assert period.start.tzinfo is not None and period.start.utcoffset() == timedelta(0)
    assert period.start.time() == datetime.min.time()
    assert timedelta(days=28) <= period.end - period.start <= timedelta(days=31)
    # contiguous: the period after this one starts where this one ends
    following = period_containing(period.end, anchor)
    assert following.start == period.end
    assert previous_period(following, anchor) == period
    # and the period before this one ends where this one starts
    assert period_containing(period.start - timedelta(microseconds=1), anchor).end == period.start
    # starts on the anchor day, or on the last day of a shorter month
    next_day = period.start + timedelta(days=1)
    assert period.start.day == anchor or (period.start.day < anchor and next_day.day == 1)
    assert parse_period_label("p", period.label(), anchor) == period
    assert period_starting_in(period.start.year, period.start.month, anchor) == period
