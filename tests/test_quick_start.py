"""The original quick start, exactly as documented: `python src/main.py --init-demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from support.nodes import free_port, request, wait_until_serving

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def test_main_py_init_demo_serves_the_compatibility_routes(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # src/main.py must find the package by itself
    process = subprocess.Popen(
        [sys.executable, str(REPO / "src" / "main.py"), "--init-demo", "--port", str(port), "--snapshot-interval", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process)
        assert (tmp_path / "data" / "metering.duckdb").exists()  # the documented default file

        _, _, before = request("GET", f"{base}/api/usage/tenant_acme/api_calls")
        status, _, posted = request("POST", f"{base}/api/events", json_body={
            "tenant_id": "tenant_acme", "metric": "api_calls", "quantity": 7, "user_id": "alice"})
        assert status == 200 and posted["status"] == "recorded"
        status, _, usage = request("GET", f"{base}/api/usage/tenant_acme/api_calls")
        assert status == 200 and Decimal(usage["value"]) == Decimal(before["value"]) + 7
        status, _, quota = request("GET", f"{base}/api/quota/tenant_acme/api_calls")
        assert status == 200 and quota["used"] == usage["value"]
        status, _, report = request("POST", f"{base}/api/billing-report", json_body={"tenant_id": "tenant_acme"})
        assert status == 200 and report["invoices"][0]["tenant_id"] == "tenant_acme"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
