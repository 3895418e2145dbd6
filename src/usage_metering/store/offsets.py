"""Source offsets (Kafka topic/partition -> next offset), stored with the rows they produced."""

from __future__ import annotations

from typing import Mapping

import duckdb

from .timeutil import utc_now_naive

PartitionKey = tuple[str, int]  # (topic, partition)


def save_offsets(cursor: duckdb.DuckDBPyConnection, next_offsets: Mapping[PartitionKey, int]) -> None:
    if not next_offsets:
        return
    now = utc_now_naive()
    cursor.executemany(
        """
        INSERT INTO source_offsets VALUES (?, ?, ?, ?)
        ON CONFLICT DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at
        """,
        [[topic, partition, offset, now] for (topic, partition), offset in next_offsets.items()],
    )


def load_offsets(cursor: duckdb.DuckDBPyConnection, topic: str) -> dict[int, int]:
    rows = cursor.execute(
        "SELECT partition, next_offset FROM source_offsets WHERE topic = ?", [topic]
    ).fetchall()
    return {int(partition): int(offset) for partition, offset in rows}
