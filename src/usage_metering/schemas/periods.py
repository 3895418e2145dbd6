"""Billing periods: monthly, in UTC, starting on the tenant's anchor day.

An anchor day past the end of a short month falls on that month's last day
(anchor 31 starts February's period on the 28th/29th), the usual billing rule.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated

from pydantic import Field

from .errors import ValidationError
from .wire import JsonShape, Timestamp

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Period(JsonShape):
    start: Timestamp  # inclusive, UTC
    end: Timestamp  # exclusive, UTC

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def label(self) -> str:
        """The YYYY-MM of the month the period starts in."""
        return f"{self.start.year:04d}-{self.start.month:02d}"


@dataclass(frozen=True, order=True)
class BillingPeriod(Period):
    """A billing period with its YYYY-MM label, as invoices show it."""

    label_text: Annotated[str, Field(alias="label", pattern=r"^[0-9]{4}-[0-9]{2}$")] = ""

    @classmethod
    def of(cls, period: Period) -> BillingPeriod:
        return cls(period.start, period.end, period.label())


def _anchor_in_month(year: int, month: int, anchor_day: int) -> datetime:
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return datetime(year, month, day, tzinfo=timezone.utc)


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def period_starting_in(year: int, month: int, anchor_day: int) -> Period:
    next_year, next_month = _shift_month(year, month, 1)
    return Period(
        _anchor_in_month(year, month, anchor_day),
        _anchor_in_month(next_year, next_month, anchor_day),
    )


def period_containing(moment: datetime, anchor_day: int = 1) -> Period:
    """The billing period that contains `moment` (aware datetime)."""
    moment = moment.astimezone(timezone.utc)
    start = _anchor_in_month(moment.year, moment.month, anchor_day)
    if moment >= start:
        return period_starting_in(moment.year, moment.month, anchor_day)
    year, month = _shift_month(moment.year, moment.month, -1)
    return period_starting_in(year, month, anchor_day)


def previous_period(period: Period, anchor_day: int) -> Period:
    year, month = _shift_month(period.start.year, period.start.month, -1)
    return period_starting_in(year, month, anchor_day)


def parse_period_label(field: str, value: object, anchor_day: int = 1) -> Period:
    """'YYYY-MM' names the period that starts in that month."""
    match = _MONTH_RE.match(value) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(2)) <= 12 or not 1 <= int(match.group(1)) <= 9998:
        raise ValidationError(field, "must be a month as YYYY-MM", "invalid_period")
    return period_starting_in(int(match.group(1)), int(match.group(2)), anchor_day)
