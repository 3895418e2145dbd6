"""Keeping a DuckLake small and fast while nodes write it: DuckLake's own maintenance, safe during ingest.

Small commits land as rows inlined in the catalog or as small Parquet files;
old snapshots keep replaced files alive. A pass:

1. flushes inlined rows of the append-only tables to Parquet,
2. merges their adjacent small files,
3. expires snapshots older than `older_than`,
4. deletes the files those snapshots alone used, and orphan files (a write
   that never committed, say) older than `ORPHAN_MIN_AGE` at least: a file an
   ingest transaction wrote and has not committed yet looks orphaned too, and
   deleting it would lose that commit's rows.

Only the append-only tables (events, rollup deltas, dead letters) are flushed
and merged: in DuckLake these steps conflict with deletes from the same
table, never with appends, so ingest goes on; a step that still conflicts
(with another node's pass) is reported and tried again next time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import duckdb

from .lake import LAKE_ALIAS

log = logging.getLogger(__name__)

APPEND_ONLY_TABLES = ("events", "usage_hourly", "dead_letters")
DEFAULT_KEEP_SNAPSHOTS = timedelta(hours=24)  # time travel and long reads older than this may fail
ORPHAN_MIN_AGE = timedelta(hours=1)  # far longer than any write transaction runs


@dataclass
class MaintenanceReport:
    """What one pass did: rows per step (files merged, snapshots expired, ...) and the steps that failed."""

    done: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"done": dict(self.done), "failed": dict(self.failed)}


def _step(cursor: duckdb.DuckDBPyConnection, report: MaintenanceReport, name: str, sql: str) -> None:
    try:
        report.done[name] = int(cursor.execute(f"SELECT count(*) FROM {sql}").fetchall()[0][0])
    except duckdb.Error as exc:
        report.failed[name] = str(exc).strip().splitlines()[0]
        log.warning("lake maintenance step %s failed (tried again next pass): %s", name, report.failed[name])


def _ago(age: timedelta) -> str:
    return f"now() - INTERVAL '{int(age.total_seconds())} seconds'"


def maintain_lake(
    cursor: duckdb.DuckDBPyConnection, older_than: timedelta = DEFAULT_KEEP_SNAPSHOTS
) -> MaintenanceReport:
    report = MaintenanceReport()
    for table in APPEND_ONLY_TABLES:
        _step(cursor, report, f"flush {table}", f"ducklake_flush_inlined_data('{LAKE_ALIAS}', table_name => '{table}')")
        _step(cursor, report, f"merge {table}", f"ducklake_merge_adjacent_files('{LAKE_ALIAS}', '{table}')")
    cutoff = _ago(older_than)
    _step(cursor, report, "expire snapshots", f"ducklake_expire_snapshots('{LAKE_ALIAS}', older_than => {cutoff})")
    _step(cursor, report, "delete old files", f"ducklake_cleanup_old_files('{LAKE_ALIAS}', older_than => {cutoff})")
    _step(
        cursor,
        report,
        "delete orphaned files",
        f"ducklake_delete_orphaned_files('{LAKE_ALIAS}', older_than => {_ago(max(older_than, ORPHAN_MIN_AGE))})",
    )
    return report
