"""Two writers on one DuckLake, as two nodes would be: a partition's offsets fence out the one that lost it.

Each `Metering` here has its own DuckDB connection to the same lake (a real
PostgreSQL catalog), as two node processes would; the process-level tests with
Kafka are in tests/kafka/test_cluster.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from support.lakes import LakeFactory
from usage_metering import Metering, NotFoundError
from usage_metering.schemas import EventStatus, parse_event
from usage_metering.store import Database
from usage_metering.store.migrations import apply_migrations
from usage_metering.store.offsets import PartitionLost, load_offsets

TOPIC = "usage-events"


def _events(prefix: str, count: int, tenant: str = "t1") -> list:
    return [parse_event({"tenant_id": tenant, "metric": "calls", "quantity": "2", "event_id": f"{prefix}-{i}"})
            for i in range(count)]


def _total(metering: Metering, tenant: str = "t1") -> tuple[Decimal, int]:
    row = metering.database.cursor().execute(
        "SELECT coalesce(sum(quantity), 0), count(*) FROM events WHERE tenant_id = ?", [tenant]).fetchall()[0]
    return Decimal(row[0]), int(row[1])


def test_a_writer_whose_partition_was_committed_by_another_fails_and_stores_nothing(
    lakes: LakeFactory, tmp_path: Path
) -> None:
    lake = lakes.new()
    with Metering.open(tmp_path / "a", lake=lake) as zombie, Metering.open(tmp_path / "b", lake=lake) as owner:
        assert zombie.ingestor.claim(TOPIC, [0, 1]) == {0: None, 1: None}
        zombie.ingestor.ingest(_events("first", 10), offsets={(TOPIC, 0): 10})
        assert owner.ingestor.claim(TOPIC, [0]) == {0: 10}  # the partition moves to `owner`
        owner.ingestor.ingest(_events("second", 5), offsets={(TOPIC, 0): 15})
        with pytest.raises(PartitionLost):
            zombie.ingestor.ingest(_events("second", 5) + _events("stale", 3), offsets={(TOPIC, 0): 18})
        # partition 1 is still the zombie's: it commits there, and a batch naming both fails as a whole
        zombie.ingestor.ingest(_events("other", 2, tenant="t2"), offsets={(TOPIC, 1): 2})
        with pytest.raises(PartitionLost):
            zombie.ingestor.ingest(_events("mixed", 2, tenant="t2"), offsets={(TOPIC, 1): 4, (TOPIC, 0): 20})
        assert load_offsets(owner.database.cursor(), TOPIC) == {0: 15, 1: 2}
        assert _total(owner) == (Decimal(30), 15)
        assert _total(owner, "t2") == (Decimal(4), 2)
        # claimed again (what a rejoin does), the old owner goes on from the stored offset
        assert zombie.ingestor.claim(TOPIC, [0]) == {0: 15}
        outcomes = zombie.ingestor.ingest(_events("second", 5) + _events("third", 1), offsets={(TOPIC, 0): 21})
        assert Counter(o.status for o in outcomes) == {EventStatus.DUPLICATE: 5, EventStatus.RECORDED: 1}


def test_racing_commits_of_one_partition_store_exactly_one_of_them(lakes: LakeFactory, tmp_path: Path) -> None:
    """Both writers claim the same offset and commit at once: DuckLake's conflict or the compare-and-set
    stops one; the winner's events are stored once and the loser's not at all."""
    lake = lakes.new()
    with Metering.open(tmp_path / "a", lake=lake) as first, Metering.open(tmp_path / "b", lake=lake) as second:
        stored = 0
        for round_number in range(6):
            writers = (first, second)
            for writer in writers:
                writer.ingestor.claim(TOPIC, [0])
            barrier = threading.Barrier(2)
            results: dict[int, str] = {}

            def commit(index: int, writer: Metering = first) -> None:
                batch = _events(f"r{round_number}-w{index}", 20)
                barrier.wait()
                try:
                    writer.ingestor.ingest(batch, offsets={(TOPIC, 0): (round_number + 1) * 100})
                    results[index] = "stored"
                except (PartitionLost, duckdb.TransactionException):
                    results[index] = "fenced"

            threads = [threading.Thread(target=commit, args=(i, w)) for i, w in enumerate(writers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(results.values()) == ["fenced", "stored"], results
            stored += 20
            assert _total(first) == (Decimal(2 * stored), stored)
            assert load_offsets(first.database.cursor(), TOPIC) == {0: (round_number + 1) * 100}


@pytest.mark.unit
def test_a_files_offsets_move_to_a_table_per_partition(tmp_path: Path) -> None:
    """Migration 8 on a file written before it: every stored offset is kept."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    apply_migrations(con, up_to=7)
    con.execute("INSERT INTO source_offsets VALUES ('usage-events', 0, 41, now()::timestamp), "
                "('usage-events', 7, 9, now()::timestamp), ('other', 0, 3, now()::timestamp)")
    con.close()
    database = Database(path)
    try:
        cursor = database.cursor()
        assert load_offsets(cursor, "usage-events") == {0: 41, 7: 9}
        assert load_offsets(cursor, "other") == {0: 3}
        assert cursor.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'source_offsets'").fetchall() == [(0,)]
    finally:
        database.close()


def test_configuration_changed_on_one_node_is_in_force_on_another_within_seconds(
    lakes: LakeFactory, tmp_path: Path
) -> None:
    import time

    from usage_metering.hooks import CONFIG_REFRESH_SECONDS
    from usage_metering.node.demo import init_demo

    lake = lakes.new()
    with Metering.open(tmp_path / "a", lake=lake) as first, Metering.open(tmp_path / "b", lake=lake) as second:
        init_demo(first)
        first.save_plan({"plan_id": "tiny", "name": "Tiny", "currency": "USD", "base_fee": "1",
                         "metrics": [{"metric": "api_calls", "included": 7, "policy": "block"}]})
        first.save_tenant({"tenant_id": "tenant_small", "name": "Small", "plan_id": "tiny", "billing_anchor_day": 3})
        key, token = first.create_api_key("ops", "admin")

        def seen_on_second() -> bool:
            try:
                quota = second.quota("tenant_small", "api_calls")
            except NotFoundError:  # not there yet
                return False
            return quota.limit == Decimal(7) and second.authenticate(token) is not None

        deadline = time.monotonic() + CONFIG_REFRESH_SECONDS * 3
        while not seen_on_second():
            assert time.monotonic() < deadline, "the plan, tenant or key did not reach the second node"
            time.sleep(0.2)
        assert second.quota("tenant_small", "api_calls").period.start.day == 3  # its billing anchor too
        first.revoke_api_key(key.key_id)
        deadline = time.monotonic() + CONFIG_REFRESH_SECONDS * 3
        while second.authenticate(token) is not None:
            assert time.monotonic() < deadline, "the revoked key still works on the second node"
            time.sleep(0.2)


def test_two_nodes_ingesting_directly_count_each_event_once(lakes: LakeFactory, tmp_path: Path) -> None:
    """No Kafka: both nodes take HTTP-style batches, every event sent to both at once; each is stored once."""
    lake = lakes.new()
    with Metering.open(tmp_path / "a", lake=lake) as first, Metering.open(tmp_path / "b", lake=lake) as second:
        recorded: Counter[str] = Counter()
        lock = threading.Lock()

        def send(node: Metering, round_number: int, barrier: threading.Barrier) -> None:
            events = [{"tenant_id": f"t{i % 4}", "metric": "calls", "quantity": "3", "event_id": f"d{round_number}-{i}"}
                      for i in range(25)]
            barrier.wait()
            for result in node.record_events(events):
                if result.status == EventStatus.RECORDED:
                    with lock:
                        recorded[result.event_id] += 1

        for round_number in range(8):
            barrier = threading.Barrier(2)
            threads = [threading.Thread(target=send, args=(node, round_number, barrier)) for node in (first, second)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(recorded) == 200 and set(recorded.values()) == {1}, recorded.most_common(3)
        total = first.database.cursor().execute("SELECT count(*), sum(quantity) FROM events").fetchall()[0]
        assert (total[0], Decimal(total[1])) == (200, Decimal(600))
        for node in (first, second):  # and each node's counters agree with the lake once it looks again
            node.ingestor.claim("_direct_ingest", [0])
            assert sum(node.quota(f"t{i}", "calls").used for i in range(4)) == Decimal(600)
