"""Writing events and their hourly rollups: columnar (Arrow) batches, one transaction.

The two statements every commit runs read their Arrow batch through DuckDB's
replacement scan (a local variable named in the SQL) rather than
`register`/`unregister`: registering creates and drops a view inside the
transaction, a cost a small commit would pay per statement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from usage_metering.schemas import UsageEvent

EventKey = tuple[str, str]  # (tenant_id, event_id)

# The 64-bit fingerprint of an event's key, in SQL (migrations, rebuilds) and in Python (ingest): the
# first 8 bytes of MD5("tenant_id/event_id") as a little-endian integer. "/" never occurs in an id
# (schemas/ids.py), so the text names one key. tests/test_event_keys.py checks that the two agree.
FINGERPRINT_SQL = "md5_number_upper(tenant_id || '/' || event_id)"


def event_fingerprint(tenant_id: str, event_id: str) -> int:
    digest = hashlib.md5(f"{tenant_id}/{event_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little")


DECIMAL = pa.decimal128(38, 9)
TIMESTAMP = pa.timestamp("us")  # naive UTC, as DuckDB's TIMESTAMP columns hold it
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

_EVENT_FIELDS: list[tuple[str, pa.DataType]] = [
    ("tenant_id", pa.string()),
    ("event_id", pa.string()),
    ("metric", pa.string()),
    ("quantity", DECIMAL),
    ("user_id", pa.string()),
    ("ts", TIMESTAMP),
    ("properties", pa.string()),
    ("received_at", TIMESTAMP),
    ("fingerprint", pa.uint64()),
]
EVENT_ARROW_SCHEMA = pa.schema(_EVENT_FIELDS)


def events_to_arrow(events: Sequence[UsageEvent], fingerprints: Sequence[int], received_at: datetime) -> pa.Table:
    """The events' rows, one column at a time (timestamps arrive aware UTC and are stored naive UTC)."""
    columns: list[pa.Array[Any]] = [
        pa.array([e.tenant_id for e in events], pa.string()),
        pa.array([e.event_id for e in events], pa.string()),
        pa.array([e.metric for e in events], pa.string()),
        pa.array([e.quantity for e in events], DECIMAL),
        pa.array([e.user_id for e in events], pa.string()),
        pa.array([e.timestamp for e in events], UTC_TIMESTAMP).cast(TIMESTAMP),
        pa.array(
            [None if e.properties is None else json.dumps(e.properties, separators=(",", ":")) for e in events],
            pa.string(),
        ),
        pa.repeat(pa.scalar(received_at, UTC_TIMESTAMP), len(events)).cast(TIMESTAMP),
        pa.array(fingerprints, pa.uint64()),
    ]
    return pa.Table.from_arrays(columns, schema=EVENT_ARROW_SCHEMA)


def append_events(cursor: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    """Append new events. The table has no key: the ingestor decided that none of them is stored yet."""
    if batch.num_rows == 0:
        return
    incoming_events = batch  # noqa: F841 (read by name from this frame: DuckDB's replacement scan)
    cursor.execute("INSERT INTO events SELECT * FROM incoming_events")


# Rows are only ever appended to `events` (no update, no delete), so a rowid names one event for good;
# the dedup key index (ingest/dedup.py) keeps rowids to confirm a fingerprint match exactly.


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


def append_rollup_deltas(cursor: duckdb.DuckDBPyConnection, rollups: pa.Table) -> None:
    """Append a batch's rollup rows to usage_hourly: no row is updated on the ingest path.

    Every reader folds a group's rows (sum, max, arg_max, count distinct), so
    several delta rows answer exactly as one; `compact_rollups` merges them later.
    One columnar insert; DuckDB reads `delta_rows` from this frame by name.
    """
    if rollups.num_rows == 0:
        return
    delta_rows = rollups  # noqa: F841 (read by DuckDB's replacement scan)
    cursor.execute("INSERT INTO usage_hourly SELECT * FROM delta_rows")
