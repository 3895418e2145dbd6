"""Publishing a read-only snapshot of the database for analysts.

The node is DuckDB's one writer, so analysts cannot open the main file while
it runs. Instead the node copies the whole database (tables, views, sequences)
into a separate DuckDB file and atomically renames it into place:

    ATTACH '<dir>/.<name>.tmp-<pid>-<n>' AS snapshot_<n>
    BEGIN; COPY FROM DATABASE <main> TO snapshot_<n>; COMMIT
    CHECKPOINT snapshot_<n>; DETACH snapshot_<n>
    os.replace(tmp, target)

Consistency comes from DuckDB's MVCC: the copy runs in ONE transaction, which
reads every table as of the same committed state. Each ingest batch commits
in one transaction too, so the snapshot holds whole batches only (events and
rollups agree) and the writer never waits for the copy.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .transaction import transaction

SNAPSHOT_SUFFIX = ".snapshot.duckdb"
_counter = itertools.count(1)
_counter_lock = threading.Lock()


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    seconds: float  # time the copy took (the writer keeps committing meanwhile)
    events: int  # rows in the snapshot's events table


def default_snapshot_path(db_path: str | Path) -> Path:
    """`<dir>/<db stem>.snapshot.duckdb`, next to the database file."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + SNAPSHOT_SUFFIX)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _remove(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def _copy_into(cursor: duckdb.DuckDBPyConnection, temp: Path, alias: str) -> int:
    """COPY FROM DATABASE in one transaction into a freshly attached file; returns the event count."""
    source = str(cursor.execute("SELECT current_database()").fetchall()[0][0])
    cursor.execute(f"ATTACH {_sql_string(str(temp))} AS {_identifier(alias)}")
    try:
        with transaction(cursor):
            cursor.execute(f"COPY FROM DATABASE {_identifier(source)} TO {_identifier(alias)}")
        events = int(cursor.execute(f"SELECT count(*) FROM {_identifier(alias)}.events").fetchall()[0][0])
        cursor.execute(f"CHECKPOINT {_identifier(alias)}")  # everything in the file, no .wal left
        return events
    finally:
        cursor.execute(f"DETACH {_identifier(alias)}")


def write_snapshot(cursor: duckdb.DuckDBPyConnection, target: str | Path) -> SnapshotInfo:
    """Copy the cursor's database into `target`, replacing it atomically.

    `cursor` must not be in a transaction and must be used by this thread only.
    A failed copy leaves the previous snapshot in place and no temp file behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _counter_lock:
        number = next(_counter)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{number}")
    _remove(temp)
    started = time.perf_counter()
    try:
        events = _copy_into(cursor, temp, f"snapshot_{os.getpid()}_{number}")
        os.replace(temp, target)
    finally:
        _remove(temp)  # after a failure; or a stray .wal after success
    return SnapshotInfo(target, time.perf_counter() - started, events)
