"""A real node process on a DuckLake: HTTP answers, kill -9, and the command line reading the lake.

The lake's catalog is a database on a real PostgreSQL server, its data real
Parquet files; the node is a server process talked to over a socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from support.lakes import LakeFactory
from support.nodes import SRC_DIR, ServerProcess, free_port, request, wait_until_serving
from usage_metering.store import Lake


def _cli(lake: Lake, *args: str, db: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The `usage-metering` command line users run, in its own process."""
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    options = ["--lake", lake.catalog, "--lake-data", str(lake.data_path)]
    if db is not None:
        options += ["--db", str(db)]
    return subprocess.run([sys.executable, "-m", "usage_metering", *options, *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def _post(node: ServerProcess, events: list[dict[str, Any]]) -> dict[str, Any]:
    status, _headers, body = node.request("POST", "/api/events/batch", json_body={"events": events})
    assert status == 200, body
    return body


def _used(node: ServerProcess, tenant: str, metric: str) -> Decimal:
    status, _headers, body = node.request("GET", f"/api/usage/{tenant}/{metric}")
    assert status == 200, body
    return Decimal(body["value"])


def test_a_node_on_a_lake_answers_http_and_loses_nothing_acknowledged_to_kill_9(
    lakes: LakeFactory, tmp_path: Path
) -> None:
    lake = lakes.new()
    node = ServerProcess(tmp_path / "node", demo=True, lake=lake).start()
    try:
        demo_calls = _used(node, "tenant_acme", "api_calls")
        events = [{"tenant_id": "tenant_acme", "metric": "api_calls", "quantity": str(Decimal(i) / 4),
                   "user_id": f"u{i % 3}", "event_id": f"lake-{i}"} for i in range(200)]
        assert _post(node, events)["recorded"] == 200
        status, _headers, single = node.request("POST", "/api/events", json_body={
            "tenant_id": "tenant_acme", "metric": "api_calls", "quantity": "1.5", "event_id": "lake-single"})
        assert status == 200 and single["status"] == "recorded", single
        expected = demo_calls + sum(Decimal(i) / 4 for i in range(200)) + Decimal("1.5")
        assert _used(node, "tenant_acme", "api_calls") == expected
        status, _headers, quota = node.request("GET", "/api/quota/tenant_acme/api_calls")
        assert status == 200 and Decimal(quota["used"]) == expected and quota["as_of"]
        status, _headers, bill = node.request("POST", "/api/billing-report", json_body={"tenant_id": "tenant_acme"})
        assert status == 200
        calls = next(item for item in bill["invoices"][0]["line_items"] if item["metric"] == "api_calls")
        assert Decimal(calls["used"]) == expected
        node.kill()  # kill -9 right after the acknowledgements: they were commits on the lake

        node = ServerProcess(tmp_path / "node", demo=False, lake=lake).start()
        assert _used(node, "tenant_acme", "api_calls") == expected
        again = _post(node, events[::10])
        assert (again["recorded"], again["duplicates"]) == (0, 20)
        assert _used(node, "tenant_acme", "api_calls") == expected

        # While the node runs, the command line reads the lake (read-only) and gives the node's answer.
        done = _cli(lake, "--format", "json", "usage", "tenant_acme", "api_calls", db=tmp_path / "cli")
        assert done.returncode == 0, done.stderr
        assert Decimal(json.loads(done.stdout)["value"]) == expected
        # Events go through a node: the command line says so, and exits 2.
        refused = _cli(lake, "record", "--tenant", "tenant_acme", "--metric", "api_calls", "--quantity", "1",
                       db=tmp_path / "cli")
        assert refused.returncode == 2 and "--url" in refused.stderr, refused.stderr
        exported = _cli(lake, "export", "--tenant", "tenant_acme", "--output", str(tmp_path / "acme.parquet"),
                        db=tmp_path / "cli")
        assert exported.returncode == 0, exported.stderr
        assert _parquet_sum(tmp_path / "acme.parquet", "api_calls") == expected
        # A maintenance pass from the command line while the node runs: no failed step, no answer changed.
        maintained = _cli(lake, "--format", "json", "maintain", db=tmp_path / "cli")
        assert maintained.returncode == 0, maintained.stdout + maintained.stderr
        report = json.loads(maintained.stdout)
        assert report["failed"] == {} and "merge events" in report["done"], report
        assert _used(node, "tenant_acme", "api_calls") == expected

        # Configuration is written beside the node (no writer thread in the CLI) and reaches it in seconds:
        # the first API key turns authentication on.
        created = _cli(lake, "--format", "json", "keys", "create", "ops", "--scope", "admin", db=tmp_path / "cli")
        assert created.returncode == 0, created.stderr
        token = json.loads(created.stdout)["token"]
        deadline = time.monotonic() + 20
        while node.request("GET", "/api/usage/tenant_acme/api_calls")[0] != 401:
            assert time.monotonic() < deadline, "the node did not pick up the key made on the lake"
            time.sleep(0.2)
        status, _headers, body = node.request("GET", "/api/usage/tenant_acme/api_calls",
                                              headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and Decimal(body["value"]) == expected
    finally:
        node.close()


def _parquet_sum(path: Path, metric: str) -> Decimal:
    import duckdb

    total = duckdb.sql(f"SELECT sum(quantity) FROM '{path}' WHERE metric = '{metric}'").fetchall()[0][0]
    return Decimal(total)


def test_serve_with_lake_options_runs_a_node_on_the_lake(lakes: LakeFactory, tmp_path: Path) -> None:
    """`usage-metering --lake ... --lake-data ... serve`: the command users run, stopped with SIGTERM."""
    lake = lakes.new()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    argv = [sys.executable, "-m", "usage_metering", "--lake", f"ducklake:{lake.catalog}", "--lake-data",
            str(lake.data_path), "--db", str(tmp_path / "node"), "serve", "--port", str(port), "--init-demo"]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=SRC_DIR.parent)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process, timeout=60)
        status, _headers, body = request("GET", f"http://127.0.0.1:{port}/api/quota/tenant_globex/api_calls")
        assert status == 200 and Decimal(body["used"]) > 0 and body["limit"] == "1000", body
    finally:
        process.terminate()
        code = process.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert "ducklake:postgres:" in (tmp_path / "serve.log").read_text()
