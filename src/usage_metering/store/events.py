"""Writing events and their hourly rollups: columnar (Arrow) batches, one transaction.

The two statements every commit runs read their Arrow batch through DuckDB's
replacement scan (a local variable named in the SQL) rather than
`register`/`unregister`: registering creates and drops a view inside the
transaction, which cost ~1 ms per statement of a 32-event commit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from usage_metering.schemas import UsageEvent

from .timeutil import from_naive_utc, to_naive_utc

EventKey = tuple[str, str]  # (tenant_id, event_id)

# The 64-bit fingerprint of an event's key, in SQL (migrations, rebuilds) and in Python (ingest): the
# first 8 bytes of MD5("tenant_id/event_id") as a little-endian integer. "/" never occurs in an id
# (schemas/ids.py), so the text names one key. tests/test_event_keys.py checks that the two agree.
FINGERPRINT_SQL = "md5_number_upper(tenant_id || '/' || event_id)"


def event_fingerprint(tenant_id: str, event_id: str) -> int:
    digest = hashlib.md5(f"{tenant_id}/{event_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little")

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
        ("fingerprint", pa.uint64()),
    ]
)


def events_to_arrow(events: Sequence[UsageEvent], fingerprints: Sequence[int], received_at: datetime) -> pa.Table:
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
        fingerprints,
    ]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, EVENT_ARROW_SCHEMA)],
        schema=EVENT_ARROW_SCHEMA,
    )


def append_events(cursor: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    """Append new events. The table has no key: the ingestor decided that none of them is stored yet."""
    if batch.num_rows == 0:
        return
    incoming_events = batch  # noqa: F841 (read by name from this frame: DuckDB's replacement scan)
    cursor.execute("INSERT INTO events SELECT * FROM incoming_events")


# Rows are only ever appended to `events` (no update, no delete), so a rowid names one event for good;
# the dedup key index (consumer/dedup.py) keeps rowids to confirm a fingerprint match exactly.


def stored_event_rows(cursor: duckdb.DuckDBPyConnection) -> int:
    """How many rows `events` holds: the next rowid."""
    return int(cursor.execute("SELECT count(*) FROM events").fetchall()[0][0])


def fingerprint_at_row(cursor: duckdb.DuckDBPyConnection, row: int) -> int | None:
    found = cursor.execute("SELECT fingerprint FROM events WHERE rowid = ?", [row]).fetchall()
    return int(found[0][0]) if found else None


def fingerprints_in_rows(cursor: duckdb.DuckDBPyConnection, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(rowids, fingerprints) of rows start <= rowid < end, as numpy arrays (int64, uint64)."""
    columns = cursor.execute(
        "SELECT rowid, fingerprint FROM events WHERE rowid >= ? AND rowid < ?", [start, end]
    ).fetchnumpy()
    return np.asarray(columns["rowid"], dtype=np.int64), np.asarray(columns["fingerprint"], dtype=np.uint64)


def keys_from_row(cursor: duckdb.DuckDBPyConnection, start: int) -> list[EventKey]:
    rows = cursor.execute("SELECT tenant_id, event_id FROM events WHERE rowid >= ?", [start]).fetchall()
    return [(tenant_id, event_id) for tenant_id, event_id in rows]


def keys_at_rows(cursor: duckdb.DuckDBPyConnection, rows: Sequence[int]) -> set[EventKey]:
    found = cursor.execute("SELECT tenant_id, event_id FROM events WHERE rowid = ANY(?)", [list(rows)]).fetchall()
    return {(tenant_id, event_id) for tenant_id, event_id in found}


def select_rows(batch: pa.Table, mask: Sequence[bool]) -> pa.Table:
    return batch.filter(pa.array(mask, type=pa.bool_()))


@dataclass(frozen=True)
class RollupDelta:
    """What one ingest batch added to one (tenant, metric, user, hour) group; user_id '' is no user."""

    tenant_id: str
    metric: str
    user_id: str
    hour: datetime  # aware UTC
    quantity_sum: Decimal
    quantity_max: Decimal
    event_count: int
    latest_at: datetime  # aware UTC
    latest_quantity: Decimal


def rollup_deltas(events: Sequence[UsageEvent]) -> list[RollupDelta]:
    """What newly stored events add to each (tenant, metric, user, hour) group they touch: one delta per group.

    Folded here rather than by SQL over the batch: an aggregate over an Arrow scan costs
    DuckDB ~2 ms even for 32 events, and the ingestor needs the deltas in Python anyway.
    Call it with a context precision that cannot round 38-digit sums (the ingestor's).
    """
    groups: dict[tuple[str, str, str, datetime], list[Any]] = {}
    for event in events:
        key = (event.tenant_id, event.metric, event.user_id or "", event.timestamp.replace(minute=0, second=0, microsecond=0))
        group = groups.get(key)
        if group is None:
            groups[key] = [event.quantity, event.quantity, 1, event.timestamp, event.quantity]
            continue
        group[0] += event.quantity
        group[1] = max(group[1], event.quantity)
        group[2] += 1
        if event.timestamp >= group[3]:  # the latest event's quantity (ties: the later one in the batch)
            group[3], group[4] = event.timestamp, event.quantity
    return [RollupDelta(*key, *values) for key, values in groups.items()]


def append_rollup_deltas(cursor: duckdb.DuckDBPyConnection, deltas: Sequence[RollupDelta]) -> None:
    """Append a batch's rollup deltas to usage_hourly: no row is updated on the ingest path.

    Every reader folds a group's rows (sum, max, arg_max, count distinct), so
    several delta rows answer exactly as one; `compact_rollups` merges them later.
    One columnar insert; DuckDB reads `delta_rows` from this frame by name.
    """
    if not deltas:
        return
    decimal = pa.decimal128(38, 9)
    delta_rows = pa.table({  # noqa: F841 (read by DuckDB's replacement scan)
        "tenant_id": pa.array([d.tenant_id for d in deltas], pa.string()),
        "metric": pa.array([d.metric for d in deltas], pa.string()),
        "user_id": pa.array([d.user_id for d in deltas], pa.string()),
        "hour": pa.array([to_naive_utc(d.hour) for d in deltas], pa.timestamp("us")),
        "quantity_sum": pa.array([d.quantity_sum for d in deltas], decimal),
        "quantity_max": pa.array([d.quantity_max for d in deltas], decimal),
        "event_count": pa.array([d.event_count for d in deltas], pa.int64()),
        "latest_at": pa.array([to_naive_utc(d.latest_at) for d in deltas], pa.timestamp("us")),
        "latest_quantity": pa.array([d.latest_quantity for d in deltas], decimal),
    })
    cursor.execute("INSERT INTO usage_hourly SELECT * FROM delta_rows")
