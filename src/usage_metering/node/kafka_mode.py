"""The node in Kafka mode: the HTTP front end produces, a consumer thread ingests.

POST /api/events then answers 202 once the broker acknowledged the event
(acks=all); the consumer (same process, same Ingestor, so quota counters stay
in memory) commits it to DuckDB exactly once. Quota and usage answers say how
fresh they are: `as_of` (the last DuckDB commit) and `consumer_lag`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette

from usage_metering.kafka.consumer import KafkaIngestConsumer
from usage_metering.kafka.topics import create_topics
from usage_metering.metering import Metering
from usage_metering.producer import UsageProducer

from .config import KafkaOptions

log = logging.getLogger(__name__)


class KafkaMode:
    """The producer a node's library publishes to (create it first), and the consumer thread `start` adds."""

    def __init__(self, options: KafkaOptions) -> None:
        create_topics(options.bootstrap_servers, options.topic)  # idempotent; a fresh cluster works at once
        self.options = options
        # A short linger: each HTTP request waits for its own acknowledgement.
        self.producer = UsageProducer(options.bootstrap_servers, options.topic, linger_ms=2)
        self.consumer: KafkaIngestConsumer | None = None
        self._last_commit_at: Callable[[], datetime | None] = lambda: None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="kafka-consumer", daemon=True)
        self.failure: BaseException | None = None

    def start(self, metering: Metering, app: Starlette, node_url: str | None = None) -> KafkaMode:
        """Consume the topic into `metering` (built with `publisher=self.producer`) and report on `app`.

        `node_url`: where other nodes of a cluster reach this one (recorded with the partitions it claims).
        """
        options = self.options.consumer_options()
        consumer = metering.node.kafka_consumer(self.options.bootstrap_servers, node_url=node_url, **options)
        self.consumer = consumer
        self._last_commit_at = lambda: consumer.last_commit_at or metering.node.last_commit_at
        observability = app.state.observability
        observability.set_lag_source(consumer.lag)
        observability.add_readiness_check("kafka partitions assigned, lag known", consumer.lag_known)
        observability.add_readiness_check("kafka consumer running", lambda: self.failure is None)
        app.state.freshness = self.freshness
        self._thread.start()
        return self

    def _consume(self) -> None:
        assert self.consumer is not None
        try:
            self.consumer.run(self._stop)
        except BaseException as exc:  # surfaced by /readyz; the node keeps answering reads
            self.failure = exc
            log.exception("Kafka consumer stopped")

    def freshness(self) -> dict[str, Any]:
        """`consumer_lag` is None (left out of answers) until every owned partition's lag is known."""
        consumer = self.consumer
        lag = sum(consumer.lag().values()) if consumer is not None and consumer.lag_known() else None
        return {"as_of": self._last_commit_at() or datetime.now(timezone.utc), "consumer_lag": lag}

    def stop(self) -> None:
        """Stop producing first (no new 202s: the HTTP server has drained), then let the consumer finish its batch."""
        try:
            self.producer.close(timeout=10)
        except Exception:
            log.exception("closing the Kafka producer")
        self._stop.set()
        if self.consumer is not None:
            self._thread.join(timeout=30)
            self.consumer.close()
