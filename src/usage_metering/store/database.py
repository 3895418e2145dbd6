"""Opening the store, a DuckDB file or a DuckLake: one connection per process, a cursor per thread."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import duckdb

from .file_format import NewerFileFormatError, is_newer_format_error
from .lake import LAKE_ALIAS, Lake, check_lake_schema, connect_lake, migrate_lake
from .migrations import apply_migrations

DEFAULT_DB_PATH = Path("data/metering.duckdb")
DEFAULT_LAKE_NODE_PATH = Path("data/lake-node")  # a node on a lake: its local files' prefix
# DuckDB's buffer pool defaults to 80% of the machine's memory and keeps every page it read or wrote
# until then, so a node's footprint would follow the history its ingest, reports and counter reloads
# touched. Past this limit DuckDB evicts, and large aggregations spill to a temp directory beside the
# file. With the key index's merges (ingest/dedup.py) and Python's heap, a node ingesting a 20M-event
# store peaks near 1 GB (bench/README.md); raise it for large reports.
DEFAULT_MEMORY_LIMIT = "512MB"
# DuckDB checkpoints (folds its WAL into the file) inside the commit that takes the WAL past this. Each
# checkpoint has a fixed cost besides its data: at DuckDB's 16MB, one every ~100k events cost sustained
# ingest ~10% against 64MB. A larger WAL is more to replay after a crash, and more committed rows held
# in memory until the next checkpoint.
CHECKPOINT_THRESHOLD = "64MB"


class StoreLockedError(RuntimeError):
    """The database file is held by another process (a running node)."""


def _lock_holder(message: str) -> str:
    match = re.search(r"PID (\d+)", message)
    return f" (process {match.group(1)})" if match else ""


def connect(
    path: str | Path, *, read_only: bool = False, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> duckdb.DuckDBPyConnection:
    """Open the file, turning DuckDB's lock error into a message that says what to do."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        config: dict[str, str | bool | int | float | list[str]] = (
            {"memory_limit": memory_limit}
            if read_only
            else {"memory_limit": memory_limit, "checkpoint_threshold": CHECKPOINT_THRESHOLD}
        )
        return duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.Error as exc:
        if is_newer_format_error(exc):
            raise NewerFileFormatError(path, str(exc)) from None
        if not isinstance(exc, duckdb.IOException) or "lock" not in str(exc).lower():
            raise
        raise StoreLockedError(
            f"{path} is held by another process{_lock_holder(str(exc))}: DuckDB allows one "
            "writer. Talk to the running node with --url http://HOST:PORT instead, or stop it."
        ) from exc


class Database:
    """The node's connection; each thread gets its own cursor (DuckDB cursors are not shared).

    With `lake`, the store is that DuckLake and `path` only names where this node
    keeps its own local files (the dedup key runs at `<path>.keys`, the webhook secret).
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_DB_PATH,
        *,
        read_only: bool = False,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        lake: Lake | None = None,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.lake = lake
        self._local = threading.local()
        if lake is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = connect_lake(lake, memory_limit=memory_limit, read_only=read_only)
            self.schema_version = check_lake_schema(self._con) if read_only else migrate_lake(self._con)
        else:
            self._con = connect(self.path, read_only=read_only, memory_limit=memory_limit)
            if not read_only:
                self.schema_version = apply_migrations(self._con)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._con.cursor()
            if self.lake is not None:  # a cursor starts in the default catalog, not the lake
                cursor.execute(f"USE {LAKE_ALIAS}")
            self._local.cursor = cursor
        return cursor

    def close(self) -> None:
        self._con.close()
