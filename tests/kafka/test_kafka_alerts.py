"""A standalone `usage-metering consume` process delivers the quota alerts its batches record."""

from __future__ import annotations

import time
from pathlib import Path

from support.pipeline_helpers import start_consumer_process, terminate
from support.webhook_receiver import Receiver, assert_signed
from usage_metering.producer import UsageProducer
from usage_metering.schemas import parse_plan, parse_tenant
from usage_metering.store import Database
from usage_metering.store import catalog as catalog_store

SECRET = "kafka-test-secret-0123456789"


def test_consume_process_posts_signed_alerts_once_per_threshold(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    db_path, log_path = tmp_path / "metering.duckdb", tmp_path / "consumer.log"
    database = Database(db_path)
    try:
        cursor = database.cursor()
        catalog_store.save_plan(cursor, parse_plan({
            "plan_id": "alerting", "name": "Alerting",
            "metrics": [{"metric": "api_calls", "included": 100, "policy": "charge"}],  # alerts at 80% and 100%
        }))
        catalog_store.save_tenant(cursor, parse_tenant({"tenant_id": "acme", "plan_id": "alerting"}))
    finally:
        database.close()
    with UsageProducer(kafka_bootstrap, topic) as producer:
        for i in range(12):  # 10 each: crosses 80 at the 8th event and 100 at the 10th
            producer.record("acme", "api_calls", 10, event_id=f"acme-{i}")

    receiver = Receiver().start()
    process = start_consumer_process(kafka_bootstrap, db_path, topic, f"group-{topic}",
                                     "--webhook-url", receiver.url, "--webhook-secret", SECRET, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while len(receiver.accepted()) < 2:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(1.0)  # several more dispatcher passes: nothing is sent twice
        payloads = [assert_signed(delivery, SECRET) for delivery in receiver.accepted()]
        assert len(receiver.deliveries) == 2
        assert sorted((p["threshold_percent"], p["tenant_id"], p["metric"]) for p in payloads) == [
            ("100", "acme", "api_calls"), ("80", "acme", "api_calls")]
        assert {p["included"] for p in payloads} == {"100"}
    finally:
        assert terminate(process) == 0, log_path.read_text()[-3000:]
        receiver.stop()
