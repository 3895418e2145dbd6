"""The heaviest users of a metric in a period."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb

from usage_metering.schemas import Aggregation, Period, format_decimal
from usage_metering.store import usage as usage_store


@dataclass(frozen=True)
class TopUser:
    rank: int
    user_id: str
    value: Decimal
    event_count: int

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "user_id": self.user_id,
            "value": format_decimal(self.value),
            "event_count": self.event_count,
        }


@dataclass(frozen=True)
class TopUsers:
    """The ranking with the period it covers (resolved once, so the two always agree)."""

    tenant_id: str
    metric: str
    period: Period
    users: list[TopUser]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "metric": self.metric,
            "period": self.period.to_json_dict(),
            "users": [user.to_json_dict() for user in self.users],
        }


def top_users(
    cursor: duckdb.DuckDBPyConnection,
    tenant_id: str,
    metric: str,
    aggregation: Aggregation,
    period: Period,
    limit: int = 10,
) -> TopUsers:
    """Users ranked by the metric's aggregate (by event count for UNIQUE_COUNT metrics)."""
    rows = usage_store.top_users(cursor, tenant_id, metric, aggregation, period.start, period.end, limit)
    rank_value = Aggregation.COUNT if aggregation is Aggregation.UNIQUE_COUNT else aggregation
    users = [
        TopUser(rank, row.user_id, row.totals.value(rank_value), row.totals.count)
        for rank, row in enumerate(rows, start=1)
    ]
    return TopUsers(tenant_id, metric, period, users)
