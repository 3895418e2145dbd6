"""Fixtures for tests against a real Kafka broker: a missing broker FAILS the tests, never skips them."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from support import kafka_broker
from support.pipeline_helpers import PARTITIONS, dead_letter_topic_of
from usage_metering.kafka.topics import create_topics


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    # A script broker already running belongs to someone else (another test session): leave it up.
    already_running = kafka_broker._local_broker_running()
    try:
        address = kafka_broker.find_bootstrap_servers()
    except Exception as exc:  # no broker is a failure, never a skip
        pytest.fail(f"no Kafka broker could be found or started:\n{exc}", pytrace=False)
    yield address
    if not already_running:
        kafka_broker.stop_local_broker()


@pytest.fixture()
def topic(kafka_bootstrap: str) -> str:
    name = f"usage-events-test-{uuid.uuid4().hex[:10]}"
    create_topics(kafka_bootstrap, name, PARTITIONS, dead_letter_topic=dead_letter_topic_of(name))
    return name


