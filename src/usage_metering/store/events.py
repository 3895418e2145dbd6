"""Writing events and their hourly rollups: columnar (Arrow) batches, one transaction.

The two statements every commit runs read their Arrow batch through DuckDB's
replacement scan (a local variable named in the SQL) rather than
`register`/`unregister`: registering creates and drops a view inside the
transaction, which cost ~1 ms per statement of a 32-event commit.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable, Sequence

import duckdb
import pyarrow as pa

from usage_metering.schemas import UsageEvent

from .timeutil import to_naive_utc

EventKey = tuple[str, str]  # (tenant_id, event_id)

EVENT_ARROW_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("event_id", pa.string()),
        ("metric", pa.string()),
        ("quantity", pa.decimal128(38, 9)),
        ("user_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("properties", pa.string()),
        ("received_at", pa.timestamp("us")),
    ]
)


def events_to_arrow(events: Sequence[UsageEvent], received_at: datetime) -> pa.Table:
    received = to_naive_utc(received_at)
    columns = [
        [e.tenant_id for e in events],
        [e.event_id for e in events],
        [e.metric for e in events],
        [e.quantity for e in events],
        [e.user_id for e in events],
        [e.timestamp.replace(tzinfo=None) for e in events],  # parse_event gives UTC
        [None if e.properties is None else json.dumps(e.properties, separators=(",", ":")) for e in events],
        [received] * len(events),
    ]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, EVENT_ARROW_SCHEMA)],
        schema=EVENT_ARROW_SCHEMA,
    )


def insert_new_events(cursor: duckdb.DuckDBPyConnection, batch: pa.Table) -> set[EventKey]:
    """Insert rows whose (tenant_id, event_id) is not stored yet; return the keys inserted.

    The primary key decides: a key already stored (from any earlier batch, ever)
    is skipped by ON CONFLICT DO NOTHING, so it is not in the returned set.
    `batch` must not repeat a key.
    """
    incoming_events = batch  # read by name from this frame (DuckDB's replacement scan), see below
    rows = cursor.execute(
        "INSERT INTO events SELECT * FROM incoming_events ON CONFLICT DO NOTHING RETURNING tenant_id, event_id"
    ).fetchall()
    return {(tenant_id, event_id) for tenant_id, event_id in rows}


def delete_events(cursor: duckdb.DuckDBPyConnection, keys: Iterable[EventKey]) -> None:
    keys = list(keys)
    if not keys:
        return
    table = pa.table({"tenant_id": [k[0] for k in keys], "event_id": [k[1] for k in keys]})
    cursor.register("doomed_events", table)
    try:
        cursor.execute(
            "DELETE FROM events USING doomed_events d "
            "WHERE events.tenant_id = d.tenant_id AND events.event_id = d.event_id"
        )
    finally:
        cursor.unregister("doomed_events")


def select_rows(batch: pa.Table, mask: Sequence[bool]) -> pa.Table:
    return batch.filter(pa.array(mask, type=pa.bool_()))


def append_rollup_deltas(cursor: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    """Append what a batch of newly stored events adds to usage_hourly: no row is updated on the ingest path.

    One delta row per (tenant, metric, user, hour) the batch touches. Every
    reader folds a group's rows (sum, max, arg_max, count distinct), so several
    delta rows answer exactly as one; `compact_rollups` merges them later.
    """
    if batch.num_rows == 0:
        return
    rollup_input = batch  # read by name from this frame (DuckDB's replacement scan), see below
    cursor.execute(
        """
        INSERT INTO usage_hourly
        SELECT tenant_id, metric, coalesce(user_id, '') AS user_id, date_trunc('hour', ts) AS hour,
               sum(quantity), max(quantity), count(*), max(ts), arg_max(quantity, ts)
        FROM rollup_input
        GROUP BY ALL
        """
    )
