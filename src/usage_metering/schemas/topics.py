"""The pipeline's Kafka names, defined once: the producer SDK, the consumer and the CLI use these.

Importable without loading kafka-python (the CLI's --help shows them).
"""

DEFAULT_TOPIC = "usage-events"
DEFAULT_PARTITIONS = 12
DEFAULT_GROUP_ID = "usage-metering"
DEFAULT_SESSION_TIMEOUT_MS = 45_000  # kafka-python's default: how long the group waits for a silent member
DEFAULT_MAX_POLL_RECORDS = 5000  # records per poll batch, one DuckDB transaction


def dead_letter_topic_for(topic: str) -> str:
    """Where an events topic's dead letters are copied unless told otherwise: `<topic>-dead-letters`."""
    return f"{topic}-dead-letters"
