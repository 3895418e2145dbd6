"""Quota counters restored from their checkpoint plus the events after it equal counters rebuilt from rollups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from usage_metering.ingest import Ingestor
from usage_metering.schemas import UsageEvent, parse_event, parse_metric_definition
from usage_metering.store import Database
from usage_metering.store import catalog as catalog_store
from usage_metering.store.counter_checkpoint import load_checkpoint

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def events(prefix: str, count: int, start: datetime) -> list[UsageEvent]:
    metrics = ("calls", "peak", "seats", "level")
    return [
        parse_event({"tenant_id": f"t{i % 3}", "metric": metrics[i % 4], "quantity": (i * 7) % 13,
                     "user_id": f"u{i % 5}", "event_id": f"{prefix}-{i}",
                     "timestamp": (start + timedelta(minutes=i)).isoformat()}, now=NOW, late_window=timedelta(days=400))
        for i in range(count)
    ]


def fresh_counters(database: Database, clock: datetime) -> dict:
    ingestor = Ingestor(database, clock=lambda: clock, compact_interval_seconds=0)
    ingestor.reload()  # from the rollups
    return ingestor.counters.snapshot()[0]


def test_a_restart_loads_the_checkpoint_and_counts_only_newer_events(tmp_path: Path) -> None:
    database = Database(tmp_path / "m.duckdb")
    cursor = database.cursor()
    for name, aggregation in (("calls", "SUM"), ("peak", "MAX"), ("seats", "UNIQUE_COUNT"), ("level", "LATEST")):
        catalog_store.upsert_metric(cursor, parse_metric_definition({"name": name, "aggregation": aggregation}))
    first = Ingestor(database, clock=lambda: NOW, compact_interval_seconds=0).start()
    first.ingest(events("a", 200, NOW - timedelta(days=25)))  # the previous period and this one
    first.stop()  # saves the checkpoint
    checkpoint = load_checkpoint(cursor)
    assert checkpoint is not None and checkpoint.covered_rows == 200

    second = Ingestor(database, clock=lambda: NOW, compact_interval_seconds=0)  # loads the checkpoint
    assert second.counters.snapshot()[0] == fresh_counters(database, NOW)
    second.ingest(events("b", 120, NOW - timedelta(hours=3)))  # no stop: no new checkpoint, as after kill -9

    restored = Ingestor(database, clock=lambda: NOW, compact_interval_seconds=0)
    assert load_checkpoint(cursor).covered_rows == 200
    assert restored.counters.snapshot()[0] == fresh_counters(database, NOW)
    assert sum(state.count for state in restored.counters.snapshot()[0].values()) == 320

    next_month = NOW + timedelta(days=15)  # a period the checkpoint began before
    later = Ingestor(database, clock=lambda: next_month, compact_interval_seconds=0).start()
    assert later.counters.snapshot()[0] == fresh_counters(database, next_month)
    later.stop()  # a checkpoint that tracks from November: October is not in it
    assert load_checkpoint(cursor).covered_rows == 320
    assert Ingestor(database, clock=lambda: NOW).counters.snapshot()[0] == fresh_counters(database, NOW)

    cursor.execute("UPDATE counter_checkpoint_states SET total = total + 1000")  # proof that it is read
    assert Ingestor(database, clock=lambda: next_month).counters.snapshot()[0] != fresh_counters(database, next_month)
    database.close()


def test_a_configuration_change_drops_the_checkpoint(tmp_path: Path) -> None:
    database = Database(tmp_path / "m.duckdb")
    ingestor = Ingestor(database, clock=lambda: NOW, compact_interval_seconds=0).start()
    ingestor.ingest(events("a", 10, NOW - timedelta(hours=1)))
    ingestor.stop()
    assert load_checkpoint(database.cursor()) is not None
    ingestor.change_config(lambda cursor: catalog_store.upsert_metric(
        cursor, parse_metric_definition({"name": "calls", "aggregation": "COUNT"})))
    assert load_checkpoint(database.cursor()) is None
    database.close()
