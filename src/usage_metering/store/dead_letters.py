"""Dead letters: raw input that could not become an event, with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Sequence

import duckdb
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


def add_dead_letters(cursor: duckdb.DuckDBPyConnection, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    now = utc_now_naive()
    cursor.executemany(
        'INSERT INTO dead_letters (received_at, source, topic, partition, "offset", raw, reason) '
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [[now, d.source, d.topic, d.partition, d.offset, d.raw, d.reason] for d in letters],
    )


def list_dead_letters(cursor: duckdb.DuckDBPyConnection, limit: int = 100) -> list[StoredDeadLetter]:
    rows = cursor.execute(
        'SELECT id, received_at, source, topic, partition, "offset", raw, reason '
        "FROM dead_letters ORDER BY id DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [
        StoredDeadLetter(
            row[0], from_naive_utc(row[1]), row[2], row[3], row[4], row[5], bytes(row[6]).decode("utf-8", "replace"),
            row[7],
        )
        for row in rows
    ]


def dead_letter_reason(error: ValidationError) -> str:
    """A rejected input's reason as stored: `<code>: <field or ->: <message>`."""
    return f"{error.code}: {error.field or '-'}: {error.message}"
