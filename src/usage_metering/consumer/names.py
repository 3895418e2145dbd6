"""The pipeline's default Kafka names, importable without loading kafka-python (the CLI's --help shows them)."""

DEFAULT_TOPIC = "usage-events"
DEFAULT_DEAD_LETTER_TOPIC = "usage-events-dead-letters"
DEFAULT_PARTITIONS = 12
DEFAULT_GROUP_ID = "usage-metering"
