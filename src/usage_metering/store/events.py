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
from typing import Sequence

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


def append_rollup_deltas(cursor: duckdb.DuckDBPyConnection, batch: pa.Table) -> list[RollupDelta]:
    """Append what a batch of newly stored events adds to usage_hourly, and return those delta rows.

    One delta row per (tenant, metric, user, hour) the batch touches: no row is
    updated on the ingest path. Every reader folds a group's rows (sum, max,
    arg_max, count distinct), so several delta rows answer exactly as one;
    `compact_rollups` merges them later. The ingestor adds the returned deltas
    to its quota counters, a few rows instead of every event.
    """
    if batch.num_rows == 0:
        return []
    rollup_input = batch  # noqa: F841 (read by name from this frame: DuckDB's replacement scan)
    rows = cursor.execute(
        """
        INSERT INTO usage_hourly
        SELECT tenant_id, metric, coalesce(user_id, '') AS user_id, date_trunc('hour', ts) AS hour,
               sum(quantity), max(quantity), count(*), max(ts), arg_max(quantity, ts)
        FROM rollup_input
        GROUP BY ALL
        RETURNING *
        """
    ).fetchall()
    return [
        RollupDelta(tenant, metric, user, from_naive_utc(hour), total, maximum, count, from_naive_utc(latest_at), latest)
        for tenant, metric, user, hour, total, maximum, count, latest_at, latest in rows
    ]
