"""Writing events and their hourly rollups: columnar (Arrow) batches, one transaction."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable, Sequence

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
    cursor.register("incoming_events", batch)
    try:
        rows = cursor.execute(
            "INSERT INTO events SELECT * FROM incoming_events "
            "ON CONFLICT DO NOTHING RETURNING tenant_id, event_id"
        ).fetchall()
    finally:
        cursor.unregister("incoming_events")
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


ROLLUP_ARROW_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("metric", pa.string()),
        ("user_id", pa.string()),
        ("hour", pa.timestamp("us")),
        ("quantity_sum", pa.decimal128(38, 9)),
        ("quantity_max", pa.decimal128(38, 9)),
        ("event_count", pa.int64()),
        ("latest_at", pa.timestamp("us")),
        ("latest_quantity", pa.decimal128(38, 9)),
    ]
)


def rollup_deltas(events: Sequence[UsageEvent]) -> pa.Table:
    """One usage_hourly row per (tenant, metric, user, hour) the batch touches: what it adds there.

    Folded in Python: a batch touches few groups, and a plain INSERT of the
    result costs a fraction of an upsert. Quantities are exact Decimals; the
    caller's decimal context must be wide enough for the sums (the ingestor's is).
    """
    groups: dict[tuple[str, str, str, datetime], list[Any]] = {}
    for event in events:
        at = event.timestamp.replace(tzinfo=None)
        key = (event.tenant_id, event.metric, event.user_id or "", at.replace(minute=0, second=0, microsecond=0))
        group = groups.get(key)
        if group is None:
            groups[key] = [event.quantity, event.quantity, 1, at, event.quantity]
            continue
        group[0] += event.quantity
        group[1] = max(group[1], event.quantity)
        group[2] += 1
        if at >= group[3]:  # the later event (on a tie, the later in the batch) is the latest
            group[3], group[4] = at, event.quantity
    rows = [(*key, *values) for key, values in groups.items()]
    columns = list(zip(*rows)) if rows else [[] for _ in ROLLUP_ARROW_SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(column, type=f.type) for column, f in zip(columns, ROLLUP_ARROW_SCHEMA)],
        schema=ROLLUP_ARROW_SCHEMA,
    )


def append_rollup_deltas(cursor: duckdb.DuckDBPyConnection, deltas: pa.Table) -> None:
    """Append a batch's rollup deltas to usage_hourly: no row is updated on the ingest path.

    Every reader folds the rows of a group (sum, max, arg_max, count distinct),
    so several delta rows answer exactly as one; `compact_rollups` merges them later.
    """
    if deltas.num_rows == 0:
        return
    cursor.register("rollup_deltas", deltas)
    try:
        cursor.execute("INSERT INTO usage_hourly SELECT * FROM rollup_deltas")
    finally:
        cursor.unregister("rollup_deltas")
