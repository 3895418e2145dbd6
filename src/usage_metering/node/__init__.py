"""Running a node: the server process, Kafka-mode wiring, webhook delivery, snapshots and logging."""
