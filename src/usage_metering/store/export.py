"""Exporting events to Parquet, CSV or JSON lines with DuckDB's COPY.

The columns are the event format (tenant_id, metric, quantity, user_id,
event_id, timestamp, properties), so an export can be imported again as is.
Quantities stay exact: DECIMAL(38,9) in Parquet, plain decimal text in CSV and
JSON lines. Timestamps are UTC: TIMESTAMP WITH TIME ZONE in Parquet, RFC 3339
text ending in `Z` in CSV and JSON lines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

FORMATS = ("parquet", "csv", "jsonl")
PROGRESS_POLL_SECONDS = 0.1

_COPY_OPTIONS = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER", "jsonl": "FORMAT json"}
_TEXT_COLUMNS = (
    "tenant_id, metric, CAST(quantity AS VARCHAR) AS quantity, user_id, event_id, "
    "strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, properties"
)
_PARQUET_COLUMNS = "tenant_id, metric, quantity, user_id, event_id, timezone('UTC', ts) AS timestamp, properties"


@dataclass(frozen=True)
class EventFilter:
    """Events whose UTC day is in [start, end] (either open), optionally of one tenant."""

    start: date | None = None
    end: date | None = None
    tenant_id: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.start is not None:
            clauses.append("ts >= ?")
            params.append(self.start)
        if self.end is not None:
            clauses.append("ts < ?")
            params.append(self.end + timedelta(days=1))
        if self.tenant_id is not None:
            clauses.append("tenant_id = ?")
            params.append(self.tenant_id)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def export_sql(target: Path, fmt: str, selection: EventFilter) -> tuple[str, list[Any]]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    columns = _PARQUET_COLUMNS if fmt == "parquet" else _TEXT_COLUMNS
    where, params = selection.where()
    path = "'" + str(target).replace("'", "''") + "'"
    query = f"SELECT {columns} FROM events{where} ORDER BY ts, tenant_id, event_id"
    return f"COPY ({query}) TO {path} ({_COPY_OPTIONS[fmt]})", params


def export_events(
    cursor: duckdb.DuckDBPyConnection,
    target: str | Path,
    fmt: str,
    selection: EventFilter = EventFilter(),
    on_progress: Callable[[float], None] | None = None,
) -> int:
    """Write the selected events to `target`; returns the number of rows written.

    With `on_progress`, the COPY runs on a worker thread while this one polls
    DuckDB's query progress (0-100) and reports it.
    """
    sql, params = export_sql(Path(target), fmt, selection)
    if on_progress is None:
        return int(cursor.execute(sql, params).fetchone()[0])  # type: ignore[index]
    cursor.execute("SET enable_progress_bar = true")
    cursor.execute("SET enable_progress_bar_print = false")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["rows"] = int(cursor.execute(sql, params).fetchone()[0])  # type: ignore[index]
        except BaseException as exc:  # re-raised on the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="export", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(PROGRESS_POLL_SECONDS)
        progress = cursor.query_progress()
        if progress >= 0:
            on_progress(progress)
    if "error" in outcome:
        raise outcome["error"]
    on_progress(100.0)
    return int(outcome["rows"])
