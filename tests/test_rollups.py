"""Append-only rollups: ingest appends deltas, compaction folds them, and no answer changes.

Also the migration that made usage_hourly append-only, on a file built with the
schema before it (the earlier version's layout: one upserted row per group).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from usage_metering import Metering
from usage_metering.ingest import Ingestor
from usage_metering.schemas import parse_event
from usage_metering.store import Database
from usage_metering.store.migrations import MIGRATIONS, apply_migrations
from usage_metering.store.usage import compact_rollups

pytestmark = pytest.mark.unit

NOW = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0)


def event(i: int, quantity: str = "1.5", **extra: Any) -> Any:
    fields = {"tenant_id": "t1", "metric": "calls", "quantity": quantity, "user_id": f"u{i % 3}",
              "event_id": f"e{i}", "timestamp": (NOW - timedelta(minutes=i % 90)).isoformat()}
    return parse_event({**fields, **extra}, now=NOW + timedelta(minutes=1))


def answers(metering: Metering) -> dict[str, Any]:
    """Every read that folds rollups, for the demo-free tenant t1."""
    return {
        "usage": [metering.usage("t1", "calls", start=NOW.date() - timedelta(days=1), end=NOW.date(),
                                 daily=True).to_json_dict()],
        "all": metering.usage_all("t1", start=NOW.date() - timedelta(days=1), end=NOW.date()).to_json_dict(),
        "top": metering.top_users("t1", "calls", limit=5).to_json_dict(),
        "quota": str(metering.quota("t1", "calls").used),
        "views": metering.database.cursor().execute(
            "SELECT * FROM usage_daily WHERE tenant_id = 't1' ORDER BY ALL").fetchall(),
    }


def rollup_rows(database: Database) -> int:
    return int(database.cursor().execute("SELECT count(*) FROM usage_hourly").fetchall()[0][0])


@pytest.mark.parametrize("metric_aggregation", ["SUM", "MAX", "LATEST", "UNIQUE_COUNT"])
def test_compaction_merges_deltas_without_changing_any_answer(tmp_path: Path, metric_aggregation: str) -> None:
    with Metering.open(tmp_path / "m.duckdb") as metering:
        metering.ingestor.compactor.stop()  # compaction only when the test says
        metering.define_metric({"name": "calls", "aggregation": metric_aggregation})
        for i in range(60):  # one batch each: one delta row each
            metering.record_events([event(i, quantity=str(Decimal(i % 7) + Decimal("0.25")))])
        metering.record_events([event(i, quantity="2") for i in range(60, 120)])
        rows_before = rollup_rows(metering.database)
        before = answers(metering)
        removed = compact_rollups(metering.database.cursor(), NOW - timedelta(days=1))
        groups = metering.database.cursor().execute(
            "SELECT count(*) FROM (SELECT DISTINCT tenant_id, metric, user_id, hour FROM usage_hourly)").fetchall()[0][0]
        assert removed == rows_before - groups > 0
        assert rollup_rows(metering.database) == groups
        assert answers(metering) == before
        assert compact_rollups(metering.database.cursor(), NOW - timedelta(days=1)) == 0  # nothing left to merge


def test_compaction_running_beside_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    database = Database(tmp_path / "m.duckdb")
    ingestor = Ingestor(database, compact_interval_seconds=0.01).start()
    try:
        rng = random.Random(7)
        expected = Decimal(0)
        futures = []
        for i in range(1500):
            quantity = Decimal(rng.randint(1, 999)) / 100
            expected += quantity
            futures.append(ingestor.submit([event(i, quantity=str(quantity))]))
            if i % 100 == 99:  # at least 15 commits, each appending delta rows for the same groups
                futures[-1].result()
        assert all(f.result()[0].status == "recorded" for f in futures)
        ingestor.compactor.compact()
    finally:
        ingestor.stop()
    assert ingestor.compactor.rows_removed > 0
    total, count = database.cursor().execute(
        "SELECT sum(quantity_sum), sum(event_count) FROM usage_hourly").fetchall()[0]
    assert (Decimal(total), count) == (expected, 1500)
    groups = database.cursor().execute(
        "SELECT count(*), count(DISTINCT (tenant_id, metric, user_id, hour)) FROM usage_hourly").fetchall()[0]
    assert groups[0] == groups[1]  # one row per group once compaction caught up
    database.close()


def test_a_file_with_the_upserted_layout_migrates_and_answers_the_same(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    assert apply_migrations(con, up_to=3) == 3
    hour = NOW.replace(tzinfo=None, minute=0)
    con.execute(
        "INSERT INTO usage_hourly VALUES (?, 'calls', 'u1', ?, 10.5, 7, 3, ?, 2), (?, 'calls', '', ?, 4, 4, 1, ?, 4)",
        ["t1", hour, hour, "t1", hour - timedelta(hours=1), hour - timedelta(hours=1)],
    )
    con.execute("INSERT INTO tenants VALUES ('t1', 't1', NULL, 1, now(), NULL)")
    with pytest.raises(duckdb.ConstraintException):  # the old layout: one row per group
        con.execute("INSERT INTO usage_hourly VALUES ('t1', 'calls', 'u1', ?, 1, 1, 1, ?, 1)", [hour, hour])
    con.close()

    with Metering.open(path) as metering:
        assert metering.database.schema_version == max(version for version, _sql in MIGRATIONS)
        usage = metering.usage("t1", "calls", start=NOW.date() - timedelta(days=1), end=NOW.date())
        assert (usage.value, usage.event_count) == (Decimal("14.5"), 4)
        assert metering.record(event(1, quantity="1", user_id="u1", timestamp=hour.isoformat() + "Z")).status == "recorded"
        usage = metering.usage("t1", "calls", start=NOW.date() - timedelta(days=1), end=NOW.date())
        assert (usage.value, usage.event_count) == (Decimal("15.5"), 5)


def test_a_clean_stop_leaves_rollups_compact_and_the_next_start_skips_the_lookback(tmp_path: Path) -> None:
    database = Database(tmp_path / "m.duckdb")
    first = Ingestor(database, compact_interval_seconds=0).start()
    for i in range(5):
        first.ingest([event(10 * i + k) for k in range(3)])  # several delta rows per group
    assert "usage_hourly" in first.compactor._dirty_since  # a new file: the two-day lookback
    first.stop()
    assert rollup_rows(database) == len(database.cursor().execute(
        "SELECT DISTINCT tenant_id, metric, user_id, hour FROM usage_hourly").fetchall())  # folded at stop
    assert database.cursor().execute("SELECT compact FROM rollup_state").fetchall() == [(True,)]

    second = Ingestor(database, compact_interval_seconds=0).start()
    assert second.compactor._dirty_since == {}  # nothing left to fold
    assert database.cursor().execute("SELECT compact FROM rollup_state").fetchall() == [(False,)]
    second.ingest([event(100)])
    # no stop (kill -9): the next start folds the last two days again
    third = Ingestor(database, compact_interval_seconds=0)
    third.compactor.start()
    assert "usage_hourly" in third.compactor._dirty_since
    database.close()


@pytest.mark.parametrize("fold", ["python", "arrow"])
def test_a_batchs_folds_are_its_events_grouped_as_sql_would(fold: str) -> None:
    """Both folds (ingest/folds.py) against GROUP BYs over the same rows in DuckDB; ties in time
    (every third event shares its neighbour's timestamp) take the later event's quantity."""
    from usage_metering.ingest.folds import ROLLUP_ARROW_SCHEMA, _fold_in_arrow, _fold_in_python
    from usage_metering.store.events import EVENT_ARROW_SCHEMA, event_fingerprint, events_to_arrow

    rng = random.Random(3)
    events = [event(i, quantity=str(Decimal(rng.randint(0, 10**12)) / 10**9), user_id=rng.choice(["a", "b", None]),
                    metric=rng.choice(["calls", "seats"]), timestamp=(NOW - timedelta(seconds=(i - i % 3) * 97)).isoformat())
              for i in range(2_000)]
    batch = events_to_arrow(events, [event_fingerprint(e.tenant_id, e.event_id) for e in events], NOW)
    assert batch.schema == EVENT_ARROW_SCHEMA
    folds = _fold_in_python(events, ["seats"]) if fold == "python" else _fold_in_arrow(batch, ["seats"])
    numbered = batch.append_column("position", pa.array(range(batch.num_rows), pa.int64()))  # noqa: F841 (SQL)
    latest = "arg_max(quantity, (ts, position))"
    assert folds.rollups.schema == ROLLUP_ARROW_SCHEMA
    expected = duckdb.sql(
        "SELECT tenant_id, metric, coalesce(user_id, ''), date_trunc('hour', ts), sum(quantity), max(quantity), "
        f"count(*), max(ts), {latest} FROM numbered GROUP BY ALL ORDER BY ALL").fetchall()
    rollups = sorted(tuple(row.values()) for row in folds.rollups.to_pylist())
    assert rollups == expected
    assert len(rollups) > 10 and sum(row[6] for row in rollups) == len(events)
    hours = duckdb.sql(
        "SELECT tenant_id, metric, date_trunc('hour', ts), sum(quantity), max(quantity), count(*), max(ts), "
        f"{latest} FROM numbered GROUP BY ALL ORDER BY ALL").fetchall()
    naive = [h._replace(hour=h.hour.replace(tzinfo=None), latest_at=h.latest_at.replace(tzinfo=None)) for h in folds.hours]
    assert sorted(tuple(h) for h in naive) == hours
    users = duckdb.sql("SELECT tenant_id, metric, date_trunc('hour', ts), list(DISTINCT user_id ORDER BY user_id) "
                       "FROM numbered WHERE user_id IS NOT NULL AND metric = 'seats' GROUP BY ALL").fetchall()
    assert {key: sorted(found) for key, found in folds.users.items()} == {
        (tenant, metric, hour.replace(tzinfo=timezone.utc)): found for tenant, metric, hour, found in users}


def test_billing_values_per_aggregation_equal_each_metrics_totals(tmp_path: Path) -> None:
    """usage_values_for_windows (one SELECT per aggregation, billing's path) against usage_totals (all five
    aggregates, the summaries' path): same value, same Decimal text, for each aggregation and an undefined metric."""
    from usage_metering.schemas import Aggregation
    from usage_metering.store.usage import usage_totals, usage_values_for_windows

    aggregations = {f"m_{a.value.lower()}": a for a in Aggregation}
    with Metering.open(tmp_path / "m.duckdb") as metering:
        for name, aggregation in aggregations.items():
            metering.define_metric({"name": name, "aggregation": aggregation.value})
        rng = random.Random(5)
        metering.record_events([
            event(i, metric=metric, quantity=str(Decimal(rng.randint(0, 10**6)) / 1000), user_id=rng.choice(["a", "b", None]),
                  tenant_id=rng.choice(["t1", "t2"]))
            for i, metric in enumerate(rng.choice([*aggregations, "undefined"]) for _ in range(400))
        ])
        cursor = metering.database.cursor()
        start, end = NOW - timedelta(days=2), NOW + timedelta(days=1)
        values = usage_values_for_windows(cursor, [("t1", start, end), ("t2", start, end)], aggregations)
        for tenant in ("t1", "t2"):
            found = values[(tenant, start)]
            assert set(found) == {*aggregations, "undefined"}
            for metric, value in found.items():
                expected = usage_totals(cursor, tenant, metric, start, end).value(aggregations.get(metric, Aggregation.SUM))
                assert (str(value), value) == (str(expected), expected), metric


CLOCK = datetime(2026, 11, 10, 12, 30, tzinfo=timezone.utc)


def at(moment: datetime, user: str, event_id: str) -> Any:
    return parse_event({"tenant_id": "t1", "metric": "calls", "quantity": "2", "user_id": user,
                        "event_id": event_id, "timestamp": moment.isoformat()}, now=CLOCK)


def rows_per_bucket(database: Database, table: str = "usage_hourly") -> dict[datetime, int]:
    bucket = "hour" if table == "usage_hourly" else "day"
    found = database.cursor().execute(f"SELECT {bucket}, count(*) FROM {table} GROUP BY ALL").fetchall()
    return {moment: count for moment, count in found}


def test_a_background_pass_folds_the_recent_hours_and_leaves_older_deltas_to_maintenance(tmp_path: Path) -> None:
    with Metering.open(tmp_path / "m.duckdb", clock=lambda: CLOCK) as metering:
        metering.ingestor.compactor.stop()  # passes only when the test says
        old, recent = CLOCK - timedelta(hours=5), CLOCK - timedelta(minutes=10)
        for i in range(5):  # a batch each: a delta row each, for one group in each hour
            metering.record_events([at(old, "u1", f"old-{i}"), at(recent, "u1", f"recent-{i}")])
        total = metering.usage("t1", "calls", start=CLOCK.date(), end=CLOCK.date()).value
        metering.ingestor.compactor.compact()
        rows = rows_per_bucket(metering.database)
        assert rows[recent.replace(minute=0, tzinfo=None)] == 1
        assert rows[old.replace(minute=0, tzinfo=None)] == 5  # older than RECENT_HOURS: left as it is
        assert metering.usage("t1", "calls", start=CLOCK.date(), end=CLOCK.date()).value == total == 20
        metering.compact_rollups()
        assert set(rows_per_bucket(metering.database).values()) == {1}
        assert metering.usage("t1", "calls", start=CLOCK.date(), end=CLOCK.date()).value == total


def test_late_deltas_of_sealed_days_fold_once_they_are_as_many_as_the_sealed_rows(tmp_path: Path) -> None:
    with Metering.open(tmp_path / "m.duckdb", clock=lambda: CLOCK) as metering:
        compactor = metering.ingestor.compactor
        compactor.stop()
        two_days_ago = CLOCK - timedelta(days=2)
        metering.record_events([at(two_days_ago, f"u{i}", f"first-{i}") for i in range(40)])
        metering.compact_rollups()  # seals that day: 40 daily rows
        assert compactor.sealed_before is not None and compactor.sealed_before > two_days_ago
        day = two_days_ago.replace(hour=0, minute=0, tzinfo=None)
        for i in range(39):  # late events of the sealed day, a batch each: a daily delta row each
            metering.record_events([at(two_days_ago, f"u{i}", f"late-{i}")])
        compactor.compact()
        assert rows_per_bucket(metering.database, "usage_daily_rollup")[day] == 79  # not due yet
        metering.record_events([at(two_days_ago, "u39", "late-39")])
        compactor.compact()
        assert rows_per_bucket(metering.database, "usage_daily_rollup")[day] == 40
        start = two_days_ago.date()
        assert metering.usage("t1", "calls", start=start, end=start).value == 160
