"""A consumer started before its topic exists waits for `kafka init` instead of auto-creating it.

A broker with auto.create.topics.enable (the default, and the local script's
setting) would create a missing topic with its default partition count, and
`usage-metering kafka init` would then keep that count.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from support.pipeline_helpers import (
    PARTITIONS,
    ThreadedConsumer,
    assert_exact,
    dead_letter_topic_of,
    produce_events,
)
from usage_metering.kafka.topics import create_topics, end_offsets


def _topic_exists(bootstrap: str, topic: str) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return topic in admin.list_topics()
    finally:
        admin.close()


def test_consumer_started_before_its_topic_waits_and_takes_every_partition(
        kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    topic = f"usage-events-late-{uuid.uuid4().hex[:10]}"
    db_path = tmp_path / "metering.duckdb"
    with caplog.at_level(logging.WARNING, logger="usage_metering.kafka.consumer"):
        consumer = ThreadedConsumer(kafka_bootstrap, db_path, topic, metadata_max_age_ms=500)
        deadline = time.monotonic() + 30
        while f"topic {topic} does not exist yet" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
    time.sleep(1.5)  # several polls and metadata refreshes asking for the missing topic
    assert not _topic_exists(kafka_bootstrap, topic)
    assert consumer.consumer.assigned_partitions() == []

    create_topics(kafka_bootstrap, topic, PARTITIONS, dead_letter_topic=dead_letter_topic_of(topic))
    expected = produce_events(kafka_bootstrap, topic, 3_000, duplicate_fraction=0.05, seed=14)
    ends = end_offsets(kafka_bootstrap, topic)
    consumer.wait_until_caught_up(ends, timeout=60)
    assert consumer.consumer.assigned_partitions() == list(range(PARTITIONS))
    consumer.stop()
    consumer.close_database()
    assert_exact(db_path, expected)
