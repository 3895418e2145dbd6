"""Source offsets (Kafka topic/partition -> next offset), stored with the rows they produced."""

from __future__ import annotations

from typing import Mapping

import duckdb
import pyarrow as pa

from .timeutil import utc_now_naive

PartitionKey = tuple[str, int]  # (topic, partition)


def save_offsets(cursor: duckdb.DuckDBPyConnection, next_offsets: Mapping[PartitionKey, int]) -> None:
    """Upsert every partition's next offset in one columnar statement.

    executemany runs one statement per partition (~3 ms each with 12 partitions
    on this machine); DuckDB reads `offset_rows` from this frame by name.
    """
    if not next_offsets:
        return
    keys = list(next_offsets)
    offset_rows = pa.table({  # noqa: F841 (read by DuckDB's replacement scan)
        "topic": pa.array([topic for topic, _ in keys], pa.string()),
        "partition": pa.array([partition for _, partition in keys], pa.int32()),
        "next_offset": pa.array([next_offsets[key] for key in keys], pa.int64()),
        "updated_at": pa.array([utc_now_naive()] * len(keys), pa.timestamp("us")),
    })
    cursor.execute(
        "INSERT INTO source_offsets SELECT * FROM offset_rows "
        "ON CONFLICT DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at"
    )


def load_offsets(cursor: duckdb.DuckDBPyConnection, topic: str) -> dict[int, int]:
    rows = cursor.execute(
        "SELECT partition, next_offset FROM source_offsets WHERE topic = ?", [topic]
    ).fetchall()
    return {int(partition): int(offset) for partition, offset in rows}
