"""Reading usage from the hourly rollups (never from the raw events table).

Periods start on whole hours (midnight UTC), so hourly buckets add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Mapping, Sequence

import duckdb
import pyarrow as pa

from usage_metering.schemas import AggregateState, Aggregation, UsageTotals

from .timeutil import from_naive_utc, to_naive_utc
from .transaction import transaction

_TOTALS_SQL = """
    sum(quantity_sum), sum(event_count), max(quantity_max),
    count(DISTINCT NULLIF(user_id, '')), arg_max(latest_quantity, latest_at)
"""

# How users rank in a top-users list, per aggregation of the metric.
_USER_RANK_SQL = {
    Aggregation.SUM: "sum(quantity_sum)",
    Aggregation.COUNT: "sum(event_count)",
    Aggregation.MAX: "max(quantity_max)",
    Aggregation.UNIQUE_COUNT: "sum(event_count)",
    Aggregation.LATEST: "arg_max(latest_quantity, latest_at)",
}


def _totals(row: Sequence[object]) -> UsageTotals:
    total, count, maximum, unique_users, latest = row
    return UsageTotals(
        total=Decimal(total or 0),
        count=int(count or 0),
        maximum=Decimal(maximum or 0),
        unique_users=int(unique_users or 0),
        latest=Decimal(latest or 0),
    )


def usage_totals(
    cursor: duckdb.DuckDBPyConnection, tenant_id: str, metric: str, start: datetime, end: datetime
) -> UsageTotals:
    row = cursor.execute(
        f"SELECT {_TOTALS_SQL} FROM usage_hourly "
        "WHERE tenant_id = ? AND metric = ? AND hour >= ? AND hour < ?",
        [tenant_id, metric, to_naive_utc(start), to_naive_utc(end)],
    ).fetchall()
    return _totals(row[0]) if row else UsageTotals()


def usage_totals_by_metric(
    cursor: duckdb.DuckDBPyConnection, tenant_id: str, start: datetime, end: datetime
) -> dict[str, UsageTotals]:
    rows = cursor.execute(
        f"SELECT metric, {_TOTALS_SQL} FROM usage_hourly "
        "WHERE tenant_id = ? AND hour >= ? AND hour < ? GROUP BY metric ORDER BY metric",
        [tenant_id, to_naive_utc(start), to_naive_utc(end)],
    ).fetchall()
    return {row[0]: _totals(row[1:]) for row in rows}


def usage_totals_by_day(
    cursor: duckdb.DuckDBPyConnection, tenant_id: str, metric: str, start: datetime, end: datetime
) -> list[tuple[date, UsageTotals]]:
    rows = cursor.execute(
        f"SELECT CAST(hour AS DATE) AS day, {_TOTALS_SQL} FROM usage_hourly "
        "WHERE tenant_id = ? AND metric = ? AND hour >= ? AND hour < ? GROUP BY day ORDER BY day",
        [tenant_id, metric, to_naive_utc(start), to_naive_utc(end)],
    ).fetchall()
    return [(row[0], _totals(row[1:])) for row in rows]


@dataclass(frozen=True)
class UserUsage:
    user_id: str
    totals: UsageTotals


def top_users(
    cursor: duckdb.DuckDBPyConnection,
    tenant_id: str,
    metric: str,
    aggregation: Aggregation,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[UserUsage]:
    rows = cursor.execute(
        f"SELECT user_id, {_TOTALS_SQL} FROM usage_hourly "
        "WHERE tenant_id = ? AND metric = ? AND hour >= ? AND hour < ? AND user_id <> '' "
        f"GROUP BY user_id ORDER BY {_USER_RANK_SQL[aggregation]} DESC, user_id LIMIT ?",
        [tenant_id, metric, to_naive_utc(start), to_naive_utc(end), limit],
    ).fetchall()
    return [UserUsage(row[0], _totals(row[1:])) for row in rows]


Window = tuple[str, datetime, datetime]  # (tenant_id, start, end)


def windows_table(windows: Sequence[Window]) -> pa.Table:
    return pa.table(
        {
            "tenant_id": pa.array([w[0] for w in windows], pa.string()),
            "window_start": pa.array([to_naive_utc(w[1]) for w in windows], pa.timestamp("us")),
            "window_end": pa.array([to_naive_utc(w[2]) for w in windows], pa.timestamp("us")),
        }
    )


# Each aggregation's value over a metric's rollup rows, as DECIMAL(38, 9) so the branches unite exactly.
_VALUE_SQL = {
    Aggregation.SUM: "sum(quantity_sum)",
    Aggregation.COUNT: "CAST(sum(event_count) AS DECIMAL(38, 9))",
    Aggregation.MAX: "max(quantity_max)",
    Aggregation.UNIQUE_COUNT: "CAST(count(DISTINCT NULLIF(user_id, '')) AS DECIMAL(38, 9))",
    Aggregation.LATEST: "arg_max(latest_quantity, latest_at)",
}
_WHOLE_NUMBERS = (Aggregation.COUNT, Aggregation.UNIQUE_COUNT)


def usage_values_for_windows(
    cursor: duckdb.DuckDBPyConnection, windows: Sequence[Window], aggregations: Mapping[str, Aggregation]
) -> dict[tuple[str, datetime], dict[str, Decimal]]:
    """Each metric's value under its aggregation (SUM for a metric not in `aggregations`) for many
    (tenant, period) windows, keyed by (tenant_id, window start); billing all tenants uses this.

    One SELECT per aggregation in use, over its metrics' rows only, united in one statement: each
    rollup row feeds one aggregate instead of all five (a month at 100M events: 1.7 s -> 1.1 s).
    """
    if not windows:
        return {}
    by_aggregation: dict[Aggregation, list[str]] = {Aggregation.SUM: []}
    for metric, aggregation in aggregations.items():
        by_aggregation.setdefault(aggregation, []).append(metric)
    not_summed = [metric for metric, aggregation in aggregations.items() if aggregation is not Aggregation.SUM]
    selects, params = [], []
    for aggregation, metrics in by_aggregation.items():
        if aggregation is Aggregation.SUM:  # every metric not aggregated otherwise
            wanted, listed = ("u.metric NOT IN (" + ", ".join("?" * len(not_summed)) + ")", not_summed) if not_summed \
                else ("TRUE", [])
        else:
            wanted, listed = "u.metric IN (" + ", ".join("?" * len(metrics)) + ")", metrics
        selects.append(
            f"SELECT w.tenant_id, w.window_start, u.metric, {_VALUE_SQL[aggregation]} AS value "
            "FROM usage_windows w JOIN usage_hourly u ON u.tenant_id = w.tenant_id "
            f"AND u.hour >= w.window_start AND u.hour < w.window_end WHERE {wanted} GROUP BY ALL"
        )
        params.extend(listed)
    cursor.register("usage_windows", windows_table(windows))
    try:
        rows = cursor.execute(" UNION ALL ".join(selects), params).fetchall()
    finally:
        cursor.unregister("usage_windows")
    result: dict[tuple[str, datetime], dict[str, Decimal]] = {}
    for tenant_id, window_start, metric, value in rows:
        whole = aggregations.get(metric) in _WHOLE_NUMBERS
        result.setdefault((tenant_id, from_naive_utc(window_start)), {})[metric] = Decimal(int(value)) if whole else value
    return result


def aggregate_states_for_windows(
    cursor: duckdb.DuckDBPyConnection, windows: Sequence[Window]
) -> dict[tuple[str, str, datetime], AggregateState]:
    """Running aggregates (with the distinct user set) per (tenant, metric, window start).

    The ingestor seeds its in-memory quota counters from this at start.
    """
    if not windows:
        return {}
    cursor.register("counter_windows", windows_table(windows))
    try:
        rows = cursor.execute(
            """
            SELECT w.tenant_id, u.metric, w.window_start,
                   sum(quantity_sum), sum(event_count), max(quantity_max),
                   max(latest_at), arg_max(latest_quantity, latest_at),
                   list(DISTINCT user_id) FILTER (WHERE user_id <> '')
            FROM counter_windows w
            JOIN usage_hourly u ON u.tenant_id = w.tenant_id
                 AND u.hour >= w.window_start AND u.hour < w.window_end
            GROUP BY ALL
            """
        ).fetchall()
    finally:
        cursor.unregister("counter_windows")
    return states_from_rows(rows)


def states_from_rows(rows: Sequence[Sequence[Any]]) -> dict[tuple[str, str, datetime], AggregateState]:
    """(tenant, metric, start, sum, count, max, latest_at, latest quantity, users) rows as running aggregates."""
    states: dict[tuple[str, str, datetime], AggregateState] = {}
    for tenant_id, metric, start, total, count, maximum, latest_at, latest_q, users in rows:
        states[(tenant_id, metric, from_naive_utc(start))] = AggregateState(
            total=Decimal(total),
            count=int(count),
            maximum=Decimal(maximum),
            latest_at=None if latest_at is None else from_naive_utc(latest_at),  # None: a checkpoint's empty state
            latest_quantity=Decimal(latest_q),
            users=set(users or ()),
        )
    return states


def rollups_left_compact(cursor: duckdb.DuckDBPyConnection) -> bool:
    """True when the last writer stopped cleanly after folding every delta row it appended."""
    return bool(cursor.execute("SELECT compact FROM rollup_state").fetchall()[0][0])


def mark_rollups_compact(cursor: duckdb.DuckDBPyConnection, compact: bool) -> None:
    cursor.execute("UPDATE rollup_state SET compact = ?", [compact])


def compact_rollups(cursor: duckdb.DuckDBPyConnection, since: datetime) -> int:
    """Merge the delta rows of every (tenant, metric, user, hour) from `since` on into one row each.

    One transaction of its own. Ingest keeps appending meanwhile: rows it
    commits after this transaction began are not visible here, so they are
    neither deleted nor folded in (the next compaction takes them). Answers are
    the same before and after. Returns how many rows went.
    """
    with transaction(cursor):
        cursor.execute(
            """
            CREATE OR REPLACE TEMP TABLE rollup_fold AS
            SELECT tenant_id, metric, user_id, hour,
                   sum(quantity_sum) AS quantity_sum, max(quantity_max) AS quantity_max,
                   sum(event_count) AS event_count, max(latest_at) AS latest_at,
                   arg_max(latest_quantity, latest_at) AS latest_quantity, count(*) AS merged
            FROM usage_hourly WHERE hour >= ?
            GROUP BY ALL HAVING count(*) > 1
            """,
            [to_naive_utc(since)],
        )
        merged, groups = cursor.execute("SELECT coalesce(sum(merged), 0), count(*) FROM rollup_fold").fetchall()[0]
        if groups:
            cursor.execute(
                """
                DELETE FROM usage_hourly u USING rollup_fold f
                WHERE u.hour >= ? AND u.tenant_id = f.tenant_id AND u.metric = f.metric
                  AND u.user_id = f.user_id AND u.hour = f.hour
                """,
                [to_naive_utc(since)],
            )
            cursor.execute(
                "INSERT INTO usage_hourly SELECT tenant_id, metric, user_id, hour, quantity_sum, quantity_max, "
                "event_count, latest_at, latest_quantity FROM rollup_fold ORDER BY hour"
            )
        cursor.execute("DROP TABLE rollup_fold")
    return int(merged) - int(groups)
