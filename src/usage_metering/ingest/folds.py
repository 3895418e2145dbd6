"""What a batch of new events adds to the hourly rollups and to the quota counters, folded once.

Per (tenant, metric, user, hour): the rows appended to usage_hourly. Per (tenant,
metric, hour): the totals the ingestor adds to its counters, and the users seen
for metrics that count unique users. Ties in time take the later event of the batch.

Two ways to the same answer: a batch of ARROW_FOLD_MIN_EVENTS or more is grouped
by Arrow (C++); a smaller one in Python, where each Arrow group-by's fixed cost
would outweigh the events' own. tests/test_rollups.py checks both against SQL.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from usage_metering.schemas import UsageEvent
from usage_metering.store.events import DECIMAL, TIMESTAMP, UTC_TIMESTAMP

ARROW_FOLD_MIN_EVENTS = 256

_ROLLUP_COLUMNS: list[tuple[str, pa.DataType]] = [  # usage_hourly's columns, in order
    ("tenant_id", pa.string()),
    ("metric", pa.string()),
    ("user_id", pa.string()),  # '' is no user
    ("hour", TIMESTAMP),
    ("quantity_sum", DECIMAL),
    ("quantity_max", DECIMAL),
    ("event_count", pa.int64()),
    ("latest_at", TIMESTAMP),
    ("latest_quantity", DECIMAL),
]
ROLLUP_ARROW_SCHEMA = pa.schema(_ROLLUP_COLUMNS)

HourKey = tuple[str, str, datetime]  # (tenant_id, metric, hour), aware UTC


class HourTotal(NamedTuple):
    """What the batch adds to one (tenant, metric, hour); times aware UTC."""

    tenant_id: str
    metric: str
    hour: datetime
    total: Decimal
    maximum: Decimal
    # Shadows tuple.count on purpose: callers read hour.count (the events in the group), never call it.
    count: int  # type: ignore[assignment]
    latest_at: datetime
    latest_quantity: Decimal


@dataclass(frozen=True)
class BatchFolds:
    rollups: pa.Table  # ROLLUP_ARROW_SCHEMA
    hours: list[HourTotal]
    users: dict[HourKey, list[str]]  # only for the metrics asked for; no entry: no user


def fold_batch(events: Sequence[UsageEvent], batch: pa.Table, user_metrics: Collection[str]) -> BatchFolds:
    """Fold new events, given both as objects and as their Arrow rows (EVENT_ARROW_SCHEMA, same order);
    `users` lists the users per hour for `user_metrics` only."""
    if len(events) >= ARROW_FOLD_MIN_EVENTS:
        return _fold_in_arrow(batch, user_metrics)
    return _fold_in_python(events, user_metrics)


# -- Python: small batches ------------------------------------------------------------------------

# A group's running values: [sum, max, count, latest_at, position of the latest, latest quantity].
_Running = list[Any]


def _fold_in_python(events: Sequence[UsageEvent], user_metrics: Collection[str]) -> BatchFolds:
    groups: dict[tuple[str, str, str, datetime], _Running] = {}
    for position, event in enumerate(events):
        quantity, at = event.quantity, event.timestamp
        key = (event.tenant_id, event.metric, event.user_id or "", at.replace(minute=0, second=0, microsecond=0))
        group = groups.get(key)
        if group is None:
            groups[key] = [quantity, quantity, 1, at, position, quantity]
            continue
        group[0] += quantity
        group[1] = max(group[1], quantity)
        group[2] += 1
        if at >= group[3]:  # in batch order, so a tie goes to the later event
            group[3], group[4], group[5] = at, position, quantity
    hours: dict[HourKey, _Running] = {}
    users: dict[HourKey, list[str]] = {}
    for (tenant_id, metric, user_id, hour), group in groups.items():
        hour_key = (tenant_id, metric, hour)
        running = hours.get(hour_key)
        if running is None:
            hours[hour_key] = list(group)
        else:
            running[0] += group[0]
            running[1] = max(running[1], group[1])
            running[2] += group[2]
            if (group[3], group[4]) > (running[3], running[4]):
                running[3], running[4], running[5] = group[3], group[4], group[5]
        if user_id and metric in user_metrics:
            users.setdefault(hour_key, []).append(user_id)
    totals = [
        HourTotal(*key, total, maximum, count, at, quantity)
        for key, (total, maximum, count, at, _position, quantity) in hours.items()
    ]
    return BatchFolds(_rollup_table(groups), totals, users)


def _rollup_table(groups: dict[tuple[str, str, str, datetime], _Running]) -> pa.Table:
    keys, values = list(groups), list(groups.values())
    return pa.Table.from_arrays(
        [
            pa.array([key[0] for key in keys], pa.string()),
            pa.array([key[1] for key in keys], pa.string()),
            pa.array([key[2] for key in keys], pa.string()),
            pa.array([key[3] for key in keys], UTC_TIMESTAMP).cast(TIMESTAMP),
            pa.array([value[0] for value in values], DECIMAL),
            pa.array([value[1] for value in values], DECIMAL),
            pa.array([value[2] for value in values], pa.int64()),
            pa.array([value[3] for value in values], UTC_TIMESTAMP).cast(TIMESTAMP),
            pa.array([value[5] for value in values], DECIMAL),
        ],
        schema=ROLLUP_ARROW_SCHEMA,
    )


# -- Arrow: large batches -------------------------------------------------------------------------


def _fold_in_arrow(batch: pa.Table, user_metrics: Collection[str]) -> BatchFolds:
    rows = _time_ordered(batch)
    rollups = _fold(rows, batch["quantity"], ["tenant_id", "metric", "user_id", "hour"])
    hourly = _fold(rows, batch["quantity"], ["tenant_id", "metric", "hour"])
    columns = [_aware(column) if column.type == TIMESTAMP else column.to_pylist() for column in hourly.columns]
    totals = [HourTotal(*values) for values in zip(*columns)]
    return BatchFolds(
        pa.Table.from_arrays(rollups.columns, schema=ROLLUP_ARROW_SCHEMA),
        totals,
        _users_by_hour(rollups, user_metrics) if user_metrics else {},
    )


def _time_ordered(batch: pa.Table) -> pa.Table:
    """The rows a fold needs (user '' for none, the hour, the position in the batch), sorted by (ts, position)."""
    # pyarrow-stubs type fill_null as coalesce (Arrow values only); pyarrow makes the scalar from "" itself.
    users = cast("pa.ChunkedArray[Any]", pc.fill_null(batch["user_id"], ""))  # type: ignore[type-var]
    # Table.from_pydict: what pa.table does with a dict; pyarrow-stubs' pa.table takes no ChunkedArray columns.
    rows = pa.Table.from_pydict(
        {
            "tenant_id": batch["tenant_id"],
            "metric": batch["metric"],
            "user_id": users,
            "hour": pc.floor_temporal(batch["ts"], unit="hour"),
            "quantity": batch["quantity"],
            "ts": batch["ts"],
            "position": pa.array(np.arange(batch.num_rows, dtype=np.int64)),
        }
    )
    return rows.sort_by([("ts", "ascending"), ("position", "ascending")])


def _fold(rows: pa.Table, quantities: pa.ChunkedArray[Any], keys: list[str]) -> pa.Table:
    """Per group of `keys`: sum, max and count of quantity, the latest time and the quantity then. `rows` are
    in (ts, position) order and "last" follows it on one thread; `quantities` are in batch order."""
    folded = rows.group_by(keys, use_threads=False).aggregate(
        [("quantity", "sum"), ("quantity", "max"), ("quantity", "count"), ("ts", "max"), ("position", "last")]
    )
    return pa.Table.from_pydict(  # what pa.table does with a dict (see _time_ordered)
        {
            **{key: folded[key] for key in keys},
            "quantity_sum": folded["quantity_sum"].cast(DECIMAL),
            "quantity_max": folded["quantity_max"],
            "event_count": folded["quantity_count"],
            "latest_at": folded["ts_max"],
            "latest_quantity": quantities.take(folded["position_last"]),
        }
    )


def _users_by_hour(rollups: pa.Table, metrics: Collection[str]) -> dict[HourKey, list[str]]:
    # pyarrow-stubs: compute functions take only Arrow scalars; pyarrow makes one from "" itself.
    not_empty = pc.not_equal(rollups["user_id"], "")  # type: ignore[call-overload]
    wanted = pc.and_(pc.is_in(rollups["metric"], pa.array(list(metrics), pa.string())), not_empty)
    grouped = (
        rollups.filter(wanted)
        .group_by(["tenant_id", "metric", "hour"], use_threads=False)
        .aggregate([("user_id", "list")])
    )
    columns = [
        grouped["tenant_id"].to_pylist(),
        grouped["metric"].to_pylist(),
        _aware(grouped["hour"]),
        grouped["user_id_list"].to_pylist(),
    ]
    return {(tenant_id, metric, hour): users for tenant_id, metric, hour, users in zip(*columns)}


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _aware(naive_utc: pa.ChunkedArray[Any]) -> list[datetime]:
    """A TIMESTAMP column as aware UTC datetimes, built from whole microseconds (cheaper than to_pylist + replace)."""
    micros_list = cast("list[int]", naive_utc.cast(pa.int64()).to_pylist())  # a fold's times are never null
    return [_EPOCH + timedelta(microseconds=micros) for micros in micros_list]
