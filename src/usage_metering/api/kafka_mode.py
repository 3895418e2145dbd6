"""The node in Kafka mode: the HTTP front end produces, a consumer thread ingests.

POST /api/events then answers 202 once the broker acknowledged the event
(acks=all); the consumer (same process, same Ingestor, so quota counters stay
in memory) commits it to DuckDB exactly once. Quota and usage answers say how
fresh they are: `as_of` (the last DuckDB commit) and `consumer_lag`.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette

from usage_metering.consumer.kafka_consumer import KafkaIngestConsumer
from usage_metering.consumer.topics import create_topics
from usage_metering.metering import Metering
from usage_metering.producer import UsageProducer
from usage_metering.schemas import format_timestamp

log = logging.getLogger(__name__)


class KafkaMode:
    def __init__(self, metering: Metering, bootstrap_servers: str, topic: str) -> None:
        create_topics(bootstrap_servers, topic)  # idempotent; a fresh cluster works at once
        self.metering = metering
        self.consumer = KafkaIngestConsumer(
            bootstrap_servers, metering.database, topic=topic, ingestor=metering.ingestor,
            late_window=metering.late_window,
        )
        # A short linger: each HTTP request waits for its own acknowledgement.
        self.producer = UsageProducer(bootstrap_servers, topic, linger_ms=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="kafka-consumer", daemon=True)
        self.failure: BaseException | None = None

    def start(self, app: Starlette) -> KafkaMode:
        self.metering.publisher = self.producer
        observability = app.state.observability
        observability.set_lag_source(self.consumer.lag)
        observability.add_readiness_check("kafka partitions assigned", lambda: bool(self.consumer.assigned_partitions()))
        observability.add_readiness_check("kafka consumer running", lambda: self.failure is None)
        app.state.freshness = self.freshness
        self._thread.start()
        return self

    def _consume(self) -> None:
        try:
            self.consumer.run(self._stop)
        except BaseException as exc:  # surfaced by /readyz; the node keeps answering reads
            self.failure = exc
            log.exception("Kafka consumer stopped")

    def freshness(self) -> dict[str, Any]:
        committed = self.consumer.last_commit_at or self.metering.ingestor.last_commit_at
        return {
            "as_of": format_timestamp(committed or datetime.now(timezone.utc)),
            "consumer_lag": sum(self.consumer.lag().values()),
        }

    def stop(self) -> None:
        """Stop producing first (no new 202s), then let the consumer finish its batch."""
        self.metering.publisher = None
        try:
            self.producer.close(timeout=10)
        except Exception:
            log.exception("closing the Kafka producer")
        self._stop.set()
        self._thread.join(timeout=30)
        self.consumer.close()
