"""Sealed days: whole past days read from daily rollups answer exactly as the events do.

Every reader, and the analysts' views, is checked against SQL over the raw `events` table: before
sealing, after it, after late events for sealed days (and resends of stored
ones), after the daily deltas are folded, and with sealing running beside
ingest. Also: a file from before the daily table upgrades and seals.
"""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from support.nodes import ServerProcess
from usage_metering import Metering
from usage_metering.ingest import Ingestor
from usage_metering.schemas import Aggregation, UsageTotals, parse_event
from usage_metering.store import Database
from usage_metering.store.migrations import MIGRATIONS, apply_migrations
from usage_metering.store.sealed_days import DAY, days_sealed_before, split_window, start_of_day
from usage_metering.store.usage import (
    aggregate_states_for_windows,
    top_users,
    usage_totals,
    usage_totals_by_day,
    usage_values_for_windows,
)

NOW = datetime.now(timezone.utc)
TODAY = start_of_day(NOW)
AGGREGATIONS = {f"m_{a.value.lower()}": a for a in Aggregation}
TENANTS = ("t1", "t2", "t3")


def random_event(rng: random.Random, i: int, days_back: int = 6) -> Any:
    moment = NOW - timedelta(microseconds=rng.randint(1, days_back * 86_400 * 10**6))
    fields = {"tenant_id": rng.choice(TENANTS), "metric": rng.choice(list(AGGREGATIONS)),
              "quantity": str(Decimal(rng.randint(0, 10**6)) / 1000), "user_id": rng.choice(["a", "b", "c", None]),
              "event_id": f"e{i}", "timestamp": moment.isoformat()}
    return parse_event(fields, now=NOW)


def truth(cursor: duckdb.DuckDBPyConnection, tenant: str, metric: str, start: datetime, end: datetime) -> UsageTotals:
    row = cursor.execute(
        "SELECT sum(quantity), count(*), max(quantity), count(DISTINCT user_id), arg_max(quantity, ts) "
        "FROM events WHERE tenant_id = ? AND metric = ? AND ts >= ? AND ts < ?",
        [tenant, metric, start.replace(tzinfo=None), end.replace(tzinfo=None)],
    ).fetchall()[0]
    total, count, maximum, users, latest = row
    return UsageTotals(Decimal(total or 0), int(count), Decimal(maximum or 0), int(users), Decimal(latest or 0))


def windows() -> list[tuple[datetime, datetime]]:
    """Day-aligned and not, wholly sealed, partly, and not at all."""
    return [
        (TODAY - 7 * DAY, TODAY + DAY),
        (TODAY - 4 * DAY + timedelta(hours=5), NOW + timedelta(minutes=1)),
        (TODAY - 3 * DAY, TODAY - 2 * DAY),
        (TODAY - 2 * DAY + timedelta(hours=23), TODAY - DAY + timedelta(hours=1)),
        (TODAY, TODAY + DAY),
    ]


def assert_every_reader_exact(cursor: duckdb.DuckDBPyConnection) -> None:
    for view, bucket in (("usage_daily", "CAST(ts AS DATE)"), ("usage_monthly", "date_trunc('month', ts)")):
        assert sorted(cursor.execute(f"SELECT * FROM {view}").fetchall()) == sorted(cursor.execute(
            f"SELECT tenant_id, metric, {bucket}, sum(quantity), max(quantity), count(*), count(DISTINCT user_id) "
            "FROM events GROUP BY ALL").fetchall()), view
    for start, end in windows():
        values = usage_values_for_windows(cursor, [(t, start, end) for t in TENANTS], AGGREGATIONS)
        states = aggregate_states_for_windows(cursor, [(t, start, end) for t in TENANTS])
        for tenant in TENANTS:
            for metric, aggregation in AGGREGATIONS.items():
                expected = truth(cursor, tenant, metric, start, end)
                assert usage_totals(cursor, tenant, metric, start, end) == expected, (tenant, metric, start, end)
                if expected.count:
                    assert values[(tenant, start)][metric] == expected.value(aggregation)
                    state = states[(tenant, metric, start)]
                    assert (state.total, state.count, len(state.users)) == (expected.total, expected.count,
                                                                           expected.unique_users)
                by_day = dict(usage_totals_by_day(cursor, tenant, metric, start, end))
                for day, totals in by_day.items():
                    day_start = max(start, datetime(day.year, day.month, day.day, tzinfo=timezone.utc))
                    assert totals == truth(cursor, tenant, metric, day_start, min(end, day_start.replace(
                        hour=0) + DAY)), (tenant, metric, day)
            ranked = [(u.user_id, u.totals.total) for u in
                      top_users(cursor, tenant, "m_sum", Aggregation.SUM, start, end, 10)]
            assert ranked == [(user, Decimal(total)) for user, total in cursor.execute(
                "SELECT user_id, sum(quantity) FROM events WHERE tenant_id = ? AND metric = 'm_sum' "
                "AND ts >= ? AND ts < ? AND user_id IS NOT NULL GROUP BY user_id ORDER BY 2 DESC, 1",
                [tenant, start.replace(tzinfo=None), end.replace(tzinfo=None)]).fetchall()]


@pytest.mark.unit
def test_split_window_reads_whole_sealed_days_from_daily_rows() -> None:
    day = datetime(2026, 11, 10, tzinfo=timezone.utc)
    assert split_window(day, day + 3 * DAY, None) == (None, [(day, day + 3 * DAY)])
    assert split_window(day, day + 3 * DAY, day + 2 * DAY) == ((day, day + 2 * DAY), [(day + 2 * DAY, day + 3 * DAY)])
    assert split_window(day, day + 3 * DAY, day + 5 * DAY) == ((day, day + 3 * DAY), [])
    odd = day + timedelta(hours=5)
    assert split_window(odd, day + 3 * DAY, day + 5 * DAY) == ((day + DAY, day + 3 * DAY), [(odd, day + DAY)])
    assert split_window(odd, day + DAY + timedelta(hours=1), day + 5 * DAY) == (None, [(odd, day + DAY + timedelta(hours=1))])
    assert split_window(day, day + 3 * DAY, day) == (None, [(day, day + 3 * DAY)])


@pytest.mark.integration
def test_sealed_days_late_events_and_resends_answer_as_the_events_do(tmp_path: Path) -> None:
    rng = random.Random(11)
    with Metering.open(tmp_path / "m.duckdb") as metering:
        metering.ingestor.compactor.stop()  # passes only when the test says
        for name, aggregation in AGGREGATIONS.items():
            metering.define_metric({"name": name, "aggregation": aggregation.value})
        cursor = metering.database.cursor()
        first = [random_event(rng, i) for i in range(1500)]
        for k in range(0, len(first), 100):
            metering.record_events(first[k:k + 100])
        assert days_sealed_before(cursor) is None
        assert_every_reader_exact(cursor)

        assert metering.compact_rollups() >= 4  # six days back; yesterday's once it ended an hour ago
        sealed = days_sealed_before(cursor)
        assert sealed is not None and TODAY - DAY <= sealed <= TODAY
        assert metering.ingestor.compactor.sealed_before == sealed
        assert cursor.execute("SELECT count(*) FROM usage_daily_rollup").fetchall()[0][0] > 0
        assert_every_reader_exact(cursor)

        daily_rows = cursor.execute("SELECT count(*) FROM usage_daily_rollup").fetchall()[0][0]
        late = [random_event(rng, i) for i in range(1500, 2100)]  # most of them for sealed days
        resent = rng.sample(first, 200)
        for k in range(0, len(late), 60):
            outcomes = metering.record_events([*late[k:k + 60], *resent[k // 3:k // 3 + 20]])
            assert [o.status for o in outcomes].count("duplicate") == len(resent[k // 3:k // 3 + 20])
        assert cursor.execute("SELECT count(*) FROM usage_daily_rollup").fetchall()[0][0] > daily_rows  # deltas
        assert_every_reader_exact(cursor)

        metering.compact_rollups()  # folds the late daily deltas
        groups = cursor.execute(
            "SELECT count(*), count(DISTINCT (tenant_id, metric, user_id, day)) FROM usage_daily_rollup").fetchall()[0]
        assert groups[0] == groups[1]
        assert_every_reader_exact(cursor)
        invoices = metering.billing_report(period=(TODAY - 20 * DAY).strftime("%Y-%m"))
        assert invoices  # the previous month's report runs on sealed days too


@pytest.mark.unit
def test_sealing_beside_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    database = Database(tmp_path / "m.duckdb")
    ingestor = Ingestor(database, compact_interval_seconds=0).start()
    rng = random.Random(3)
    stop = threading.Event()
    sealed: list[int] = []

    def seal_one_day_at_a_time() -> None:
        while not stop.is_set():
            sealed.append(ingestor.compactor.seal_due_days(limit=1))

    try:
        ingestor.ingest([random_event(rng, i, days_back=12) for i in range(300)])  # usage on every day to seal
        sealer = threading.Thread(target=seal_one_day_at_a_time)
        sealer.start()
        futures, i = [], 300
        while sum(sealed) < 11 and i < 30_000:  # commits go on while the days are sealed one by one
            futures.append(ingestor.submit([random_event(rng, i + k, days_back=12) for k in range(30)]))
            i += 30
            if len(futures) % 10 == 0:
                futures[-1].result()
        assert all(o.status == "recorded" for f in futures for o in f.result())
        stop.set()
        sealer.join()
        assert sum(sealed) >= 11 and len(futures) >= 20
        cursor = database.cursor()
        start = TODAY - 13 * DAY
        for tenant in TENANTS:
            for metric in AGGREGATIONS:
                totals = usage_totals(cursor, tenant, metric, start, TODAY + DAY)
                assert totals == truth(cursor, tenant, metric, start, TODAY + DAY)
        sums = cursor.execute("SELECT sum(event_count) FROM usage_daily_rollup WHERE day < ?",
                              [days_sealed_before(cursor).replace(tzinfo=None)]).fetchall()[0][0]
        assert sums == cursor.execute("SELECT count(*) FROM events WHERE ts < ?",
                                      [days_sealed_before(cursor).replace(tzinfo=None)]).fetchall()[0][0]
    finally:
        stop.set()
        ingestor.stop()
        database.close()


@pytest.mark.unit
def test_a_file_from_before_daily_rollups_upgrades_and_seals(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    assert apply_migrations(con, up_to=9) == 9
    hour = (TODAY - 3 * DAY).replace(tzinfo=None, hour=7)
    con.execute("INSERT INTO tenants VALUES ('t1', 't1', NULL, 1, now(), NULL)")
    con.execute(
        "INSERT INTO usage_hourly VALUES ('t1', 'calls', 'u1', ?, 10.5, 7, 3, ?, 2), ('t1', 'calls', '', ?, 4, 4, 1, ?, 4)",
        [hour, hour, hour + timedelta(hours=20), hour + timedelta(hours=20)],
    )
    con.close()

    with Metering.open(path) as metering:
        assert metering.database.schema_version == max(version for version, _sql in MIGRATIONS) >= 10
        cursor = metering.database.cursor()
        window = (TODAY - 5 * DAY, TODAY + DAY)
        before = UsageTotals(Decimal("14.5"), 4, Decimal(7), 1, Decimal(4))
        metering.compact_rollups()  # (the node's first background pass may have sealed them already)
        assert days_sealed_before(cursor) == TODAY - DAY
        assert usage_totals(cursor, "t1", "calls", *window) == before
        # the two days with usage, each a row; the days between them were sealed with them
        assert cursor.execute("SELECT count(*) FROM usage_daily_rollup").fetchall()[0][0] == 2


@pytest.mark.integration
def test_a_node_seals_past_days_and_counts_late_events_over_http(tmp_path: Path) -> None:
    """The real path: a server process seals the days it stored on a clean stop; after a restart, late
    events for a sealed day still count, in the usage a client reads over HTTP."""
    path, tenant = tmp_path / "m.duckdb", "seal-e2e"
    moments = [TODAY - days * DAY + timedelta(hours=3 + days) for days in (6, 5, 4, 3)]
    first = [{"tenant_id": tenant, "metric": "calls", "quantity": f"{k}.5", "user_id": f"u{k}", "event_id": f"e{k}",
              "timestamp": moment.isoformat()} for k, moment in enumerate(moments)]
    late = [{"tenant_id": tenant, "metric": "calls", "quantity": "100", "timestamp": moments[0].isoformat()},
            first[0]]  # a new event for the first day, and a resend of that day's first event
    window = f"?from={(TODAY - 7 * DAY).date().isoformat()}&to={TODAY.date().isoformat()}&daily=true"

    node = ServerProcess(path, demo=False)
    try:
        node.start()
        assert node.request("POST", "/api/events/batch", json_body={"events": first})[2]["recorded"] == 4
        node.stop()  # a clean stop folds and seals what is due
    finally:
        node.close()
    with duckdb.connect(str(path), read_only=True) as con:
        sealed = days_sealed_before(con)
        assert sealed is not None and sealed > moments[0]
        assert con.execute("SELECT count(*) FROM usage_daily_rollup").fetchall()[0][0] >= 1

    node = ServerProcess(path, demo=False)
    try:
        node.start()
        answer = node.request("POST", "/api/events/batch", json_body={"events": late})[2]
        assert (answer["recorded"], answer["duplicates"]) == (1, 1)
        status, _headers, usage = node.request("GET", f"/api/usage/{tenant}/calls{window}")
        assert status == 200
        assert (Decimal(str(usage["value"])), usage["event_count"]) == (Decimal("108.0"), 5)
        by_day = {day["date"]: Decimal(str(day["value"])) for day in usage["daily"]}
        assert by_day[moments[0].date().isoformat()] == Decimal("100.5")
        node.stop()
    finally:
        node.close()
    with duckdb.connect(str(path), read_only=True) as con:
        late_day = con.execute(
            "SELECT sum(quantity_sum), sum(event_count) FROM usage_daily_rollup WHERE day = ?",
            [start_of_day(moments[0]).replace(tzinfo=None)]).fetchall()[0]
        assert (Decimal(late_day[0]), late_day[1]) == (Decimal("100.5"), 2)  # the late event is in its sealed day
