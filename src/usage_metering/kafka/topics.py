"""The Kafka topics the pipeline uses: creating them (idempotent) and reading their end offsets."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import TopicAlreadyExistsError

from usage_metering.schemas.topics import DEFAULT_PARTITIONS, DEFAULT_TOPIC, dead_letter_topic_for

from .client_types import AdminClient, Consumer

log = logging.getLogger(__name__)


def create_topics(
    bootstrap_servers: str | list[str],
    topic: str = DEFAULT_TOPIC,
    partitions: int = DEFAULT_PARTITIONS,
    dead_letter_topic: str | None = None,
    *,
    replication_factor: int = 1,
    timeout_ms: int = 30_000,
) -> list[str]:
    """Create the events topic (and the dead-letter topic) unless they exist.

    Returns the names that were newly created. An existing topic is left as it
    is, even if its partition count differs (partitions are the unit of scale
    and of stored offsets; changing them is a deliberate admin action).
    The dead-letter topic (None: `<topic>-dead-letters`; "": none) gets as
    many partitions as the events topic.
    """
    if dead_letter_topic is None:
        dead_letter_topic = dead_letter_topic_for(topic)
    wanted = [topic] + ([dead_letter_topic] if dead_letter_topic else [])
    admin: AdminClient = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="usage-metering-admin", request_timeout_ms=timeout_ms
    )
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        created: list[str] = []
        if missing:
            spec = {name: {"num_partitions": partitions, "replication_factor": replication_factor} for name in missing}
            result = admin.create_topics(spec, timeout_ms=timeout_ms, raise_errors=False)
            for entry in result.get("topics", []):
                code = entry.get("error_code", 0)
                if code == 0:
                    created.append(entry["name"])
                elif code != TopicAlreadyExistsError.errno:  # lost a race with another creator: fine
                    raise RuntimeError(
                        f"could not create topic {entry['name']!r}: error {code} "
                        f"{entry.get('error_message') or ''}".rstrip()
                    )
        # Visible with a leader on every partition before anyone produces to it.
        admin.wait_for_topics(wanted, timeout_ms=timeout_ms)
        for name in created:
            log.info("created topic %s (%d partitions)", name, partitions)
        return created
    finally:
        admin.close()


def end_offsets(bootstrap_servers: str | list[str], topic: str, *, timeout_ms: int = 30_000) -> dict[int, int]:
    """The next offset of every partition of an existing `topic`: what a caught-up consumer has stored."""
    consumer: Consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, client_id="usage-metering-offsets")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise RuntimeError(f"topic {topic!r} has no partitions (does it exist?)")
        wanted = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(wanted, timeout_ms=timeout_ms).items()}
    finally:
        consumer.close()
