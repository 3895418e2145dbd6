"""Source offsets (Kafka topic/partition -> next offset), stored with the rows they produced.

Each (topic, partition) has a table of its own, `source_offsets_<partition>_<topic hash>`,
holding one row. On a DuckLake a transaction that updates a table conflicts
with any other that writes it, so nodes owning different partitions must not
share one; a node that lost a partition (a zombie) and its new owner do share
it, and that conflict is the point.

- A **claim** (on assignment) makes the partition's table and row if they are
  missing, in a transaction of its own (two nodes making the same table
  conflict, and the loser finds it made), and reads the offset.
- Each **commit** moves the offset from the one its writer expects to the new
  one (compare-and-set). If another writer moved it since (the partition
  changed hands), the commit raises `PartitionLost` and stores nothing; on a
  lake, two commits racing for the row conflict on the table as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import duckdb

from .timeutil import utc_now_naive
from .transaction import transaction

PartitionKey = tuple[str, int]  # (topic, partition)

NOT_STARTED = -1  # a claimed partition nothing was committed from yet: read it from the beginning
_CLAIM_ATTEMPTS = 5


class PartitionLost(RuntimeError):
    """Another writer committed this partition's offset since ours was read: the partition changed hands."""

    def __init__(self, key: PartitionKey, expected: int | None) -> None:
        super().__init__(
            f"{key[0]}/{key[1]}: the stored offset is no longer {expected}; another consumer owns this partition now"
        )
        self.key = key


def _topic_tag(topic: str) -> str:
    return hashlib.md5(topic.encode()).hexdigest()[:8]


def offset_table(topic: str, partition: int) -> str:
    return f"source_offsets_{int(partition)}_{_topic_tag(topic)}"


def create_offset_table(cursor: duckdb.DuckDBPyConnection, topic: str, partition: int) -> str:
    table = offset_table(topic, partition)
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (topic VARCHAR NOT NULL, partition INTEGER NOT NULL, "
        "next_offset BIGINT NOT NULL, updated_at TIMESTAMP NOT NULL)"
    )
    return table


def _add_row(cursor: duckdb.DuckDBPyConnection, topic: str, partition: int, next_offset: int) -> None:
    table = create_offset_table(cursor, topic, partition)
    cursor.execute(
        f"INSERT INTO {table} SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM {table})",
        [topic, partition, next_offset, utc_now_naive()],
    )


def claim_offsets(cursor: duckdb.DuckDBPyConnection, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
    """Each partition's next offset (None: nothing committed yet), its table and row made first if missing."""
    partitions = sorted(set(partitions))
    missing = [p for p in partitions if not _exists(cursor, offset_table(topic, p))]
    for partition in missing:
        for attempt in range(_CLAIM_ATTEMPTS):
            try:
                with transaction(cursor):
                    _add_row(cursor, topic, partition, NOT_STARTED)
                break
            except (duckdb.TransactionException, duckdb.CatalogException):
                if attempt == _CLAIM_ATTEMPTS - 1:
                    raise
    stored = load_offsets(cursor, topic)
    return {p: stored.get(p) for p in partitions}


def save_offsets(
    cursor: duckdb.DuckDBPyConnection,
    next_offsets: Mapping[PartitionKey, int],
    expected: Mapping[PartitionKey, int | None],
) -> None:
    """Move each partition's offset from `expected[key]` (None: nothing committed yet) to `next_offsets[key]`.

    Every partition must have been claimed. One SELECT reads them all and raises `PartitionLost` where
    one moved; the UPDATEs then go as one script (half the cost of a statement each; they are separate
    tables). Within the transaction's snapshot that check is exact; a commit racing ours on a lake
    conflicts on the table instead.
    """
    if not next_offsets:
        return
    keys = list(next_offsets)
    read = " UNION ALL ".join(f"SELECT {i} AS key, next_offset FROM {offset_table(*key)}" for i, key in enumerate(keys))
    stored = dict(cursor.execute(read).fetchall())
    for i, key in enumerate(keys):
        was = expected[key]
        if stored.get(i) != (NOT_STARTED if was is None else was):
            raise PartitionLost(key, was)
    now = utc_now_naive().isoformat(sep=" ")
    cursor.execute(
        "; ".join(
            f"UPDATE {offset_table(*key)} SET next_offset = {int(next_offsets[key])}, updated_at = TIMESTAMP '{now}'"
            for key in keys
        )
    )


def _exists(cursor: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        cursor.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?", [table]
        ).fetchall()[0][0]
    )


def load_offsets(cursor: duckdb.DuckDBPyConnection, topic: str) -> dict[int, int]:
    """The next offset stored per partition of `topic` (partitions nothing was committed from are left out)."""
    tables = [
        name
        for (name,) in cursor.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND table_name LIKE ?",
            [f"source_offsets_%_{_topic_tag(topic)}"],
        ).fetchall()
    ]
    if not tables:
        return {}
    rows = cursor.execute(
        " UNION ALL ".join(f"SELECT partition, next_offset FROM {table} WHERE topic = ?" for table in tables),
        [topic] * len(tables),
    ).fetchall()
    return {int(partition): int(offset) for partition, offset in rows if offset != NOT_STARTED}
