"""Which node owns which Kafka partition: a row appended on every claim, the latest per partition wins.

Appended, never updated: on a DuckLake, claims by several nodes at once then
never conflict with each other.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
import pyarrow as pa

from .timeutil import utc_now_naive


def record_owner(
    cursor: duckdb.DuckDBPyConnection, topic: str, partitions: Iterable[int], node_url: str | None
) -> None:
    partitions = list(partitions)
    if not partitions:
        return
    owner_rows = pa.table(  # noqa: F841 (read by name in the SQL below: a DuckDB replacement scan)
        {
            "topic": pa.array([topic] * len(partitions), pa.string()),
            "partition": pa.array(partitions, pa.int32()),
            "node_url": pa.array([node_url] * len(partitions), pa.string()),
            "claimed_at": pa.array([utc_now_naive()] * len(partitions), pa.timestamp("us")),
        }
    )
    cursor.execute("INSERT INTO partition_owners SELECT * FROM owner_rows")


def load_owners(cursor: duckdb.DuckDBPyConnection, topic: str) -> dict[int, str | None]:
    """The node URL that last claimed each partition of `topic` (None: a node without HTTP)."""
    rows = cursor.execute(
        "SELECT partition, node_url FROM partition_owners WHERE topic = ? "
        "QUALIFY row_number() OVER (PARTITION BY partition ORDER BY claimed_at DESC) = 1",
        [topic],
    ).fetchall()
    return {int(partition): url for partition, url in rows}
