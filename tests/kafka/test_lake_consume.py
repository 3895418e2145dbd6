"""`usage-metering --lake ... consume`: the Kafka consumer writing a DuckLake, exactly once across kill -9.

A real broker, a real PostgreSQL catalog and Parquet data; events from our
SDK (packed records) and from a plain kafka-python producer (one JSON event
per record, snappy-compressed).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from kafka import KafkaProducer

from support.lakes import LakeFactory
from support.pipeline_helpers import (
    Expected,
    assert_exact,
    group_offsets,
    produce_events,
    start_consumer_process,
    stored_state,
    terminate,
    wait_for_group_offsets,
    wait_for_log,
)
from usage_metering.kafka.topics import end_offsets


def _produce_plain_json(bootstrap: str, topic: str, expected: Expected, count: int) -> None:
    """One event per record, as a service without our SDK publishes them; every tenth one sent twice."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="snappy", acks="all")
    try:
        for i in range(count):
            tenant, metric = f"plain-{i % 5}", "api_calls"
            event = {"tenant_id": tenant, "metric": metric, "quantity": str(i % 13), "event_id": f"plain-{i}"}
            value = json.dumps(event).encode()
            for _ in range(2 if i % 10 == 0 else 1):
                producer.send(topic, key=tenant.encode(), value=value)
            expected.totals[(tenant, metric)] += i % 13
            expected.counts[(tenant, metric)] += 1
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=30)
    expected.distinct += count
    expected.messages += count + count // 10


def test_consume_into_a_lake_counts_exactly_once_across_kill_9(
    kafka_bootstrap: str, topic: str, lakes: LakeFactory, tmp_path: Path
) -> None:
    lake = lakes.new()
    expected = produce_events(kafka_bootstrap, topic, 30_000, duplicate_fraction=0.1, seed=11)
    _produce_plain_json(kafka_bootstrap, topic, expected, 2_000)
    ends = end_offsets(kafka_bootstrap, topic)
    node, log_path, group = tmp_path / "node", tmp_path / "consumer.log", f"group-{topic}"
    args = ("--instance-id", "lake-node-1", "--max-poll-records", "20")  # small polls: many commits to cut into
    rng = random.Random(5)
    for _ in range(2):
        before = sum(group_offsets(kafka_bootstrap, group).values())
        process = start_consumer_process(kafka_bootstrap, node, topic, group, *args, log_path=log_path, lake=lake)
        try:
            deadline = time.monotonic() + 90
            while sum(group_offsets(kafka_bootstrap, group).values()) <= before:
                assert process.poll() is None, f"consumer exited: {log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no progress: {log_path.read_text()[-3000:]}"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            process.kill()
            process.wait(timeout=30)

    log_start = log_path.stat().st_size
    process = start_consumer_process(kafka_bootstrap, node, topic, group, "--instance-id", "lake-node-1",
                                     log_path=log_path, lake=lake)
    wait_for_group_offsets(kafka_bootstrap, group, ends, timeout=240, process=process)
    wait_for_log(log_path, "assigned [0, 1, 2", start=log_start, process=process)
    assert terminate(process) == 0, log_path.read_text()[-3000:]
    assert_exact(node, expected, lake)
    assert stored_state(node, lake)[3] == ends
