"""The analyst surface: export, import and the node's read-only snapshot.

Export/import run the real CLI (CliRunner) on real DuckDB files in tmp_path;
the snapshot tests run a real server process and open the published snapshot
read-only from this process while the node keeps running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pytest
from click.testing import CliRunner, Result

from support.nodes import ServerProcess
from usage_metering.cli import cli
from usage_metering.metering import Metering

NOW = datetime.now(timezone.utc).replace(microsecond=123456)
DAYS = [(NOW - timedelta(days=d)).date() for d in (3, 2, 1)]  # oldest first
QUANTITIES = ["0.000000001", "123456789.123456789", "2.5", "7"]  # plain decimal text, as the API takes it


def run(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


def make_events() -> list[dict[str, Any]]:
    """12 events: 2 tenants x 3 days x 2, exact decimals, some without user or properties."""
    events = []
    for day_index, day in enumerate(DAYS):
        for tenant in ("acme", "globex"):
            for n in range(2):
                i = len(events)
                at = datetime(day.year, day.month, day.day, 10 + n, 30, 15, 250000 + i, tzinfo=timezone.utc)
                event: dict[str, Any] = {
                    "tenant_id": tenant, "metric": "calls" if n == 0 else "storage_gb",
                    "quantity": QUANTITIES[i % 4], "event_id": f"ev-{i}", "timestamp": at.isoformat(),
                }
                if i % 3:
                    event["user_id"] = f"user-{i % 2}"
                if i % 2:
                    event["properties"] = {"region": "eu", "n": i, "tags": ["a", "b"]}
                events.append(event)
    return events


EVENTS = make_events()


@pytest.fixture()
def source_db(tmp_path: Path) -> Path:
    db = tmp_path / "source.duckdb"
    with Metering.open(db) as metering:
        assert {r.status for r in metering.record_events(EVENTS)} == {"recorded"}
    return db


def stored_events(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT tenant_id, event_id, metric, quantity, user_id, ts, CAST(properties AS VARCHAR) "
            "FROM events ORDER BY tenant_id, event_id"
        ).fetchall()


def daily_totals(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT tenant_id, metric, day, quantity_sum, event_count FROM usage_daily ORDER BY ALL"
        ).fetchall()


# -- export ---------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_then_import_into_a_fresh_db_gives_identical_events_and_totals(
    source_db: Path, tmp_path: Path, fmt: str
) -> None:
    exported = tmp_path / f"events.{fmt}"
    result = run(source_db, "--format", "json", "export", "--format", fmt, "--output", str(exported))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"rows": 12, "format": fmt, "path": str(exported)}

    fresh = tmp_path / "fresh.duckdb"
    result = run(fresh, "--format", "json", "import", str(exported))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["recorded"], summary["duplicates"], summary["blocked"], summary["rejected"]) == (12, 0, 0, 0)

    assert stored_events(fresh) == stored_events(source_db)
    totals = daily_totals(fresh)
    assert totals == daily_totals(source_db)
    assert sum(row[3] for row in totals) == sum(Decimal(e["quantity"]) for e in EVENTS)


@pytest.mark.unit
def test_each_format_reads_back_with_exact_quantities_and_utc_times(source_db: Path, tmp_path: Path) -> None:
    expected = sorted((e["event_id"], Decimal(e["quantity"])) for e in EVENTS)
    for fmt in ("parquet", "csv", "jsonl"):
        assert run(source_db, "export", "--output", str(tmp_path / f"out.{fmt}")).exit_code == 0  # format from suffix
    with duckdb.connect() as con:
        schema = dict(con.execute(f"DESCRIBE SELECT * FROM read_parquet('{tmp_path / 'out.parquet'}')").fetchall()[i][:2]
                      for i in range(7))
        assert schema["quantity"] == "DECIMAL(38,9)"
        assert schema["timestamp"] == "TIMESTAMP WITH TIME ZONE"
        parquet = con.execute(f"SELECT event_id, quantity FROM read_parquet('{tmp_path / 'out.parquet'}')").fetchall()
        csv_rows = con.execute(
            f"SELECT event_id, quantity, timestamp FROM read_csv('{tmp_path / 'out.csv'}', all_varchar = true)"
        ).fetchall()
        jsonl = con.execute(
            f"SELECT event_id, quantity, timestamp FROM read_json('{tmp_path / 'out.jsonl'}', format = 'newline_delimited')"
        ).fetchall()
    assert sorted(parquet) == expected
    assert sorted((e, Decimal(q)) for e, q, _ts in csv_rows) == expected
    assert sorted((e, Decimal(str(q))) for e, q, _ts in jsonl) == expected
    assert all(isinstance(q, str) for _e, q, _ts in jsonl)  # plain decimal text, never a float
    first = EVENTS[0]
    raw_jsonl = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for rows in (csv_rows, [(r["event_id"], r["quantity"], r["timestamp"]) for r in raw_jsonl]):
        stamp = next(ts for e, _q, ts in rows if e == first["event_id"])
        assert stamp.endswith("Z")
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) == datetime.fromisoformat(first["timestamp"])


@pytest.mark.unit
def test_export_date_and_tenant_filters(source_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    middle = DAYS[1].isoformat()
    result = run(source_db, "--format", "json", "export", "--from", middle, "--to", middle, "--output", str(out))
    assert json.loads(result.stdout)["rows"] == 4
    days = {json.loads(line)["timestamp"][:10] for line in out.read_text().splitlines()}
    assert days == {middle}

    result = run(source_db, "--format", "json", "export", "--from", middle, "--tenant", "globex", "--output", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert json.loads(result.stdout)["rows"] == len(rows) == 4
    assert {r["tenant_id"] for r in rows} == {"globex"}

    result = run(source_db, "export", "--from", DAYS[2].isoformat(), "--to", DAYS[0].isoformat(), "--output", str(out))
    assert result.exit_code == 2 and "must not be before from" in result.output


@pytest.mark.unit
def test_export_needs_a_file(source_db: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:1", "export"])
    assert result.exit_code == 2
    assert "export needs the database file" in result.output and "snapshot" in result.output
    result = run(tmp_path / "missing.duckdb", "export", "--output", str(tmp_path / "x.csv"))
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not (tmp_path / "missing.duckdb").exists()  # read-only: never creates the file


# -- import ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_import_twice_gives_only_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    db = tmp_path / "m.duckdb"
    first = json.loads(run(db, "--format", "json", "import", str(path)).stdout)
    second = run(db, "--format", "json", "import", str(path))
    assert second.exit_code == 0
    assert first["recorded"] == 12
    assert json.loads(second.stdout) == {"recorded": 0, "duplicates": 12, "blocked": 0, "rejected": 0, "accepted": 0, "reasons": {}}
    assert len(stored_events(db)) == 12


@pytest.mark.unit
def test_import_bad_jsonl_lines_are_counted_grouped_and_dead_lettered(tmp_path: Path) -> None:
    good = EVENTS[:3]
    lines = [
        json.dumps(good[0]),
        "{not json",                                                          # line 2
        json.dumps({"tenant_id": "acme", "metric": "calls", "quantity": "-1"}),  # line 3
        "",
        json.dumps(good[1]),
        json.dumps({"tenant_id": "acme", "metric": "calls", "quantity": "1", "color": "red"}),  # line 6
        json.dumps({"tenant_id": "acme", "metric": "calls", "quantity": "abc"}),  # line 7
        json.dumps(good[2]),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    db = tmp_path / "m.duckdb"
    result = run(db, "--format", "json", "import", str(path))
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["recorded"], summary["duplicates"], summary["blocked"], summary["rejected"]) == (3, 0, 0, 4)
    reasons = {code: (group["count"], group["lines"]) for code, group in summary["reasons"].items()}
    assert reasons["malformed_json"] == (1, [2])
    assert sum(count for count, _lines in reasons.values()) == 4
    assert sorted(line for _count, lines in reasons.values() for line in lines) == [2, 3, 6, 7]
    assert any(count == 2 and lines == [3, 7] for count, lines in reasons.values())  # both bad quantities

    table = run(db, "import", str(path))  # table output: reasons on stderr, still exit 1
    assert table.exit_code == 1 and "malformed_json: 1 (lines 2)" in table.stderr

    letters = json.loads(run(db, "--format", "json", "dead-letters").stdout)
    first_run = sorted(letters, key=lambda d: d["id"])[:4]  # ids follow arrival
    assert {(d["source"], d["topic"], d["offset"]) for d in first_run} == {("import", "bad.jsonl", n) for n in (2, 3, 6, 7)}
    assert next(d for d in first_run if d["offset"] == 2)["raw"].strip() == "{not json"
    assert "color" in next(d for d in first_run if d["offset"] == 6)["reason"]


@pytest.mark.unit
def test_import_csv_with_properties_and_a_bad_row(tmp_path: Path) -> None:
    day = DAYS[2]
    path = tmp_path / "events.csv"
    path.write_text(
        "tenant_id,metric,quantity,user_id,event_id,timestamp,properties\n"
        f"acme,calls,0.000000001,u1,c1,{day}T08:00:00Z,\"{{\"\"k\"\": 1.5}}\"\n"
        f"acme,calls,12.25,,c2,{day}T09:00:00Z,\n"
        f"acme,calls,1,u1,c3,{day}T09:00:00Z,{{broken\n"
    )
    db = tmp_path / "m.duckdb"
    result = run(db, "--format", "json", "import", str(path))
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["recorded"], summary["rejected"]) == (2, 1)
    assert summary["reasons"]["malformed_json"]["lines"] == [4]
    rows = stored_events(db)
    assert [(r[1], r[3], r[4], r[6]) for r in rows] == [
        ("c1", Decimal("0.000000001"), "u1", '{"k":1.5}'),
        ("c2", Decimal("12.25"), None, None),
    ]
    missing = tmp_path / "nohead.csv"
    missing.write_text("tenant,metric\nacme,calls\n")
    result = run(db, "import", str(missing))
    assert result.exit_code == 2 and "quantity" in result.output and "tenant_id" in result.output


# -- the snapshot, against a real node --------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def query_snapshot(path: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """Open the snapshot the way an analyst does; None while it does not exist yet."""
    if not path.exists():
        return None
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def post_batch(node: ServerProcess, events: list[dict[str, Any]]) -> dict[str, Any]:
    status, _headers, body = node.request("POST", "/api/events/batch", json_body={"events": events})
    assert status == 200, body
    return body


def event(tenant: str, i: int, quantity: str = "1.5", **extra: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "metric": "calls", "quantity": quantity, "event_id": f"{tenant}-{i}",
            "user_id": f"u{i % 3}", "timestamp": (NOW - timedelta(hours=1)).isoformat(), **extra}


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "node.duckdb", demo=False, options={"snapshot_interval": 0.3})
    try:
        yield process.start()
    finally:
        process.close()


@pytest.mark.integration
def test_snapshot_is_readable_while_the_node_runs_and_follows_new_events(node: ServerProcess, tmp_path: Path) -> None:
    snapshot = tmp_path / "node.snapshot.duckdb"
    plan = {"name": "Pro", "currency": "USD", "base_fee": "10",
            "metrics": [{"metric": "calls", "included": 1000, "policy": "charge", "unit_price": "0.01"}]}
    status, _h, body = node.request("PUT", "/api/plans/pro", json_body=plan)
    assert status in (200, 201), body
    assert post_batch(node, [event("snapa", i, "0.000000001" if i == 0 else "2.25") for i in range(50)])["recorded"] == 50
    total = Decimal("0.000000001") + 49 * Decimal("2.25")

    counted = "SELECT count(*), sum(quantity) FROM events WHERE tenant_id = 'snapa'"
    wait_for(lambda: (query_snapshot(snapshot, counted) or [(0, None)])[0][0] == 50)
    assert query_snapshot(snapshot, counted) == [(50, total)]
    assert query_snapshot(snapshot, "SELECT sum(quantity_sum), sum(event_count) FROM usage_daily WHERE tenant_id = 'snapa'") == [(total, 50)]
    assert query_snapshot(snapshot, "SELECT sum(quantity_sum), max(unique_users) FROM usage_monthly WHERE tenant_id = 'snapa'") == [(total, 3)]
    assert query_snapshot(snapshot, "SELECT plan_id, version, base_fee FROM current_plans") == [("pro", 1, Decimal("10"))]
    # Temp files are renamed or removed: one may exist while a snapshot is written (every 0.3 s), but not stay.
    in_progress = set(tmp_path.glob(".node.snapshot.duckdb.tmp-*"))
    wait_for(lambda: not in_progress & set(tmp_path.glob(".node.snapshot.duckdb.tmp-*")))

    # The main file stays the node's: export explains, and works on the snapshot instead.
    locked = run(tmp_path / "node.duckdb", "export", "--output", str(tmp_path / "x.csv"))
    assert locked.exit_code == 1 and "snapshot" in locked.output
    out = tmp_path / "from-snapshot.csv"
    exported = run(snapshot, "--format", "json", "export", "--tenant", "snapa", "--output", str(out))
    assert exported.exit_code == 0 and json.loads(exported.stdout)["rows"] == 50

    assert post_batch(node, [event("snapb", i, "3") for i in range(20)])["recorded"] == 20
    wait_for(lambda: query_snapshot(snapshot, "SELECT count(*) FROM events WHERE tenant_id = 'snapb'") == [(20,)])
    assert query_snapshot(snapshot, counted) == [(50, total)]


def duckdb_cli() -> Path:
    """The `duckdb` command from PyPI's duckdb-cli (what analysts install), next to this interpreter."""
    command = Path(sys.executable).parent / "duckdb"
    assert command.exists(), "duckdb-cli is a test dependency: pip install -e '.[test]'"
    return command


@pytest.mark.integration
def test_the_duckdb_cli_analysts_install_reads_the_snapshot_and_the_stopped_nodes_file(
    node: ServerProcess, tmp_path: Path
) -> None:
    snapshot = tmp_path / "node.snapshot.duckdb"
    assert post_batch(node, [event("clia", i, "0.125") for i in range(8)])["recorded"] == 8
    wait_for(lambda: query_snapshot(snapshot, "SELECT count(*) FROM events WHERE tenant_id = 'clia'") == [(8,)])
    sql = ("SELECT count(*) AS n, CAST(sum(quantity) AS VARCHAR) AS total, "
           "(SELECT CAST(sum(quantity_sum) AS VARCHAR) FROM usage_daily WHERE tenant_id = 'clia') AS daily "
           "FROM events WHERE tenant_id = 'clia'")
    expected = [{"n": 8, "total": "1.000000000", "daily": "1.000000000"}]
    for path in (snapshot, None):
        if path is None:  # the node's own file, once the node has stopped
            node.stop()
            path = tmp_path / "node.duckdb"
        shown = subprocess.run([str(duckdb_cli()), "-readonly", "-json", str(path), "-c", sql],
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == expected, shown.stdout


@pytest.mark.integration
def test_node_keeps_answering_while_snapshots_happen_and_each_is_consistent(node: ServerProcess, tmp_path: Path) -> None:
    snapshot = tmp_path / "node.snapshot.duckdb"
    stop = threading.Event()
    failures: list[Any] = []
    sent = [0]

    def load() -> None:
        i = 0
        while not stop.is_set():
            status, _h, body = node.request("POST", "/api/events/batch",
                                            json_body={"events": [event("load", i + k, "0.5") for k in range(100)]})
            if status != 200 or body["recorded"] != 100:
                failures.append((status, body))
            i += 100
            sent[0] = i

    worker = threading.Thread(target=load)
    worker.start()
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            rows = query_snapshot(
                snapshot,
                "SELECT (SELECT count(*) FROM events), (SELECT coalesce(sum(quantity), 0) FROM events), "
                "(SELECT coalesce(sum(event_count), 0) FROM usage_daily), "
                "(SELECT coalesce(sum(quantity_sum), 0) FROM usage_daily)",
            )
            if rows:
                count, quantity, rolled_count, rolled_quantity = rows[0]
                assert (count, quantity) == (rolled_count, rolled_quantity)  # whole batches: events agree with rollups
                assert count % 100 == 0
                seen.add(count)
            status, _h, _b = node.request("GET", "/healthz")
            assert status == 200
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    assert not failures
    assert len(seen) >= 3, seen  # several different snapshots replaced each other under load
    assert sent[0] >= 1000


@pytest.mark.integration
def test_a_snapshot_is_written_at_sigterm_shutdown(tmp_path: Path) -> None:
    db = tmp_path / "node.duckdb"
    custom = tmp_path / "analysts" / "latest.duckdb"
    process = ServerProcess(db, demo=False, options={"snapshot_interval": 3600, "snapshot_path": str(custom)})
    try:
        process.start()
        assert post_batch(process, [event("bye", i, "1.1") for i in range(30)])["recorded"] == 30
        assert not custom.exists()  # the first tick is an hour away
        process.stop()  # SIGTERM; exits 0
    finally:
        process.close()
    assert query_snapshot(custom, "SELECT count(*), sum(quantity) FROM events") == [(30, Decimal("33.0"))]
    assert not (tmp_path / "node.snapshot.duckdb").exists()


@pytest.mark.integration
def test_no_snapshot_when_the_interval_is_zero(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "node.duckdb", demo=False, options={"snapshot_interval": 0})
    try:
        process.start()
        post_batch(process, [event("off", 0)])
        process.stop()
    finally:
        process.close()
    assert not (tmp_path / "node.snapshot.duckdb").exists()
