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
from typing import Collection, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from usage_metering.schemas import UsageEvent

from .timeutil import from_naive_utc

EventKey = tuple[str, str]  # (tenant_id, event_id)

# The 64-bit fingerprint of an event's key, in SQL (migrations, rebuilds) and in Python (ingest): the
# first 8 bytes of MD5("tenant_id/event_id") as a little-endian integer. "/" never occurs in an id
# (schemas/ids.py), so the text names one key. tests/test_event_keys.py checks that the two agree.
FINGERPRINT_SQL = "md5_number_upper(tenant_id || '/' || event_id)"


def event_fingerprint(tenant_id: str, event_id: str) -> int:
    digest = hashlib.md5(f"{tenant_id}/{event_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little")

_DECIMAL = pa.decimal128(38, 9)
_TIMESTAMP = pa.timestamp("us")  # naive UTC, as DuckDB's TIMESTAMP columns hold it

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
    """The events' rows, one column at a time (timestamps arrive aware UTC and are stored naive UTC)."""
    utc = pa.timestamp("us", tz="UTC")
    columns = [
        pa.array([e.tenant_id for e in events], pa.string()),
        pa.array([e.event_id for e in events], pa.string()),
        pa.array([e.metric for e in events], pa.string()),
        pa.array([e.quantity for e in events], _DECIMAL),
        pa.array([e.user_id for e in events], pa.string()),
        pa.array([e.timestamp for e in events], utc).cast(_TIMESTAMP),
        pa.array([None if e.properties is None else json.dumps(e.properties, separators=(",", ":")) for e in events],
                 pa.string()),
        pa.repeat(pa.scalar(received_at, utc), len(events)).cast(_TIMESTAMP),
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


ROLLUP_ARROW_SCHEMA = pa.schema(  # usage_hourly's columns, in order
    [
        ("tenant_id", pa.string()),
        ("metric", pa.string()),
        ("user_id", pa.string()),  # '' is no user
        ("hour", _TIMESTAMP),
        ("quantity_sum", _DECIMAL),
        ("quantity_max", _DECIMAL),
        ("event_count", pa.int64()),
        ("latest_at", _TIMESTAMP),
        ("latest_quantity", _DECIMAL),
    ]
)


def _time_ordered(batch: pa.Table) -> pa.Table:
    """The rows a fold needs (user '' for none, the hour, the position in the batch), sorted by (ts, position)."""
    rows = pa.table({
        "tenant_id": batch["tenant_id"],
        "metric": batch["metric"],
        "user_id": pc.fill_null(batch["user_id"], ""),
        "hour": pc.floor_temporal(batch["ts"], unit="hour"),
        "quantity": batch["quantity"],
        "ts": batch["ts"],
        "position": pa.array(np.arange(batch.num_rows, dtype=np.int64)),
    })
    return rows.sort_by([("ts", "ascending"), ("position", "ascending")])


def _fold(rows: pa.Table, quantities: pa.ChunkedArray, keys: list[str]) -> pa.Table:
    """Per group of `keys`: sum, max and count of quantity, the latest time and the quantity then (ties:
    the later event in the batch, as `rows` are in (ts, position) order and "last" follows it on one thread).
    `quantities` is the batch's column, in batch order."""
    folded = rows.group_by(keys, use_threads=False).aggregate(
        [("quantity", "sum"), ("quantity", "max"), ("quantity", "count"), ("ts", "max"), ("position", "last")]
    )
    return pa.table({
        **{key: folded[key] for key in keys},
        "quantity_sum": folded["quantity_sum"].cast(_DECIMAL),
        "quantity_max": folded["quantity_max"],
        "event_count": folded["quantity_count"],
        "latest_at": folded["ts_max"],
        "latest_quantity": quantities.take(folded["position_last"]),
    })


@dataclass(frozen=True)
class BatchFolds:
    """What a batch of new events adds, folded by Arrow's group-by (in C++, not per event in Python)."""

    rollups: pa.Table  # per (tenant, metric, user, hour): rows for usage_hourly (ROLLUP_ARROW_SCHEMA)
    hourly: pa.Table  # per (tenant, metric, hour): the same without the user, for the quota counters

    def hourly_rows(self) -> list[tuple[str, str, datetime, Decimal, Decimal, int, datetime, Decimal]]:
        """(tenant, metric, hour, sum, max, count, latest_at, latest quantity), times aware UTC."""
        columns = [self.hourly[name].to_pylist() for name in self.hourly.column_names]
        return [
            (tenant, metric, from_naive_utc(hour), total, maximum, count, from_naive_utc(latest_at), latest)
            for tenant, metric, hour, total, maximum, count, latest_at, latest in zip(*columns)
        ]

    def users_by_hour(self, metrics: Collection[str]) -> dict[tuple[str, str, datetime], list[str]]:
        """The users seen per (tenant, metric, hour), for `metrics` only (those counting unique users)."""
        rows = self.rollups.filter(pc.and_(pc.is_in(self.rollups["metric"], pa.array(list(metrics), pa.string())),
                                           pc.not_equal(self.rollups["user_id"], "")))
        grouped = rows.group_by(["tenant_id", "metric", "hour"], use_threads=False).aggregate([("user_id", "list")])
        columns = [grouped[name].to_pylist() for name in ("tenant_id", "metric", "hour", "user_id_list")]
        return {(tenant, metric, from_naive_utc(hour)): users for tenant, metric, hour, users in zip(*columns)}


def fold_batch(batch: pa.Table) -> BatchFolds:
    """Fold a batch of new events (EVENT_ARROW_SCHEMA) into rollup rows and per-hour totals."""
    rows = _time_ordered(batch)
    rollups = _fold(rows, batch["quantity"], ["tenant_id", "metric", "user_id", "hour"])
    return BatchFolds(rollups.cast(ROLLUP_ARROW_SCHEMA), _fold(rows, batch["quantity"], ["tenant_id", "metric", "hour"]))


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
