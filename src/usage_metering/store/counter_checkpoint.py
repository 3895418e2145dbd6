"""The quota counters saved with how many events they count, so a start folds in only newer events.

Rebuilding the counters from the rollups reads two billing periods of them;
at 100M stored events that is most of the store. The writer saves its
published counters now and then with `covered_rows` (events are append-only,
so rowid < covered_rows is exactly what they count); a start loads them and
aggregates only the events appended since. A window the checkpoint did not
track (a new billing period, a tenant whose tracking began later) comes from
the rollups as before. Written off the ingest path, in its own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from usage_metering.schemas import AggregateState

from .timeutil import from_naive_utc, to_naive_utc, utc_now_naive
from .transaction import transaction
from .usage import Window, states_from_rows, windows_table

StateKey = tuple[str, str, datetime]  # (tenant_id, metric, period start)


@dataclass(frozen=True)
class CounterCheckpoint:
    covered_rows: int  # the states count exactly the events with rowid < covered_rows
    tracked_from: dict[str, datetime]  # per tenant, the first period counted (absent: every period)
    states: dict[StateKey, AggregateState]

    def tracks(self, tenant_id: str, period_start: datetime) -> bool:
        tracked_from = self.tracked_from.get(tenant_id)
        return tracked_from is None or period_start >= tracked_from


def save_checkpoint(cursor: duckdb.DuckDBPyConnection, checkpoint: CounterCheckpoint) -> None:
    keys = list(checkpoint.states)
    states = [checkpoint.states[key] for key in keys]
    checkpoint_states = pa.table(  # noqa: F841 (read by name in the SQL below: a DuckDB replacement scan)
        {
            "tenant_id": pa.array([k[0] for k in keys], pa.string()),
            "metric": pa.array([k[1] for k in keys], pa.string()),
            "period_start": pa.array([to_naive_utc(k[2]) for k in keys], pa.timestamp("us")),
            "total": pa.array([s.total for s in states], pa.decimal128(38, 9)),
            "event_count": pa.array([s.count for s in states], pa.int64()),
            "maximum": pa.array([s.maximum for s in states], pa.decimal128(38, 9)),
            "latest_at": pa.array(
                [None if s.latest_at is None else to_naive_utc(s.latest_at) for s in states], pa.timestamp("us")
            ),
            "latest_quantity": pa.array([s.latest_quantity for s in states], pa.decimal128(38, 9)),
            "users": pa.array([sorted(s.users) for s in states], pa.list_(pa.string())),
        }
    )
    tenants = sorted(checkpoint.tracked_from)
    checkpoint_tracking = pa.table(  # noqa: F841 (read by name in the SQL below: a DuckDB replacement scan)
        {
            "tenant_id": pa.array(tenants, pa.string()),
            "tracked_from": pa.array([to_naive_utc(checkpoint.tracked_from[t]) for t in tenants], pa.timestamp("us")),
        }
    )
    with transaction(cursor):
        drop_checkpoint(cursor)
        cursor.execute("INSERT INTO counter_checkpoint VALUES (?, ?)", [checkpoint.covered_rows, utc_now_naive()])
        cursor.execute("INSERT INTO counter_checkpoint_states SELECT * FROM checkpoint_states")
        cursor.execute("INSERT INTO counter_checkpoint_tracking SELECT * FROM checkpoint_tracking")


def drop_checkpoint(cursor: duckdb.DuckDBPyConnection) -> None:
    """Forget the checkpoint (a configuration change may change what the counters mean)."""
    for table in ("counter_checkpoint", "counter_checkpoint_states", "counter_checkpoint_tracking"):
        cursor.execute(f"DELETE FROM {table}")


def load_checkpoint(cursor: duckdb.DuckDBPyConnection) -> CounterCheckpoint | None:
    found = cursor.execute("SELECT covered_rows FROM counter_checkpoint").fetchall()
    if not found:
        return None
    tracked_from = {
        tenant_id: from_naive_utc(start)
        for tenant_id, start in cursor.execute("SELECT * FROM counter_checkpoint_tracking").fetchall()
    }
    states = states_from_rows(cursor.execute("SELECT * FROM counter_checkpoint_states").fetchall())
    return CounterCheckpoint(int(found[0][0]), tracked_from, states)


def event_states_for_windows(
    cursor: duckdb.DuckDBPyConnection, windows: Sequence[Window], from_row: int
) -> dict[StateKey, AggregateState]:
    """What the events with rowid >= from_row add to each (tenant, metric, window): the part after a checkpoint."""
    if not windows:
        return {}
    counter_windows = windows_table(windows)  # noqa: F841 (read by DuckDB's replacement scan)
    rows = cursor.execute(
        """
        SELECT w.tenant_id, e.metric, w.window_start,
               sum(quantity), count(*), max(quantity), max(ts), arg_max(quantity, ts),
               list(DISTINCT user_id) FILTER (WHERE user_id IS NOT NULL)
        FROM counter_windows w
        JOIN (SELECT * FROM events WHERE rowid >= ?) e ON e.tenant_id = w.tenant_id
             AND e.ts >= w.window_start AND e.ts < w.window_end
        GROUP BY ALL
        """,
        [from_row],
    ).fetchall()
    return states_from_rows(rows)
