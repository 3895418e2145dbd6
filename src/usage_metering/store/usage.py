"""Reading usage from the rollups (never from the raw events table).

Periods start on whole hours (midnight UTC), so hourly buckets add up exactly.
A window's whole sealed days are read from the daily rollups, the rest from
the hourly ones (store/sealed_days.py); both hold the same columns and fold
the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from usage_metering.schemas import AggregateState, Aggregation, UsageTotals

from .sealed_days import days_sealed_before, split_window
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


# A row of _TOTALS_SQL: sum(quantity_sum), sum(event_count), max(quantity_max), count(DISTINCT user_id),
# arg_max(latest_quantity, latest_at); all but the count are NULL (None) when no rollup row matched.
_TotalsRow = tuple[Decimal | None, int | None, Decimal | None, int, Decimal | None]


def _totals(row: _TotalsRow) -> UsageTotals:
    total, count, maximum, unique_users, latest = row
    return UsageTotals(
        total=Decimal(total or 0),
        count=int(count or 0),
        maximum=Decimal(maximum or 0),
        unique_users=int(unique_users or 0),
        latest=Decimal(latest or 0),
    )


_ROLLUP_COLUMN_NAMES = (
    "tenant_id",
    "metric",
    "user_id",
    "quantity_sum",
    "quantity_max",
    "event_count",
    "latest_at",
    "latest_quantity",
)
_ROLLUP_COLUMNS = ", ".join(_ROLLUP_COLUMN_NAMES)


def _rollup_rows(cursor: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> tuple[str, list[object]]:
    """A subquery of the rollup rows of [start, end), each with its `bucket` (hour or day), and its parameters."""
    days, hours = split_window(start, end, days_sealed_before(cursor))
    parts = [
        (f"SELECT {_ROLLUP_COLUMNS}, hour AS bucket FROM usage_hourly WHERE hour >= ? AND hour < ?", span)
        for span in hours
    ]
    if days:
        parts.append(
            (f"SELECT {_ROLLUP_COLUMNS}, day AS bucket FROM usage_daily_rollup WHERE day >= ? AND day < ?", days)
        )
    params: list[object] = [to_naive_utc(moment) for _sql, span in parts for moment in span]
    return "(" + " UNION ALL ".join(sql for sql, _span in parts) + ")", params


def usage_totals(
    cursor: duckdb.DuckDBPyConnection, tenant_id: str, metric: str, start: datetime, end: datetime
) -> UsageTotals:
    rows, params = _rollup_rows(cursor, start, end)
    row = cursor.execute(
        f"SELECT {_TOTALS_SQL} FROM {rows} WHERE tenant_id = ? AND metric = ?", [*params, tenant_id, metric]
    ).fetchall()
    return _totals(row[0]) if row else UsageTotals()


def usage_totals_by_metric(
    cursor: duckdb.DuckDBPyConnection, tenant_id: str, start: datetime, end: datetime
) -> dict[str, UsageTotals]:
    rows, params = _rollup_rows(cursor, start, end)
    found = cursor.execute(
        f"SELECT metric, {_TOTALS_SQL} FROM {rows} WHERE tenant_id = ? GROUP BY metric ORDER BY metric",
        [*params, tenant_id],
    ).fetchall()
    return {row[0]: _totals(row[1:]) for row in found}


def usage_totals_by_day(
    cursor: duckdb.DuckDBPyConnection, tenant_id: str, metric: str, start: datetime, end: datetime
) -> list[tuple[date, UsageTotals]]:
    rows, params = _rollup_rows(cursor, start, end)
    found = cursor.execute(
        f"SELECT CAST(bucket AS DATE) AS day, {_TOTALS_SQL} FROM {rows} "
        "WHERE tenant_id = ? AND metric = ? GROUP BY day ORDER BY day",
        [*params, tenant_id, metric],
    ).fetchall()
    return [(row[0], _totals(row[1:])) for row in found]


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
    rows, params = _rollup_rows(cursor, start, end)
    found = cursor.execute(
        f"SELECT user_id, {_TOTALS_SQL} FROM {rows} WHERE tenant_id = ? AND metric = ? AND user_id <> '' "
        f"GROUP BY user_id ORDER BY {_USER_RANK_SQL[aggregation]} DESC, user_id LIMIT ?",
        [*params, tenant_id, metric, limit],
    ).fetchall()
    return [UserUsage(row[0], _totals(row[1:])) for row in found]


Window = tuple[str, datetime, datetime]  # (tenant_id, start, end)


def windows_table(windows: Sequence[Window]) -> pa.Table:
    return pa.table(
        {
            "tenant_id": pa.array([w[0] for w in windows], pa.string()),
            "window_start": pa.array([to_naive_utc(w[1]) for w in windows], pa.timestamp("us")),
            "window_end": pa.array([to_naive_utc(w[2]) for w in windows], pa.timestamp("us")),
        }
    )


_PIECES_FIELDS: list[tuple[str, pa.DataType]] = [
    ("tenant_id", pa.string()),
    ("window_start", pa.timestamp("us")),
    ("piece_start", pa.timestamp("us")),
    ("piece_end", pa.timestamp("us")),
]
_PIECES_SCHEMA = pa.schema(_PIECES_FIELDS)
_ROLLUP_TABLES = (("usage_hourly", "hour"), ("usage_daily_rollup", "day"))


@contextmanager
def _window_rollups(cursor: duckdb.DuckDBPyConnection, windows: Sequence[Window]) -> Iterator[tuple[str, list[object]]]:
    """A subquery of every window's rollup rows, as (tenant_id, window_start, the rollup columns), and its
    parameters; valid inside the `with`. Each window is cut into the pieces read from daily and hourly rows."""
    sealed = days_sealed_before(cursor)
    pieces: tuple[list[tuple[str, datetime, datetime, datetime]], ...] = ([], [])  # hourly, daily
    for tenant_id, start, end in windows:
        days, hours = split_window(start, end, sealed)
        pieces[0].extend((tenant_id, to_naive_utc(start), to_naive_utc(s), to_naive_utc(e)) for s, e in hours)
        if days:
            pieces[1].append((tenant_id, to_naive_utc(start), to_naive_utc(days[0]), to_naive_utc(days[1])))
    selects: list[str] = []
    params: list[object] = []
    registered: list[str] = []
    columns = ", ".join(f"u.{column}" for column in _ROLLUP_COLUMN_NAMES[1:])  # tenant_id comes from the piece
    for (table, bucket), table_pieces in zip(_ROLLUP_TABLES, pieces):
        if not table_pieces:
            continue
        name = f"{table}_pieces"
        # pyarrow-stubs type a column as a list; from_pydict takes any sequence (here zip's tuples).
        columns_by_name = dict(zip(_PIECES_SCHEMA.names, zip(*table_pieces)))
        cursor.register(name, pa.Table.from_pydict(columns_by_name, schema=_PIECES_SCHEMA))  # type: ignore[arg-type]
        registered.append(name)
        # The constant bounds let the scan skip row groups outside every piece (rollups lie in time order).
        selects.append(
            f"SELECT p.tenant_id, p.window_start, {columns} FROM {name} p JOIN {table} u "
            f"ON u.tenant_id = p.tenant_id AND u.{bucket} >= p.piece_start AND u.{bucket} < p.piece_end "
            f"WHERE u.{bucket} >= ? AND u.{bucket} < ?"
        )
        params += [min(piece[2] for piece in table_pieces), max(piece[3] for piece in table_pieces)]
    try:
        yield "(" + " UNION ALL ".join(selects) + ")", params
    finally:
        for name in registered:
            cursor.unregister(name)


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
    rollup row feeds one aggregate instead of all five.
    """
    if not windows:
        return {}
    by_aggregation: dict[Aggregation, list[str]] = {Aggregation.SUM: []}
    for metric, aggregation in aggregations.items():
        by_aggregation.setdefault(aggregation, []).append(metric)
    not_summed = [metric for metric, aggregation in aggregations.items() if aggregation is not Aggregation.SUM]
    with _window_rollups(cursor, windows) as (rows, rows_params):
        selects, params = [], []
        for aggregation, metrics in by_aggregation.items():
            if aggregation is Aggregation.SUM:  # every metric not aggregated otherwise
                wanted, listed = (
                    ("metric NOT IN (" + ", ".join("?" * len(not_summed)) + ")", not_summed)
                    if not_summed
                    else ("TRUE", [])
                )
            else:
                wanted, listed = "metric IN (" + ", ".join("?" * len(metrics)) + ")", metrics
            selects.append(
                f"SELECT tenant_id, window_start, metric, {_VALUE_SQL[aggregation]} AS value "
                f"FROM {rows} WHERE {wanted} GROUP BY ALL"
            )
            params += [*rows_params, *listed]
        found = cursor.execute(" UNION ALL ".join(selects), params).fetchall()
    result: dict[tuple[str, datetime], dict[str, Decimal]] = {}
    for tenant_id, window_start, metric, value in found:
        whole = aggregations.get(metric) in _WHOLE_NUMBERS
        result.setdefault((tenant_id, from_naive_utc(window_start)), {})[metric] = (
            Decimal(int(value)) if whole else value
        )
    return result


def aggregate_states_for_windows(
    cursor: duckdb.DuckDBPyConnection, windows: Sequence[Window]
) -> dict[tuple[str, str, datetime], AggregateState]:
    """Running aggregates (with the distinct user set) per (tenant, metric, window start).

    The ingestor seeds its in-memory quota counters from this at start.
    """
    if not windows:
        return {}
    with _window_rollups(cursor, windows) as (rows, params):
        found = cursor.execute(
            f"""
            SELECT tenant_id, metric, window_start,
                   sum(quantity_sum), sum(event_count), max(quantity_max),
                   max(latest_at), arg_max(latest_quantity, latest_at),
                   list(DISTINCT user_id) FILTER (WHERE user_id <> '')
            FROM {rows} GROUP BY ALL
            """,
            params,
        ).fetchall()
    return states_from_rows(found)


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


def daily_rollup_rows(cursor: duckdb.DuckDBPyConnection) -> int:
    return int(cursor.execute("SELECT count(*) FROM usage_daily_rollup").fetchall()[0][0])


def mark_rollups_compact(cursor: duckdb.DuckDBPyConnection, compact: bool) -> None:
    cursor.execute("UPDATE rollup_state SET compact = ?", [compact])


_BUCKETS = dict(_ROLLUP_TABLES)  # rollup table -> its time column


def compact_rollups(cursor: duckdb.DuckDBPyConnection, since: datetime, table: str = "usage_hourly") -> int:
    """Merge the delta rows of every (tenant, metric, user, bucket) from `since` on into one row each.

    `table` is usage_hourly or usage_daily_rollup. One transaction of its own.
    Ingest keeps appending meanwhile: rows it commits after this transaction
    began are not visible here, so they are neither deleted nor folded in (the
    next compaction takes them). Answers are the same before and after.
    Returns how many rows went.
    """
    bucket = _BUCKETS[table]
    with transaction(cursor):
        cursor.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rollup_fold AS
            SELECT tenant_id, metric, user_id, {bucket},
                   sum(quantity_sum) AS quantity_sum, max(quantity_max) AS quantity_max,
                   sum(event_count) AS event_count, max(latest_at) AS latest_at,
                   arg_max(latest_quantity, latest_at) AS latest_quantity, count(*) AS merged
            FROM {table} WHERE {bucket} >= ?
            GROUP BY ALL HAVING count(*) > 1
            """,
            [to_naive_utc(since)],
        )
        merged, groups = cursor.execute("SELECT coalesce(sum(merged), 0), count(*) FROM rollup_fold").fetchall()[0]
        if groups:
            cursor.execute(
                f"""
                DELETE FROM {table} u USING rollup_fold f
                WHERE u.{bucket} >= ? AND u.tenant_id = f.tenant_id AND u.metric = f.metric
                  AND u.user_id = f.user_id AND u.{bucket} = f.{bucket}
                """,
                [to_naive_utc(since)],
            )
            cursor.execute(
                f"INSERT INTO {table} SELECT tenant_id, metric, user_id, {bucket}, quantity_sum, quantity_max, "
                f"event_count, latest_at, latest_quantity FROM rollup_fold ORDER BY {bucket}"
            )
        cursor.execute("DROP TABLE rollup_fold")
    return int(merged) - int(groups)
