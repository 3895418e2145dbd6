"""The HTTP node in Kafka mode, end to end through a real broker and a real server process."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from kafka import KafkaProducer

from support.nodes import ServerProcess


def wait_for(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_quick_start_flow_through_the_broker(tmp_path: Path, kafka_bootstrap: str, topic: str) -> None:
    options = {"kafka_bootstrap_servers": kafka_bootstrap, "kafka_topic": topic, "snapshot_interval": 0}
    with ServerProcess(tmp_path / "node.duckdb", demo=True, options=options) as server:
        wait_for(lambda: server.request("GET", "/readyz")[0] == 200)
        # the demo data goes through the broker too: start once the node has caught up with it
        before = wait_for(lambda: (lambda u: u if u.get("consumer_lag") == 0 else None)(
            server.request("GET", "/api/usage/tenant_acme/api_calls")[2]))
        start_value = Decimal(before["value"])

        event_id = f"kafka-{uuid.uuid4().hex}"
        posted = [("0.5", event_id), ("2.25", None), ("0.5", event_id)]  # the third repeats the first
        for quantity, given_id in posted:
            body = {"tenant_id": "tenant_acme", "metric": "api_calls", "quantity": quantity, "user_id": "u1"}
            if given_id:
                body["event_id"] = given_id
            status, _, answer = server.request("POST", "/api/events", json_body=body)
            assert status == 202, answer
            assert answer["status"] == "accepted" and answer["event_id"]

        expected = start_value + Decimal("2.75")  # the repeated event id counts once
        # the lag is left out while unknown (e.g. just after the consumer rejoined its group): wait for both
        usage = wait_for(lambda: (lambda u: u if Decimal(u["value"]) == expected and u.get("consumer_lag") == 0
                                  else None)(server.request("GET", "/api/usage/tenant_acme/api_calls")[2]))
        assert usage["as_of"].endswith("Z")

        quota = wait_for(lambda: (lambda q: q if q.get("consumer_lag") == 0 else None)(
            server.request("GET", "/api/quota/tenant_acme/api_calls")[2]))
        assert Decimal(quota["used"]) == expected and quota["as_of"]

        status, _, report = server.request("POST", "/api/billing-report", json_body={"tenant_id": "tenant_acme"})
        api_line = next(item for item in report["invoices"][0]["line_items"] if item["metric"] == "api_calls")
        assert Decimal(api_line["used"]) == expected

        # tenant_globex is on the free plan: api_calls blocks past 1,000 per period
        status, _, blocked = server.request(
            "POST", "/api/events", json_body={"tenant_id": "tenant_globex", "metric": "api_calls", "quantity": 5000}
        )
        assert status == 429 and blocked["error"]["code"] == "quota_exceeded"

        status, _, batch = server.request("POST", "/api/events/batch", json_body={"events": [
            {"tenant_id": "tenant_acme", "metric": "storage_gb", "quantity": "1"},
            {"tenant_id": "tenant_acme", "metric": "storage_gb", "quantity": "-1"},
        ]})
        assert status == 200 and batch["accepted"] == 1 and batch["rejected"] == 1

        # records another producer wrote that are not events: dead letters, counted in /metrics
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", compression_type="snappy")
        for value in (None, b"\xff not json", b'{"tenant_id": "tenant_acme"}'):
            producer.send(topic, key=b"tenant_acme", value=value)
        producer.close()
        wait_for(lambda: dead_letters_counted(server) == 3)
        letters = server.request("GET", "/api/dead-letters")[2]["dead_letters"]
        assert sorted(letter["reason"].split(":")[0] for letter in letters) == [
            "invalid_json", "invalid_json", "missing_field"]
        assert server.stop() == 0


def dead_letters_counted(server: ServerProcess) -> float:
    status, _, metrics = server.request("GET", "/metrics")
    assert status == 200 and "usage_metering_consumer_lag" in metrics
    line = next(line for line in metrics.splitlines() if line.startswith("usage_metering_dead_letters_total "))
    return float(line.split()[1])
