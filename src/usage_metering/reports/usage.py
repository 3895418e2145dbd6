"""Usage summaries: one metric's value over a period or date range, optionally per day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import duckdb

from usage_metering.schemas import Aggregation, Period, UsageTotals, format_decimal
from usage_metering.store import usage as usage_store


@dataclass(frozen=True)
class DailyUsage:
    day: date
    value: Decimal
    event_count: int

    def to_json_dict(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "value": format_decimal(self.value), "event_count": self.event_count}


@dataclass(frozen=True)
class UsageSummary:
    tenant_id: str
    metric: str
    aggregation: Aggregation
    period: Period
    value: Decimal
    event_count: int
    daily: tuple[DailyUsage, ...] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "metric": self.metric,
            "aggregation": self.aggregation.value,
            "period": self.period.to_json_dict(),
            "value": format_decimal(self.value),
            "event_count": self.event_count,
        }
        if self.daily is not None:
            data["daily"] = [d.to_json_dict() for d in self.daily]
        return data


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
    return UsageSummary(**{**summary.__dict__, "daily": days})


@dataclass(frozen=True)
class TenantUsage:
    """Every metric's summary with the period they cover (resolved once, so all agree)."""

    tenant_id: str
    period: Period
    metrics: list[UsageSummary]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "period": self.period.to_json_dict(),
            "metrics": [summary.to_json_dict() for summary in self.metrics],
        }


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
