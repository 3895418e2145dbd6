"""Sealed days: whole UTC days of hourly rollups folded into `usage_daily_rollup`.

A report over a month reads a row per user and day from the daily table instead of
up to 24 from `usage_hourly`. The invariant: for every day before
`rollup_state.days_sealed_before`, the daily rows fold to exactly what that
day's hourly rows fold to. Sealing a day (one transaction: its fold, then the
mark) keeps it; so does ingest, which appends a daily delta beside the hourly
one for any event of an already sealed day. `usage_hourly` stays complete, so
hourly questions and a reader that saw an older mark still answer exactly.

Sealing must not run beside an ingest commit: a row committed for the day
after the fold read it would be in neither place. The writer's lock keeps
them apart (ingest/compactor.py); a lake, with writers on other nodes, is
never sealed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .timeutil import from_naive_utc, to_naive_utc
from .transaction import transaction

DAY = timedelta(days=1)


def start_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def days_sealed_before(cursor: duckdb.DuckDBPyConnection) -> datetime | None:
    """The first day not sealed (aware UTC midnight); None when no day is."""
    try:
        found = cursor.execute("SELECT days_sealed_before FROM rollup_state").fetchall()
    except (duckdb.BinderException, duckdb.CatalogException):  # a file opened read-only, older than the column
        return None
    return from_naive_utc(found[0][0]) if found and found[0][0] is not None else None


def first_day_with_usage(cursor: duckdb.DuckDBPyConnection, since: datetime | None = None) -> datetime | None:
    """The first day with hourly rollups from `since` on (all of history when None)."""
    found = cursor.execute(
        "SELECT min(hour) FROM usage_hourly WHERE hour >= ?", [to_naive_utc(since) if since else datetime.min]
    ).fetchall()[0][0]
    return None if found is None else start_of_day(from_naive_utc(found))


def seal_day(cursor: duckdb.DuckDBPyConnection, day: datetime) -> int:
    """Fold `day`'s hourly rows into daily rows and mark every day up to it sealed; returns the rows written.

    The caller seals in order, each time the first day with usage at or after the mark (the days
    skipped have no rows, so they are sealed as they are), and keeps ingest out meanwhile.
    """
    start, end = to_naive_utc(day), to_naive_utc(day + DAY)
    with transaction(cursor):
        written = cursor.execute(
            """
            INSERT INTO usage_daily_rollup
            SELECT tenant_id, metric, user_id, ?::TIMESTAMP, sum(quantity_sum), max(quantity_max),
                   sum(event_count), max(latest_at), arg_max(latest_quantity, latest_at)
            FROM usage_hourly WHERE hour >= ? AND hour < ?
            GROUP BY tenant_id, metric, user_id ORDER BY tenant_id, metric, user_id
            """,
            [start, start, end],
        ).fetchall()[0][0]
        cursor.execute("UPDATE rollup_state SET days_sealed_before = ?", [end])
    return int(written)


def append_late_day_deltas(cursor: duckdb.DuckDBPyConnection, rollups: pa.Table, sealed_before: datetime) -> int:
    """Also count a batch's hourly rollup rows of sealed days (hour < `sealed_before`) in their day; returns
    the rows appended.

    `rollups` holds usage_hourly's columns (ingest/folds.py); runs in the ingest transaction. The rows are
    picked and moved to their day in Arrow, so DuckDB only appends (no bound parameter, no filter).
    """
    cutoff = pa.scalar(to_naive_utc(sealed_before), rollups.schema.field("hour").type)
    late = rollups.filter(pc.less(rollups["hour"], cutoff))
    if late.num_rows == 0:
        return 0
    late_days = late.set_column(3, "day", pc.floor_temporal(late["hour"], unit="day"))  # noqa: F841 (SQL below)
    cursor.execute("INSERT INTO usage_daily_rollup SELECT * FROM late_days")
    return late.num_rows


def split_window(
    start: datetime, end: datetime, sealed_before: datetime | None
) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """[start, end) as (the whole sealed days in it, read from daily rows; the rest, read from hourly rows)."""
    if sealed_before is None:
        return None, [(start, end)]
    first = start_of_day(start)
    if first < start:
        first += DAY
    last = min(start_of_day(end), sealed_before)
    if first >= last:
        return None, [(start, end)]
    return (first, last), [(s, e) for s, e in ((start, first), (last, end)) if s < e]
