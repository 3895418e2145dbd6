"""The command line in file mode, against a real DuckDB file.

Every command runs through click's CliRunner with `--db` pointing at a file in
tmp_path, so each invocation opens and closes the library like a user's would.
(--url mode gets the same checks once the server is ready: the commands only
talk to a Backend, so those tests only need another `run` helper.)
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from usage_metering.cli import cli

PLAN = {
    "plan_id": "metered",
    "name": "Metered",
    "currency": "USD",
    "base_fee": "5",
    "metrics": [{"metric": "api_calls", "included": 10, "policy": "charge", "unit_price": "0.5"}],
}
EVENTS = [
    {"tenant_id": "t1", "metric": "api_calls", "quantity": 4, "user_id": "u1", "event_id": "e1"},
    {"tenant_id": "t1", "metric": "api_calls", "quantity": 5, "user_id": "u2", "event_id": "e2"},
    {"tenant_id": "t1", "metric": "api_calls", "quantity": 6.5, "user_id": "u1", "event_id": "e3"},
]


def run(db: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args], input=input, catch_exceptions=False)


def run_json(db: Path, *args: str) -> object:
    result = run(db, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "metering.duckdb"


@pytest.fixture()
def metered(db: Path, tmp_path: Path) -> Path:
    """A database with plan `metered`, tenant t1 on it, and EVENTS recorded (sum 15.5)."""
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(PLAN))
    assert run(db, "metrics", "define", "api_calls", "--aggregation", "SUM", "--unit", "calls").exit_code == 0
    assert run(db, "plans", "set", str(plan_file)).exit_code == 0
    assert run(db, "tenants", "set", "t1", "--name", "Tenant One", "--plan", "metered").exit_code == 0
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    result = run(db, "record", "--file", str(events_file))
    assert result.exit_code == 0, result.output
    return db


@pytest.mark.unit
def test_help_for_every_command(db: Path) -> None:
    commands = [
        [], ["serve"], ["init-demo"], ["record"], ["usage"], ["quota"], ["report"], ["top-users"],
        ["plans"], ["plans", "list"], ["plans", "show"], ["plans", "set"], ["tenants"], ["tenants", "list"],
        ["tenants", "show"], ["tenants", "set"], ["metrics"], ["metrics", "list"], ["metrics", "define"],
        ["dead-letters"],
    ]
    for command in commands:
        result = run(db, *command, "--help")
        assert result.exit_code == 0, command
        assert "Usage:" in result.output
    assert not db.exists()  # --help never opens the database


@pytest.mark.unit
def test_init_demo_twice_finds_duplicates(db: Path) -> None:
    first = run_json(db, "init-demo")
    assert first["recorded"] > 0 and first["rejected"] == 0
    second = run_json(db, "init-demo")
    assert second == {"recorded": 0, "duplicates": first["recorded"], "blocked": 0, "rejected": 0, "accepted": 0}
    tenants = run_json(db, "tenants", "list")
    assert {t["tenant_id"] for t in tenants} == {"tenant_acme", "tenant_globex", "tenant_initech"}
    assert {p["plan_id"] for p in run_json(db, "plans", "list")} == {"free", "pro", "enterprise"}


@pytest.mark.unit
def test_record_single_event_and_duplicate(metered: Path) -> None:
    args = ["record", "--tenant", "t1", "--metric", "api_calls", "--quantity", "2", "--user", "u3",
            "--event-id", "single-1", "--property", "region=eu", "--property", "path=/a=b"]
    assert run_json(metered, *args) == {"event_id": "single-1", "status": "recorded"}
    assert run_json(metered, *args) == {"event_id": "single-1", "status": "duplicate"}
    assert run_json(metered, "usage", "t1", "api_calls")["value"] == "17.5"
    table = run(metered, "record", "--tenant", "t1", "--metric", "api_calls", "--quantity", "1")
    assert table.exit_code == 0
    assert "recorded" in table.stdout and "event_id" in table.stdout


@pytest.mark.unit
def test_record_file_with_bad_lines(db: Path, tmp_path: Path) -> None:
    lines = [
        json.dumps({"tenant_id": "t9", "metric": "calls", "quantity": 1, "event_id": "a"}),
        json.dumps({"tenant_id": "t9", "metric": "calls", "quantity": -3, "event_id": "b"}),
        "{not json",
        "",
        json.dumps({"tenant_id": "t9", "metric": "calls", "quantity": "2.25", "event_id": "c"}),
        json.dumps({"tenant_id": "t9", "metric": "calls", "quantity": 1, "event_id": "a"}),
    ]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(lines) + "\n")
    result = run(db, "record", "--file", str(events_file))
    assert result.exit_code == 1
    assert "invalid_quantity: 1 (lines 2):" in result.stderr
    assert "malformed_json: 1 (lines 3):" in result.stderr and "JSON" in result.stderr
    summary = run(db, "--format", "json", "record", "--file", str(events_file))
    assert summary.exit_code == 1
    data = json.loads(summary.stdout)
    # the second run finds the good lines already recorded
    assert (data["recorded"], data["duplicates"], data["rejected"], data["blocked"]) == (0, 3, 2, 0)
    assert [group["lines"] for group in data["reasons"].values()] == [[2], [3]]
    assert list(data["reasons"]) == ["invalid_quantity", "malformed_json"]
    # the good lines were recorded by the first run, once each
    run(db, "tenants", "set", "t9")
    usage = run_json(db, "usage", "t9", "calls")
    assert (usage["value"], usage["event_count"]) == ("3.25", 2)


@pytest.mark.unit
def test_record_from_stdin(db: Path) -> None:
    text = "".join(json.dumps({**e, "tenant_id": "t2"}) + "\n" for e in EVENTS)
    result = run(db, "--format", "json", "record", "--file", "-", input=text)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recorded"] == 3


@pytest.mark.unit
def test_usage_quota_report_top_users_json(metered: Path) -> None:
    usage = run_json(metered, "usage", "t1", "api_calls")
    assert (usage["tenant_id"], usage["metric"], usage["aggregation"]) == ("t1", "api_calls", "SUM")
    assert (Decimal(usage["value"]), usage["event_count"]) == (Decimal("15.5"), 3)
    all_metrics = run_json(metered, "usage", "t1")
    assert [(m["metric"], m["value"]) for m in all_metrics] == [("api_calls", "15.5")]
    daily = run_json(metered, "usage", "t1", "api_calls", "--daily")
    assert sum(Decimal(d["value"]) for d in daily["daily"]) == Decimal("15.5")

    quota = run_json(metered, "quota", "t1", "api_calls")
    assert (quota["used"], quota["limit"], quota["remaining"]) == ("15.5", "10", "0")
    assert quota["policy"] == "charge" and quota["allowed"] is True

    invoices = run_json(metered, "report", "--tenant", "t1")
    assert len(invoices) == 1
    invoice = invoices[0]
    assert (invoice["plan_id"], invoice["plan_version"], invoice["base_fee"]) == ("metered", 1, "5.00")
    [line] = invoice["line_items"]
    assert (line["used"], line["overage_quantity"], line["amount"]) == ("15.5", "5.5", "2.75")
    assert invoice["total"] == "7.75"

    users = run_json(metered, "top-users", "t1", "api_calls")
    assert [(u["rank"], u["user_id"], u["value"], u["event_count"]) for u in users] == [
        (1, "u1", "10.5", 2),
        (2, "u2", "5", 1),
    ]
    assert len(run_json(metered, "top-users", "t1", "api_calls", "--limit", "1")) == 1


@pytest.mark.unit
def test_usage_date_range_and_period(metered: Path) -> None:
    current = run_json(metered, "usage", "t1", "api_calls")
    label = current["period"]["start"][:7]
    assert run_json(metered, "usage", "t1", "api_calls", "--period", label)["value"] == "15.5"
    day = current["period"]["start"][:10]
    empty = run_json(metered, "usage", "t1", "api_calls", "--from", "2001-01-01", "--to", "2001-01-31")
    assert (empty["value"], empty["event_count"]) == ("0", 0)
    result = run(metered, "usage", "t1", "api_calls", "--period", label, "--from", day, "--to", day)
    assert result.exit_code == 2
    only_from = run(metered, "usage", "t1", "api_calls", "--from", day)
    assert only_from.exit_code == 2 and "Error: to:" in only_from.stderr


@pytest.mark.unit
def test_csv_outputs(metered: Path) -> None:
    def rows(*args: str) -> list[dict[str, str]]:
        result = run(metered, "--format", "csv", *args)
        assert result.exit_code == 0, result.output
        return list(csv.DictReader(io.StringIO(result.stdout)))

    [usage] = rows("usage", "t1", "api_calls")
    assert (usage["value"], usage["event_count"]) == ("15.5", "3")
    [quota] = rows("quota", "t1", "api_calls")
    assert (quota["used"], quota["limit"], quota["allowed"]) == ("15.5", "10", "true")
    report = rows("report", "--tenant", "t1")
    assert [r["row_type"] for r in report] == ["base_fee", "line_item", "total"]
    assert sum(Decimal(r["amount"]) for r in report[:-1]) == Decimal(report[-1]["amount"]) == Decimal("7.75")
    header = run(metered, "--format", "csv", "report").stdout.splitlines()[0]
    assert header.split(",")[:3] == ["tenant_id", "plan_id", "plan_version"]
    assert [r["user_id"] for r in rows("top-users", "t1", "api_calls")] == ["u1", "u2"]
    assert rows("tenants", "list") == [
        {"tenant_id": "t1", "name": "Tenant One", "plan_id": "metered", "billing_anchor_day": "1"}
    ]


@pytest.mark.unit
def test_table_outputs(metered: Path) -> None:
    result = run(metered, "quota", "t1", "api_calls")
    assert result.exit_code == 0
    header, rule, row = result.stdout.splitlines()
    assert header.split()[:5] == ["tenant_id", "metric", "used", "limit", "remaining"]
    assert set(rule) <= {"-", " "}
    assert row.split()[:5] == ["t1", "api_calls", "15.5", "10", "0"]
    # columns line up: every value starts or ends under its header
    assert header.index("metric") == row.index("api_calls")

    report = run(metered, "report").stdout
    assert "7.75" in report and "line_item" in report
    top = run(metered, "top-users", "t1", "api_calls").stdout.splitlines()
    assert top[2].split() == ["1", "u1", "10.5", "2"]
    plan = run(metered, "plans", "show", "metered").stdout
    assert plan.splitlines()[0] == "plan metered v1: Metered (USD, base fee 5)"


@pytest.mark.unit
def test_plans_set_makes_new_versions(metered: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan2.json"
    plan_file.write_text(json.dumps({**PLAN, "base_fee": "9.50"}))
    assert run_json(metered, "plans", "set", str(plan_file))["version"] == 2
    # an unchanged definition is not a new version
    assert run_json(metered, "plans", "set", str(plan_file))["version"] == 2
    assert run_json(metered, "plans", "show", "metered")["base_fee"] == "9.5"
    assert run_json(metered, "plans", "show", "metered", "--version", "1")["base_fee"] == "5"
    from_stdin = run(metered, "--format", "json", "plans", "set", "-", input=json.dumps({**PLAN, "name": "M3"}))
    assert from_stdin.exit_code == 0 and json.loads(from_stdin.stdout)["version"] == 3
    missing = run(metered, "plans", "show", "metered", "--version", "7")
    assert missing.exit_code == 1 and "unknown plan 'metered v7'" in missing.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**PLAN, "currency": "dollars"}))
    result = run(metered, "plans", "set", str(bad))
    assert result.exit_code == 2 and "Error: currency:" in result.stderr
    bad.write_text("{oops")
    result = run(metered, "plans", "set", str(bad))
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


@pytest.mark.unit
def test_tenants_set_changes_only_given_fields(metered: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "other.json"
    plan_file.write_text(json.dumps({**PLAN, "plan_id": "other", "name": "Other"}))
    run(metered, "plans", "set", str(plan_file))
    tenant = run_json(metered, "tenants", "set", "t1", "--plan", "other", "--anchor-day", "15")
    assert tenant == {"tenant_id": "t1", "name": "Tenant One", "plan_id": "other", "billing_anchor_day": 15,
                      "webhook_url": None}
    assert run_json(metered, "tenants", "show", "t1") == tenant
    created = run_json(metered, "tenants", "set", "t_new", "--name", "New")
    assert created == {"tenant_id": "t_new", "name": "New", "plan_id": None, "billing_anchor_day": 1,
                       "webhook_url": None}
    unknown_plan = run(metered, "tenants", "set", "t1", "--plan", "nope")
    assert unknown_plan.exit_code == 1 and "unknown plan 'nope'" in unknown_plan.stderr
    bad_day = run(metered, "tenants", "set", "t1", "--anchor-day", "40")
    assert bad_day.exit_code == 2 and "billing_anchor_day" in bad_day.stderr


@pytest.mark.unit
def test_metrics_define_changes_aggregation(metered: Path) -> None:
    metric = run_json(metered, "metrics", "define", "api_calls", "--aggregation", "max")
    assert metric == {"name": "api_calls", "aggregation": "MAX", "unit": "calls", "description": ""}
    assert run_json(metered, "metrics", "list") == [metric]
    usage = run_json(metered, "usage", "t1", "api_calls")
    assert (usage["aggregation"], usage["value"]) == ("MAX", "6.5")
    assert run_json(metered, "metrics", "define", "api_calls", "--aggregation", "COUNT")["unit"] == "calls"
    assert run_json(metered, "usage", "t1", "api_calls")["value"] == "3"
    bad = run(metered, "metrics", "define", "api_calls", "--aggregation", "MEDIAN")
    assert bad.exit_code == 2


@pytest.mark.unit
def test_bad_quantity_is_exit_2_with_field(metered: Path) -> None:
    result = run(metered, "record", "--tenant", "t1", "--metric", "api_calls", "--quantity", "-1")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: quantity: ")
    assert "Traceback" not in result.output
    missing = run(metered, "record", "--tenant", "t1", "--metric", "api_calls")
    assert missing.exit_code == 2 and "Error: quantity: is required" in missing.stderr
    nothing = run(metered, "record")
    assert nothing.exit_code == 2


@pytest.mark.unit
def test_unknown_tenant_is_exit_1(metered: Path) -> None:
    for args in (["quota", "nobody", "api_calls"], ["usage", "nobody"], ["report", "--tenant", "nobody"],
                 ["tenants", "show", "nobody"], ["top-users", "nobody", "api_calls"]):
        result = run(metered, *args)
        assert result.exit_code == 1, args
        assert result.stderr.strip() == "Error: unknown tenant 'nobody'"


@pytest.mark.unit
def test_blocked_event_is_exit_1(db: Path, tmp_path: Path) -> None:
    plan = {"plan_id": "tiny", "name": "Tiny", "metrics": [{"metric": "api_calls", "included": 2, "policy": "block"}]}
    run(db, "plans", "set", "-", input=json.dumps(plan))
    run(db, "tenants", "set", "small", "--plan", "tiny")
    ok = run(db, "record", "--tenant", "small", "--metric", "api_calls", "--quantity", "2")
    assert ok.exit_code == 0
    blocked = run(db, "record", "--tenant", "small", "--metric", "api_calls", "--quantity", "1", "--event-id", "x")
    assert blocked.exit_code == 1
    assert "blocked" in blocked.stderr and "past its quota: 2 of 2 already used" in blocked.stderr
    assert run_json(db, "quota", "small", "api_calls")["allowed"] is False


@pytest.mark.unit
def test_dead_letters_empty(db: Path) -> None:
    assert run_json(db, "dead-letters", "--limit", "5") == []
    assert run(db, "dead-letters").stdout.splitlines()[0].split()[:2] == ["id", "received_at"]


@pytest.mark.unit
def test_url_mode_refuses_file_only_commands(db: Path) -> None:
    result = run(db, "--url", "http://127.0.0.1:9", "init-demo")
    assert result.exit_code == 2 and "--url" in result.stderr
    assert not db.exists()


@pytest.mark.integration
def test_locked_database_suggests_url(db: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(30)",
         str(db)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = run(db, "tenants", "list")
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: ")
        assert "--url" in result.stderr and "held by another process" in result.stderr
        assert "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait(timeout=10)


@pytest.mark.integration
def test_python_dash_m_entry_point(db: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    completed = subprocess.run(
        [sys.executable, "-m", "usage_metering", "--db", str(db), "--format", "json", "metrics", "list"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


@pytest.mark.unit
def test_record_file_in_chunks_keeps_line_order(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("usage_metering.cli.events.RECORD_CHUNK", 2)
    lines = [json.dumps({"tenant_id": "t3", "metric": "calls", "quantity": n, "event_id": f"k{n}"}) for n in range(1, 8)]
    lines[3] = "[]"  # line 4: valid JSON, not an event
    lines[5] = "nope"  # line 6: not JSON
    (tmp_path / "many.jsonl").write_text("\n".join(lines) + "\n")
    result = run(db, "--format", "json", "record", "--file", str(tmp_path / "many.jsonl"))
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert (data["recorded"], data["rejected"]) == (5, 2)
    assert sorted(line for group in data["reasons"].values() for line in group["lines"]) == [4, 6]
    run(db, "tenants", "set", "t3")
    assert run_json(db, "usage", "t3", "calls")["value"] == str(1 + 2 + 3 + 5 + 7)
