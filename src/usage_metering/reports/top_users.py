"""The heaviest users of a metric in a period."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from usage_metering.schemas import Aggregation, Period
from usage_metering.schemas.wire import DecimalText, Identifier, JsonShape
from usage_metering.store import usage as usage_store


@dataclass(frozen=True)
class TopUser(JsonShape):
    rank: int
    user_id: Identifier
    value: DecimalText
    event_count: int


@dataclass(frozen=True)
class TopUsers(JsonShape):
    """The ranking with the period it covers (resolved once, so the two always agree)."""

    tenant_id: Identifier
    metric: Identifier
    period: Period
    users: list[TopUser]


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
