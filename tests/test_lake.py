"""The store on a DuckLake (PostgreSQL catalog, Parquet data): the file's schema, the same answers, restarts.

Every test runs against a real PostgreSQL server (tests/support/postgres_server.py) and
real Parquet files; nothing here skips.
"""

from __future__ import annotations

import shutil
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from support.lake_workload import answers as _answers
from support.lake_workload import record_all as _record_all
from support.lake_workload import workload as _workload
from support.lakes import LakeFactory
from usage_metering import Metering
from usage_metering.ingest.dedup import index_directory
from usage_metering.node.demo import init_demo
from usage_metering.schemas import EventStatus
from usage_metering.store import Database, DeadLetter, Lake, LakeError
from usage_metering.store.lake import connect_lake
from usage_metering.store.offsets import load_offsets


def test_a_new_lake_has_the_files_tables_columns_and_views(lakes: LakeFactory, tmp_path: Path) -> None:
    file = Database(tmp_path / "file.duckdb")
    lake = Database(tmp_path / "node", lake=lakes.new())
    try:
        def schema(database: Database, catalog: str) -> set[tuple[str, str, str, bool]]:
            return set(database.cursor().execute(
                "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() WHERE database_name = ?",
                [catalog],
            ).fetchall())

        file_schema, lake_schema = schema(file, "file"), schema(lake, "lake")
        assert lake_schema == file_schema
        assert {"events", "usage_hourly", "usage_daily", "current_plans"} <= {table for table, *_ in lake_schema}
        assert lake.schema_version == file.schema_version
        assert lake.cursor().execute("SELECT compact FROM rollup_state").fetchall() == [(False,)]  # seeded rows too
    finally:
        file.close()
        lake.close()


def test_the_same_events_answer_the_same_on_a_lake_as_on_a_file(lakes: LakeFactory, tmp_path: Path) -> None:
    with Metering.open(tmp_path / "file.duckdb") as on_file, Metering.open(tmp_path / "node", lake=lakes.new()) as on_lake:
        file_statuses, lake_statuses = _record_all(on_file), _record_all(on_lake)
        assert lake_statuses == file_statuses
        assert lake_statuses[EventStatus.DUPLICATE] > 0  # resends
        assert lake_statuses[EventStatus.BLOCKED] > 0  # the free tenant went past its blocking quota
        assert _answers(on_lake) == _answers(on_file)


def test_a_restarted_node_counts_each_event_once_with_or_without_its_local_key_files(
    lakes: LakeFactory, tmp_path: Path
) -> None:
    lake = lakes.new()
    node = tmp_path / "node"
    with Metering.open(node, lake=lake) as metering:
        first = _record_all(metering)
        before = _answers(metering)
    with Metering.open(node, lake=lake) as metering:  # the key runs on local disk are reused
        again = Counter(result.status for result in metering.record_events(_workload()))
        # what was stored is a duplicate now; what was blocked stays blocked (the quota is still used up)
        assert again == Counter({EventStatus.DUPLICATE: first[EventStatus.RECORDED] + first[EventStatus.DUPLICATE],
                                 EventStatus.BLOCKED: first[EventStatus.BLOCKED]})
        assert _answers(metering) == before
    shutil.rmtree(index_directory(node), ignore_errors=True)
    with Metering.open(tmp_path / "another-machine", lake=lake) as metering:  # rebuilt from the lake
        statuses = Counter(result.status for result in metering.record_events(_workload()))
        assert statuses[EventStatus.RECORDED] == 0
        assert _answers(metering) == before


def test_offsets_dead_letters_and_alerts_land_on_the_lake(lakes: LakeFactory, tmp_path: Path) -> None:
    lake = lakes.new()
    with Metering.open(tmp_path / "node", lake=lake) as metering:
        init_demo(metering)
        letter = DeadLetter("kafka", b"\xff not json", "malformed_json: -: not JSON", "usage-events", 3, 41)
        metering.ingestor.ingest([], offsets={("usage-events", 3): 42, ("usage-events", 5): 7}, dead_letters=[letter])
        metering.ingestor.ingest([], offsets={("usage-events", 3): 50})  # an update, not a second row
        assert load_offsets(metering.database.cursor(), "usage-events") == {3: 50, 5: 7}
        stored = metering.dead_letters()
        assert [(d.source, d.partition, d.offset, d.raw) for d in stored] == [("kafka", 3, 41, "\ufffd not json")]
        # tenant_globex (free plan, 1000 calls, notify thresholds) crosses 80% and 100%: alerts once each
        events = [{"tenant_id": "tenant_globex", "metric": "api_calls", "quantity": 100, "event_id": f"a{i}"}
                  for i in range(10)]
        metering.record_events(events)
        crossed = sorted(str(a.threshold_percent) for a in metering.alerts("tenant_globex"))
        metering.record_events(events)  # replays cross nothing again
        assert sorted(str(a.threshold_percent) for a in metering.alerts("tenant_globex")) == crossed
        assert crossed, "the free plan's thresholds were crossed"


def test_a_lake_newer_than_this_version_is_refused_and_nothing_is_changed(lakes: LakeFactory, tmp_path: Path) -> None:
    lake = lakes.new()
    Database(tmp_path / "node", lake=lake).close()
    connection = connect_lake(lake, memory_limit="256MB")
    connection.execute("INSERT INTO schema_migrations VALUES (999, now()::timestamp)")
    connection.close()
    with pytest.raises(LakeError, match="schema version 999"):
        Database(tmp_path / "node", lake=lake)
    connection = connect_lake(lake, memory_limit="256MB")
    assert connection.execute("SELECT max(version) FROM schema_migrations").fetchall() == [(999,)]
    connection.close()


def test_a_lake_made_before_daily_rollups_upgrades_and_answers_the_same(
    lakes: LakeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 10 adds a table and a column, 11 replaces the analysts' views: on DuckLake, through its SQL."""
    import usage_metering.store.lake as lake_module
    import usage_metering.store.migrations as migrations_module

    before_daily_rollups = tuple(step for step in migrations_module.MIGRATIONS if step[0] <= 9)
    monkeypatch.setattr(migrations_module, "MIGRATIONS", before_daily_rollups)
    monkeypatch.setattr(lake_module, "MIGRATIONS", before_daily_rollups)
    lake = lakes.new()
    with Metering.open(tmp_path / "node", lake=lake) as metering:
        assert metering.database.schema_version == 9
        recorded = _record_all(metering)[EventStatus.RECORDED]
        before = _answers(metering)
    monkeypatch.undo()

    with Metering.open(tmp_path / "node", lake=lake) as metering:
        assert metering.database.schema_version == max(version for version, _step in migrations_module.MIGRATIONS)
        assert _answers(metering) == before
        cursor = metering.database.cursor()
        assert cursor.execute("SELECT days_sealed_before FROM rollup_state").fetchall() == [(None,)]
        assert metering.compact_rollups() == 0  # a lake is never sealed
        demo_events = cursor.execute("SELECT count(*) FROM events").fetchall()[0][0]
        assert demo_events >= recorded
        assert cursor.execute("SELECT sum(event_count) FROM usage_daily").fetchall() == [(demo_events,)]
        assert cursor.execute("SELECT sum(event_count) FROM usage_monthly").fetchall() == [(demo_events,)]


def test_a_missing_catalog_is_a_clear_error(lakes: LakeFactory, tmp_path: Path) -> None:
    missing = Lake(f"postgres:{lakes.catalog_dsn('no_such_database')}", str(tmp_path / "data"))
    with pytest.raises(LakeError, match="cannot open the lake"):
        Database(tmp_path / "node", lake=missing)
    with pytest.raises(LakeError, match="does not exist"):  # read-only never creates a lake
        Database(tmp_path / "node", lake=lakes.new(), read_only=True)
    empty = lakes.new()
    connect_lake(empty, memory_limit="256MB").close()  # a DuckLake, but no node made its tables yet
    with pytest.raises(LakeError, match="no metering schema"):
        Database(tmp_path / "node", lake=empty, read_only=True)


def test_analysts_attach_the_lake_read_only_with_plain_duckdb(lakes: LakeFactory, tmp_path: Path) -> None:
    lake = lakes.new()
    with Metering.open(tmp_path / "node", lake=lake) as metering:
        _record_all(metering)
        expected = metering.database.cursor().execute(
            "SELECT tenant_id, sum(quantity_sum) FROM usage_daily GROUP BY ALL ORDER BY ALL").fetchall()
    analyst = duckdb.connect()
    from usage_metering.store.lake import extension_directory, load_extensions

    analyst.execute(f"SET extension_directory = '{extension_directory()}'")
    load_extensions(analyst, ["ducklake", "postgres"])
    analyst.execute(f"ATTACH 'ducklake:{lake.catalog}' AS metering (READ_ONLY)")
    rows = analyst.execute(
        "SELECT tenant_id, sum(quantity_sum) FROM metering.usage_daily GROUP BY ALL ORDER BY ALL").fetchall()
    assert rows == expected and rows
    with pytest.raises(duckdb.Error, match="read-only|read only"):
        analyst.execute("DELETE FROM metering.events")
    analyst.close()


def test_nodes_starting_together_on_a_new_lake_make_its_schema_once(lakes: LakeFactory, tmp_path: Path) -> None:
    import threading

    lake = lakes.new()
    opened: list[Database] = []
    errors: list[BaseException] = []

    def open_node(n: int) -> None:
        try:
            opened.append(Database(tmp_path / f"node-{n}", lake=lake))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=open_node, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        cursor = opened[0].cursor()
        assert cursor.execute("SELECT count(*) FROM schema_migrations").fetchall() == [(1,)]
        assert cursor.execute("SELECT count(*) FROM rollup_state").fetchall() == [(1,)]
    finally:
        for database in opened:
            database.close()


def test_maintenance_during_ingest_merges_files_and_changes_no_answer(lakes: LakeFactory, tmp_path: Path) -> None:
    import threading
    from datetime import timedelta

    with Metering.open(tmp_path / "node", lake=lakes.new()) as metering:
        init_demo(metering)
        passes: list[Any] = []
        stop = threading.Event()

        def maintain() -> None:
            while not stop.is_set():
                passes.append(metering.maintain_lake(timedelta(0)))

        thread = threading.Thread(target=maintain)
        thread.start()
        try:
            for batch in range(40):  # many small commits: inlined rows and small files to fold
                statuses = metering.record_events(
                    [{"tenant_id": "tenant_newco", "metric": "compute_minutes", "quantity": "0.5",
                      "user_id": f"u{i % 5}", "event_id": f"m-{batch}-{i}"} for i in range(30)])
                assert {r.status for r in statuses} == {EventStatus.RECORDED}
        finally:
            stop.set()
            thread.join()
        assert passes and all(not p.failed for p in passes[-1:])
        before = _answers(metering)
        final = metering.maintain_lake(timedelta(0))
        assert not final.failed, final.failed
        assert _answers(metering) == before
        cursor = metering.database.cursor()
        assert cursor.execute("SELECT count(*), sum(quantity) FROM events WHERE tenant_id = 'tenant_newco'"
                              ).fetchall() == [(1200, Decimal("600"))]
        files = cursor.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events')").fetchall()[0][0]
        assert files <= 2, f"{files} data files left for events after merging"
