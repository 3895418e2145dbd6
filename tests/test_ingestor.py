"""The ingestor against a real DuckDB file: dedup, quotas, counters, offsets, restart."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from usage_metering.ingest import Ingestor
from usage_metering.schemas import EventStatus, UsageEvent, parse_event, parse_metric_definition, parse_plan, parse_tenant
from usage_metering.store import Database, DeadLetter
from usage_metering.store import catalog as catalog_store
from usage_metering.store.offsets import load_offsets

pytestmark = pytest.mark.unit

NOW = datetime.now(timezone.utc)


def event(tenant: str = "t1", metric: str = "calls", quantity: object = 1, **extra: object) -> UsageEvent:
    return parse_event({"tenant_id": tenant, "metric": metric, "quantity": quantity, **extra})


@pytest.fixture()
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "metering.duckdb")
    yield database
    database.close()


def stored_total(db: Database, tenant: str, metric: str) -> tuple[Decimal, int]:
    rows = db.cursor().execute(
        "SELECT coalesce(sum(quantity), 0), count(*) FROM events WHERE tenant_id = ? AND metric = ?",
        [tenant, metric],
    ).fetchall()
    return Decimal(rows[0][0]), rows[0][1]


def rollup_total(db: Database, tenant: str, metric: str) -> tuple[Decimal, int]:
    rows = db.cursor().execute(
        "SELECT coalesce(sum(quantity_sum), 0), coalesce(sum(event_count), 0) FROM usage_hourly "
        "WHERE tenant_id = ? AND metric = ?",
        [tenant, metric],
    ).fetchall()
    return Decimal(rows[0][0]), int(rows[0][1])


def test_duplicates_are_counted_once_across_batches_and_within_one(db: Database) -> None:
    ingestor = Ingestor(db)
    first = [event(quantity="1.1", event_id=f"e{i}") for i in range(10)]
    assert [o.status for o in ingestor.ingest(first)] == [EventStatus.RECORDED] * 10
    again = [event(quantity="9", event_id="e3"), event(quantity="2", event_id="new"), event(quantity="2", event_id="new")]
    assert [o.status for o in ingestor.ingest(again)] == [EventStatus.DUPLICATE, EventStatus.RECORDED, EventStatus.DUPLICATE]
    assert stored_total(db, "t1", "calls") == (Decimal("13.0"), 11)
    assert rollup_total(db, "t1", "calls") == (Decimal("13.0"), 11)


def test_concurrent_submitters_of_the_same_ids_record_each_once(db: Database) -> None:
    ingestor = Ingestor(db).start()
    events = [event(quantity=i, event_id=f"id-{i}") for i in range(300)]
    statuses: list[str] = []
    lock = threading.Lock()

    def submit_all() -> None:
        outcomes = [f.result() for f in [ingestor.submit([e]) for e in events]]
        with lock:
            statuses.extend(o[0].status for o in outcomes)

    threads = [threading.Thread(target=submit_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ingestor.stop()
    assert statuses.count(EventStatus.RECORDED) == 300
    assert statuses.count(EventStatus.DUPLICATE) == 5 * 300
    assert stored_total(db, "t1", "calls") == (Decimal(sum(range(300))), 300)


def test_block_policy_rejects_events_over_the_limit_and_stores_none_of_them(db: Database) -> None:
    cursor = db.cursor()
    catalog_store.save_plan(cursor, parse_plan({"plan_id": "p", "name": "P", "metrics": [{"metric": "calls", "included": 5, "policy": "block"}]}))
    catalog_store.save_tenant(cursor, parse_tenant({"tenant_id": "t1", "plan_id": "p"}))
    ingestor = Ingestor(db)
    outcomes = ingestor.ingest([event(quantity=2, event_id=f"b{i}") for i in range(4)])
    assert [o.status for o in outcomes] == [EventStatus.RECORDED, EventStatus.RECORDED, EventStatus.BLOCKED, EventStatus.BLOCKED]
    blocked = outcomes[2].quota
    assert blocked is not None and blocked.limit == 5 and blocked.used == 4
    assert stored_total(db, "t1", "calls") == (Decimal(4), 2)
    # exactly filling the quota is allowed; one more unit is not
    assert ingestor.ingest([event(quantity=1, event_id="fill")])[0].status == EventStatus.RECORDED
    assert ingestor.ingest([event(quantity="0.001", event_id="over")])[0].status == EventStatus.BLOCKED
    # a blocked event was not recorded, so a retry is blocked again, not a duplicate
    assert ingestor.ingest([event(quantity=2, event_id="b2")])[0].status == EventStatus.BLOCKED
    assert rollup_total(db, "t1", "calls") == (Decimal(5), 3)


def test_counters_are_rebuilt_from_rollups_after_restart(db: Database, tmp_path: Path) -> None:
    cursor = db.cursor()
    catalog_store.upsert_metric(cursor, parse_metric_definition({"name": "seats", "aggregation": "UNIQUE_COUNT"}))
    catalog_store.upsert_metric(cursor, parse_metric_definition({"name": "disk", "aggregation": "MAX"}))
    catalog_store.upsert_metric(cursor, parse_metric_definition({"name": "level", "aggregation": "LATEST"}))
    ingestor = Ingestor(db)
    earlier = NOW - timedelta(minutes=2)
    ingestor.ingest(
        [
            event(metric="seats", user_id="a"), event(metric="seats", user_id="b"), event(metric="seats", user_id="a"),
            event(metric="disk", quantity="7.5"), event(metric="disk", quantity="3"),
            event(metric="level", quantity=4, timestamp=NOW.isoformat()),
            event(metric="level", quantity=9, timestamp=earlier.isoformat()),
            event(metric="calls", quantity="0.25"), event(metric="calls", quantity="0.5"),
        ]
    )
    before = {m: ingestor.current_usage("t1", m)[1] for m in ("seats", "disk", "level", "calls")}
    assert before["seats"].unique_users == 2
    assert before["disk"].maximum == Decimal("7.5")
    assert before["level"].latest == 4  # the latest by event time, not by arrival
    assert before["calls"].total == Decimal("0.75") and before["calls"].count == 2
    db.close()
    reopened = Database(tmp_path / "metering.duckdb")
    try:
        after = {m: Ingestor(reopened).current_usage("t1", m)[1] for m in before}
    finally:
        reopened.close()
    assert after == before


def test_offsets_and_dead_letters_commit_with_the_rows(db: Database) -> None:
    ingestor = Ingestor(db)
    letter = DeadLetter(source="kafka", raw=b"not json", reason="malformed_json", topic="usage", partition=3, offset=41)
    ingestor.ingest([event(event_id="k1")], offsets={("usage", 3): 42}, dead_letters=[letter])
    assert load_offsets(db.cursor(), "usage") == {3: 42}
    rows = db.cursor().execute('SELECT reason, partition, "offset" FROM dead_letters').fetchall()
    assert rows == [("malformed_json", 3, 41)]


def test_failed_commit_rolls_back_everything_and_fails_the_caller(db: Database) -> None:
    ingestor = Ingestor(db)
    ingestor.ingest([event(event_id="ok")])
    bad_letter = DeadLetter(source="kafka", raw=None, reason="x")  # type: ignore[arg-type]  # raw NOT NULL
    with pytest.raises(Exception):
        ingestor.ingest([event(event_id="lost-with-batch")], offsets={("usage", 0): 7}, dead_letters=[bad_letter])
    assert stored_total(db, "t1", "calls") == (Decimal(1), 1)
    assert load_offsets(db.cursor(), "usage") == {}
    assert ingestor.current_usage("t1", "calls")[1].count == 1  # counters not ahead of the database
    assert ingestor.ingest([event(event_id="lost-with-batch")])[0].status == EventStatus.RECORDED


def test_new_tenants_are_registered_on_first_event(db: Database) -> None:
    ingestor = Ingestor(db)
    ingestor.ingest([event(tenant="fresh")])
    assert "fresh" in ingestor.catalog.tenants
    assert "fresh" in catalog_store.load_tenants(db.cursor())
