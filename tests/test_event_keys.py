"""Exact dedup without a primary key: the event key index (ingest/dedup.py) on real DuckDB files."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_metering.ingest import Ingestor
from usage_metering.ingest.dedup import EventKeyIndex, KeyRun, index_directory, merge_runs, sorted_run
from usage_metering.metering import Metering
from usage_metering.schemas import EventStatus, UsageEvent, parse_event
from usage_metering.store import Database
from usage_metering.store.events import FINGERPRINT_SQL, event_fingerprint

pytestmark = pytest.mark.unit

ids = st.from_regex(r"\A[A-Za-z0-9_.:@-]{1,128}\Z")
NOW = datetime.now(timezone.utc)


def event(event_id: str, tenant: str = "t1", quantity: object = 1, **extra: object) -> UsageEvent:
    return parse_event({"tenant_id": tenant, "metric": "calls", "quantity": quantity, "event_id": event_id, **extra})


def small_index(database: Database, recent_limit: int = 4) -> EventKeyIndex:
    return EventKeyIndex(index_directory(database.path), recent_limit=recent_limit, max_run_keys=64)


def ingestor_with(database: Database, recent_limit: int = 4) -> Ingestor:
    ingestor = Ingestor(database, compact_interval_seconds=0)
    ingestor.keys = small_index(database, recent_limit)
    return ingestor


def stored(database: Database) -> tuple[int, Decimal]:
    count, total = database.cursor().execute("SELECT count(*), coalesce(sum(quantity), 0) FROM events").fetchall()[0]
    return int(count), Decimal(total)


@settings(max_examples=200, deadline=None)
@given(tenant_id=ids, event_id=ids)
def test_python_and_sql_fingerprints_agree(tenant_id: str, event_id: str) -> None:
    sql = f"SELECT {FINGERPRINT_SQL} FROM (SELECT ? AS tenant_id, ? AS event_id)"
    assert duckdb.execute(sql, [tenant_id, event_id]).fetchall()[0][0] == event_fingerprint(tenant_id, event_id)


def test_merging_two_runs_keeps_every_fingerprint_with_its_row() -> None:
    generator = np.random.default_rng(7)
    older = sorted_run(0, 50, np.arange(50, dtype=np.int64), generator.integers(0, 2**64, 50, dtype=np.uint64))
    newer = sorted_run(50, 80, np.arange(50, 80, dtype=np.int64), generator.integers(0, 2**64, 30, dtype=np.uint64))
    merged = merge_runs(older, newer)
    assert (merged.first_row, merged.end_row, merged.keys) == (0, 80, 80)
    assert np.all(np.diff(merged.fingerprints.astype(object)) >= 0)
    pairs = set(zip(merged.fingerprints.tolist(), merged.rows.tolist()))
    assert pairs == set(zip(older.fingerprints.tolist(), older.rows.tolist())) | set(
        zip(newer.fingerprints.tolist(), newer.rows.tolist())
    )


def test_keys_in_runs_are_found_and_new_keys_are_not(tmp_path: Path) -> None:
    database = Database(tmp_path / "m.duckdb")
    ingestor = ingestor_with(database).start()
    for batch in range(30):  # 150 events: flushed into runs of 4+ keys, merged in the background
        ingestor.ingest([event(f"e{batch}-{i}") for i in range(5)])
    ingestor.keys.wait_for_merge()
    assert len(ingestor.keys.runs) >= 2
    assert sum(run.keys for run in ingestor.keys.runs) + ingestor.keys.recent_keys == 150
    resent = [event(f"e{batch}-{i}", quantity=7) for batch in range(30) for i in range(5)]
    fresh = [event(f"new-{i}") for i in range(20)]
    outcomes = ingestor.ingest(resent + fresh)
    assert [o.status for o in outcomes] == [EventStatus.DUPLICATE] * 150 + [EventStatus.RECORDED] * 20
    assert stored(database) == (170, Decimal(170))
    ingestor.stop()
    manifest = json.loads((tmp_path / "m.duckdb.keys" / "manifest.json").read_text())
    on_disk = {path.name.split(".")[0] for path in (tmp_path / "m.duckdb.keys").glob("run-*.npy")}
    assert on_disk == {run["name"] for run in manifest["runs"]}  # merged-away runs are deleted
    database.close()


def test_a_fingerprint_match_is_confirmed_against_the_stored_key(tmp_path: Path) -> None:
    """Two keys with one fingerprint (forced here: a 64-bit collision cannot be found by search) stay two events."""
    database = Database(tmp_path / "m.duckdb")
    ingestor = ingestor_with(database, recent_limit=1)
    ingestor.ingest([event("original")])
    colliding = event_fingerprint("t1", "other")
    database.cursor().execute("UPDATE events SET fingerprint = ? WHERE event_id = 'original'", [colliding])
    ingestor.keys.load(database.cursor())  # rebuilt from the store: the run holds the forced fingerprint
    assert ingestor.keys.runs and ingestor.keys.recent_keys == 0
    assert [o.status for o in ingestor.ingest([event("other")])] == [EventStatus.RECORDED]
    assert [o.status for o in ingestor.ingest([event("other")])] == [EventStatus.DUPLICATE]  # two candidate rows
    assert stored(database) == (2, Decimal(2))
    database.close()


def test_files_of_a_flush_cut_short_are_deleted_at_start(tmp_path: Path) -> None:
    path = tmp_path / "m.duckdb"
    database = Database(path)
    ingestor = ingestor_with(database, recent_limit=4)
    for batch in range(3):
        ingestor.ingest([event(f"e{batch}-{i}") for i in range(4)])
    ingestor.keys.wait_for_merge()
    orphan = index_directory(path) / "run-000000000999-000000001000.fp.npy"
    orphan.write_bytes(b"written before a crash, never named by the manifest")
    again = ingestor_with(database, recent_limit=4)
    again.keys.load(database.cursor())
    assert not orphan.exists() and again.keys.runs
    database.close()


@pytest.mark.parametrize("lose", ["nothing", "the key files", "the manifest's match"])
def test_a_resend_after_a_restart_is_a_duplicate(tmp_path: Path, lose: str) -> None:
    path = tmp_path / "m.duckdb"
    database = Database(path)
    ingestor = ingestor_with(database, recent_limit=8).start()
    for batch in range(10):
        ingestor.ingest([event(f"e{batch}-{i}") for i in range(3)])
    ingestor.stop()
    database.close()
    keys = index_directory(path)
    if lose == "the key files":
        shutil.rmtree(keys)
    elif lose == "the manifest's match":  # e.g. the store restored from a copy taken before more events came
        manifest = json.loads((keys / "manifest.json").read_text())
        manifest["last_fingerprint"] += 1
        (keys / "manifest.json").write_text(json.dumps(manifest))

    reopened = Database(path)
    again = ingestor_with(reopened, recent_limit=8).start()
    outcomes = again.ingest([event(f"e{batch}-{i}", quantity=5) for batch in range(10) for i in range(3)] + [event("z")])
    assert [o.status for o in outcomes] == [EventStatus.DUPLICATE] * 30 + [EventStatus.RECORDED]
    assert stored(reopened) == (31, Decimal(31))
    again.stop()
    reopened.close()


def test_an_unflushed_tail_is_read_back_after_a_crash(tmp_path: Path) -> None:
    """Keys committed after the last run are not in any file: at start they come from the store's rows."""
    path = tmp_path / "m.duckdb"
    database = Database(path)
    ingestor = ingestor_with(database, recent_limit=100)
    ingestor.ingest([event(f"e{i}") for i in range(10)])  # committed; no run written
    assert not ingestor.keys.runs and ingestor.keys.recent_keys == 10
    database.close()  # no stop(): as after kill -9
    reopened = Database(path)
    again = ingestor_with(reopened, recent_limit=100)
    assert [o.status for o in again.ingest([event("e3"), event("e10")])] == [EventStatus.DUPLICATE, EventStatus.RECORDED]
    reopened.close()


@pytest.mark.parametrize("boundary", ["hour", "day", "month"])
def test_a_retry_across_a_period_boundary_counts_once(tmp_path: Path, boundary: str) -> None:
    """The first send lands just before the boundary, the retry (another timestamp) just after it."""
    now = {
        "hour": datetime(2026, 11, 15, 10, 59, 59, tzinfo=timezone.utc),
        "day": datetime(2026, 11, 15, 23, 59, 59, tzinfo=timezone.utc),
        "month": datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc),
    }[boundary]
    after = now + timedelta(seconds=2)
    assert after.hour != now.hour and (boundary == "hour" or after.day != now.day)
    assert (after.month != now.month) == (boundary == "month")
    clock = [now]
    with Metering.open(tmp_path / "m.duckdb", clock=lambda: clock[0], late_window=timedelta(days=60)) as metering:
        first = metering.record_events([{"tenant_id": "t1", "metric": "calls", "quantity": 3, "event_id": "once",
                                         "timestamp": now.isoformat()}])
        clock[0] = after + timedelta(seconds=1)
        retry = metering.record_events([{"tenant_id": "t1", "metric": "calls", "quantity": 3, "event_id": "once",
                                         "timestamp": after.isoformat()}])
        without_timestamp = metering.record_events([{"tenant_id": "t1", "metric": "calls", "quantity": 3,
                                                     "event_id": "once"}])
        assert [r.status for r in (*first, *retry, *without_timestamp)] == [
            EventStatus.RECORDED, EventStatus.DUPLICATE, EventStatus.DUPLICATE
        ]
        assert stored(metering.database) == (1, Decimal(3))
        hourly = metering.database.cursor().execute("SELECT sum(event_count), sum(quantity_sum) FROM usage_hourly").fetchall()
        assert hourly == [(1, Decimal(3))]


def test_a_resend_without_a_timestamp_is_a_duplicate_of_the_timestamped_original(tmp_path: Path) -> None:
    with Metering.open(tmp_path / "m.duckdb") as metering:
        original = (NOW - timedelta(days=3)).isoformat()
        metering.record_events([{"tenant_id": "t1", "metric": "calls", "quantity": 2, "event_id": "x", "timestamp": original}])
        results = metering.record_events([{"tenant_id": "t1", "metric": "calls", "quantity": 2, "event_id": "x"}])
        assert [r.status for r in results] == [EventStatus.DUPLICATE]
        assert stored(metering.database) == (1, Decimal(2))


def test_runs_are_files_mapped_not_loaded(tmp_path: Path) -> None:
    database = Database(tmp_path / "m.duckdb")
    ingestor = ingestor_with(database, recent_limit=4)
    for batch in range(3):
        ingestor.ingest([event(f"e{batch}-{i}") for i in range(4)])
    ingestor.keys.wait_for_merge()
    run: KeyRun = ingestor.keys.runs[0]
    assert isinstance(run.fingerprints, np.memmap) and isinstance(run.rows, np.memmap)
    database.close()


def test_a_run_filter_passes_every_stored_key_and_few_others() -> None:
    from usage_metering.ingest.dedup import may_contain, presence_filter

    generator = np.random.default_rng(11)
    stored_keys = np.sort(generator.integers(0, 2**64, 50_000, dtype=np.uint64))
    bitmap = presence_filter(stored_keys)
    assert may_contain(bitmap, stored_keys).all()  # no false negatives, ever
    others = generator.integers(0, 2**64, 50_000, dtype=np.uint64)
    assert may_contain(bitmap, others).mean() < 0.1
