"""Dead letters: raw input that could not become an event, with the reason."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import duckdb
import pyarrow as pa
from pydantic import Field

from usage_metering.schemas import ValidationError
from usage_metering.schemas.wire import JsonShape, Timestamp

from .timeutil import from_naive_utc, utc_now_naive


@dataclass(frozen=True)
class DeadLetter:
    source: str  # 'kafka', 'http' or 'import'
    raw: bytes
    reason: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class StoredDeadLetter(JsonShape):
    """A dead letter as listed: `raw` as UTF-8 text (undecodable bytes replaced)."""

    id: int
    received_at: Timestamp
    source: Annotated[str, Field(description="kafka, http or import")]
    topic: str | None
    partition: int | None
    offset: int | None
    raw: str
    reason: str


class _LetterIds:
    """Dead-letter ids: microseconds since the epoch times 1,000 plus a count, increasing within a process.

    Ids are made here, not by a sequence (a DuckLake has none): they order letters by
    arrival on every node, and two nodes would have to record one in the same microsecond to collide.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0

    def take(self, count: int) -> list[int]:
        with self._lock:
            first = max(self._next, time.time_ns() // 1_000 * 1_000)
            self._next = first + count
        return list(range(first, first + count))


_letter_ids = _LetterIds()


def add_dead_letters(cursor: duckdb.DuckDBPyConnection, letters: Sequence[DeadLetter]) -> None:
    """One columnar insert (executemany would run a statement per letter); DuckDB reads `letter_rows` by name."""
    if not letters:
        return
    letter_rows = pa.table(  # noqa: F841 (read by name in the SQL below: a DuckDB replacement scan)
        {
            "id": pa.array(_letter_ids.take(len(letters)), pa.int64()),
            "received_at": pa.array([utc_now_naive()] * len(letters), pa.timestamp("us")),
            "source": pa.array([d.source for d in letters], pa.string()),
            "topic": pa.array([d.topic for d in letters], pa.string()),
            "partition": pa.array([d.partition for d in letters], pa.int32()),
            "offset": pa.array([d.offset for d in letters], pa.int64()),
            "raw": pa.array([d.raw for d in letters], pa.binary()),
            "reason": pa.array([d.reason for d in letters], pa.string()),
        }
    )
    cursor.execute(
        'INSERT INTO dead_letters (id, received_at, source, topic, partition, "offset", raw, reason) '
        "SELECT * FROM letter_rows"
    )


def list_dead_letters(cursor: duckdb.DuckDBPyConnection, limit: int = 100) -> list[StoredDeadLetter]:
    rows = cursor.execute(
        'SELECT id, received_at, source, topic, partition, "offset", raw, reason '
        "FROM dead_letters ORDER BY id DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [
        StoredDeadLetter(
            row[0],
            from_naive_utc(row[1]),
            row[2],
            row[3],
            row[4],
            row[5],
            bytes(row[6]).decode("utf-8", "replace"),
            row[7],
        )
        for row in rows
    ]


def dead_letter_reason(error: ValidationError) -> str:
    """A rejected input's reason as stored: `<code>: <field or ->: <message>`."""
    return f"{error.code}: {error.field or '-'}: {error.message}"
