"""What became of a submitted event, why it failed, and the per-status counts every batch answer reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Annotated

from .errors import ValidationError
from .event import format_decimal
from .periods import Period
from .wire import OMITTED_WHEN_NONE, DecimalText, Identifier, JsonShape


class EventStatus(str, Enum):
    RECORDED = "recorded"  # stored and counted
    DUPLICATE = "duplicate"  # its (tenant_id, event_id) was already stored
    BLOCKED = "blocked"  # a `block` quota refused it; not stored
    REJECTED = "rejected"  # invalid; not stored
    ACCEPTED = "accepted"  # Kafka mode: acknowledged by the broker (acks=all), not yet ingested

    def __str__(self) -> str:
        return self.value


# The summary's key for each status (the API has always said "duplicates").
SUMMARY_KEYS = {
    EventStatus.RECORDED: "recorded",
    EventStatus.DUPLICATE: "duplicates",
    EventStatus.BLOCKED: "blocked",
    EventStatus.REJECTED: "rejected",
    EventStatus.ACCEPTED: "accepted",
}


def batch_summary(statuses: Iterable[str]) -> dict[str, int]:
    """How many events of a batch ended in each status: {recorded, duplicates, blocked, rejected, accepted}."""
    counts = dict.fromkeys(SUMMARY_KEYS.values(), 0)
    for status in statuses:
        key = SUMMARY_KEYS.get(status)  # type: ignore[call-overload]  # an EventStatus (the usual case) or its text
        counts[key if key is not None else SUMMARY_KEYS[EventStatus(status)]] += 1
    return counts


@dataclass(frozen=True)
class ErrorDetail(JsonShape):
    """The body of every error answer (`{"error": ...}`) and of a rejected or blocked event's result.

    `field` names the offending field or parameter, if one; a `quota_exceeded`
    error also says which metric, its limit, the usage before the event and the period.
    """

    code: str
    message: str
    field: str | None = None
    metric: Annotated[Identifier | None, OMITTED_WHEN_NONE] = None
    limit: Annotated[DecimalText | None, OMITTED_WHEN_NONE] = None
    used: Annotated[DecimalText | None, OMITTED_WHEN_NONE] = None
    period: Annotated[Period | None, OMITTED_WHEN_NONE] = None

    @classmethod
    def of(cls, error: ValidationError) -> ErrorDetail:
        return cls(error.code, error.message, error.field)

    @classmethod
    def quota_exceeded(cls, metric: str, limit: Decimal, used: Decimal, period: Period) -> ErrorDetail:
        message = (
            f"this event would take {metric} past its quota: {format_decimal(used)} "
            f"of {format_decimal(limit)} already used this period"
        )
        return cls("quota_exceeded", message, "quantity", metric, limit, used, period)

    def exception(self) -> ValidationError:
        return ValidationError(self.field, self.message, self.code)


@dataclass  # not frozen: one is built per event of every batch, and a frozen one is built field by field
class EventResult(JsonShape):
    """What became of one submitted event (`index` in the submitted list); `error` when rejected or blocked."""

    index: int
    event_id: str | None
    status: EventStatus
    error: Annotated[ErrorDetail | None, OMITTED_WHEN_NONE] = None
