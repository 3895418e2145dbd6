"""The late-arrival window (default 35 days) is configurable: serve, record and import on a file.

Backfilling history older than the window is the common reason to raise it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from support.nodes import free_port, request, wait_until_serving
from usage_metering.cli import cli

SRC = Path(__file__).resolve().parents[1] / "src"


def old_event(event_id: str, days: int) -> dict[str, str]:
    at = datetime.now(timezone.utc) - timedelta(days=days)
    return {"tenant_id": "acme", "metric": "calls", "quantity": "2", "event_id": event_id, "timestamp": at.isoformat()}


def run(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


@pytest.mark.unit
def test_import_backfill_past_the_default_window_needs_late_window_days(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(old_event(f"old-{d}", d)) + "\n" for d in (40, 60, 80)))
    db = tmp_path / "m.duckdb"

    refused = run(db, "--format", "json", "import", str(path))
    assert refused.exit_code == 1
    summary = json.loads(refused.stdout)
    assert (summary["recorded"], summary["rejected"]) == (0, 3)
    assert summary["reasons"]["timestamp_too_old"]["lines"] == [1, 2, 3]

    narrow = json.loads(run(db, "--late-window-days", "70", "--format", "json", "import", str(path)).stdout)
    assert (narrow["recorded"], narrow["rejected"]) == (2, 1)  # 80 days is still too old
    wide = run(db, "--late-window-days", "90", "--format", "json", "import", str(path))
    assert wide.exit_code == 0
    assert (json.loads(wide.stdout)["recorded"], json.loads(wide.stdout)["duplicates"]) == (1, 2)
    usage = json.loads(run(db, "--format", "json", "usage", "acme", "calls",
                           "--from", (datetime.now(timezone.utc) - timedelta(days=85)).date().isoformat(),
                           "--to", datetime.now(timezone.utc).date().isoformat()).stdout)
    assert usage["value"] == "6" and usage["event_count"] == 3


@pytest.mark.unit
def test_late_window_days_with_url_is_refused(tmp_path: Path) -> None:
    result = run(tmp_path / "m.duckdb", "--url", "http://127.0.0.1:9", "--late-window-days", "90", "usage", "acme")
    assert result.exit_code == 2
    assert "--late-window-days" in result.stderr and "serve" in result.stderr


@pytest.mark.unit
def test_late_window_days_must_be_positive(tmp_path: Path) -> None:
    result = run(tmp_path / "m.duckdb", "--late-window-days", "0", "metrics", "list")
    assert result.exit_code == 2 and "--late-window-days" in result.stderr


@pytest.mark.integration
def test_serve_with_a_wider_window_accepts_older_events_over_http(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "usage_metering", "--db", str(tmp_path / "m.duckdb"), "--late-window-days", "90",
         "serve", "--port", str(port), "--snapshot-interval", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(base, process)
        status, _, body = request("POST", f"{base}/api/events", json_body=old_event("sixty", 60))
        assert status == 200 and body["status"] == "recorded"
        status, _, body = request("POST", f"{base}/api/events", json_body=old_event("hundred", 100))
        assert status == 422
        assert body["error"]["code"] == "timestamp_too_old" and body["error"]["field"] == "timestamp"
        assert "90 days" in body["error"]["message"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
