"""Usage summaries: one metric's value over a period or date range, optionally per day."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Annotated

import duckdb
from pydantic import Field

from usage_metering.schemas import Aggregation, Period, UsageTotals
from usage_metering.schemas.wire import OMITTED_WHEN_NONE, DecimalText, Identifier, JsonShape, Timestamp
from usage_metering.store import usage as usage_store


@dataclass(frozen=True)
class DailyUsage(JsonShape):
    day: Annotated[date, Field(alias="date")]
    value: DecimalText
    event_count: int


@dataclass(frozen=True)
class UsageSummary(JsonShape):
    """`daily` only when asked for; `as_of` and `consumer_lag` only from a Kafka-mode node (how fresh it is)."""

    tenant_id: Identifier
    metric: Identifier
    aggregation: Aggregation
    period: Period
    value: DecimalText
    event_count: int
    daily: Annotated[tuple[DailyUsage, ...] | None, OMITTED_WHEN_NONE] = None
    as_of: Annotated[Timestamp | None, OMITTED_WHEN_NONE] = None
    consumer_lag: Annotated[int | None, OMITTED_WHEN_NONE] = None


def date_range_period(start: date, end: date) -> Period:
    """The inclusive date range [start, end] as a UTC half-open Period."""
    begin = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    finish = datetime(end.year, end.month, end.day, tzinfo=timezone.utc) + timedelta(days=1)
    return Period(begin, finish)


def _summary_from_totals(
    tenant_id: str, metric: str, aggregation: Aggregation, period: Period, totals: UsageTotals
) -> UsageSummary:
    return UsageSummary(tenant_id, metric, aggregation, period, totals.value(aggregation), totals.count)


def summarize_metric(
    cursor: duckdb.DuckDBPyConnection,
    tenant_id: str,
    metric: str,
    aggregation: Aggregation,
    period: Period,
    *,
    daily: bool = False,
) -> UsageSummary:
    totals = usage_store.usage_totals(cursor, tenant_id, metric, period.start, period.end)
    summary = _summary_from_totals(tenant_id, metric, aggregation, period, totals)
    if not daily:
        return summary
    days = tuple(
        DailyUsage(day, day_totals.value(aggregation), day_totals.count)
        for day, day_totals in usage_store.usage_totals_by_day(cursor, tenant_id, metric, period.start, period.end)
    )
    return replace(summary, daily=days)


@dataclass(frozen=True)
class TenantUsage(JsonShape):
    """Every metric's summary with the period they cover (resolved once, so all agree)."""

    tenant_id: Identifier
    period: Period
    metrics: list[UsageSummary]


def summarize_tenant(
    cursor: duckdb.DuckDBPyConnection,
    tenant_id: str,
    aggregation_of: dict[str, Aggregation],
    period: Period,
) -> TenantUsage:
    """Every metric the tenant used in the period (defined metrics use their aggregation)."""
    by_metric = usage_store.usage_totals_by_metric(cursor, tenant_id, period.start, period.end)
    summaries = [
        _summary_from_totals(tenant_id, metric, aggregation_of.get(metric, Aggregation.SUM), period, totals)
        for metric, totals in by_metric.items()
    ]
    return TenantUsage(tenant_id, period, summaries)
