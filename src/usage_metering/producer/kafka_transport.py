"""The Kafka transport: events go to a topic, keyed by tenant, with acks=all.

kafka-python 3 enables the idempotent producer by default (KIP-679); we ask for
it explicitly so a conflicting option raises instead of silently turning it off.
With idempotence the producer keeps one batch in flight per partition, so
retries keep each tenant's events in order, and the broker drops retried
duplicates. Duplicates that still get through (a resend after a producer
restart) carry the same event id and the consumer drops them.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from usage_metering.schemas import EVENT_SCHEMA_VERSION, UsageEvent

from .base import BaseUsageProducer
from .delivery import DeliveryTracker, ErrorCallback
from .events import encode_event

DEFAULT_KAFKA_OPTIONS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    # retries defaults to infinity in kafka-python 3; the delivery timeout bounds
    # the time a record may spend retrying before its future fails.
    "delivery_timeout_ms": 120_000,
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    "compression_type": "gzip",  # built into kafka-python; no extra package
}

HEADERS: list[tuple[str, bytes]] = [
    ("schema-version", str(EVENT_SCHEMA_VERSION).encode("ascii")),
    ("content-type", b"application/json"),
]


class UsageProducer(BaseUsageProducer):
    """Records usage events to Kafka. Safe to share between threads.

    `kafka_options` are passed to `kafka.KafkaProducer` and override the
    defaults in `DEFAULT_KAFKA_OPTIONS` (e.g. ``compression_type=None``).
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str] = "localhost:9092",
        topic: str = "usage-events",
        *,
        on_error: ErrorCallback | None = None,
        **kafka_options: Any,
    ) -> None:
        self.topic = topic
        self._tracker = DeliveryTracker(on_error)
        self._closed = False
        self._close_lock = threading.Lock()
        options = {**DEFAULT_KAFKA_OPTIONS, **kafka_options, "bootstrap_servers": bootstrap_servers}
        self._producer = KafkaProducer(**options)

    def _send(self, event: UsageEvent) -> None:
        token = self._tracker.start(event.event_id)
        try:
            future = self._send_record(event)
        except Exception:
            # Not queued: the caller gets the exception now, so don't report it twice.
            self._tracker.discard(token)
            raise
        future.add_callback(lambda _metadata: self._tracker.succeeded(token))
        future.add_errback(lambda error: self._tracker.failed(token, error))

    def publish(self, events: Sequence[UsageEvent]) -> Future[None]:
        """Send validated events; the future resolves once Kafka acknowledged all (acks=all).

        For a front end that answers its caller only after the broker has the
        events (the HTTP node in Kafka mode). Fails with the first send error.
        """
        done: Future[None] = Future()
        if not events:
            done.set_result(None)
            return done
        remaining = [len(events)]
        lock = threading.Lock()

        def acknowledged(_metadata: object) -> None:
            with lock:
                remaining[0] -= 1
                finished = remaining[0] == 0
            if finished and not done.done():
                done.set_result(None)

        def failed(error: BaseException) -> None:
            with lock:
                if not done.done():
                    done.set_exception(error)

        try:
            for event in events:
                future = self._send_record(event)
                future.add_callback(acknowledged)
                future.add_errback(failed)
        except Exception as exc:
            failed(exc)
        return done

    def _send_record(self, event: UsageEvent) -> Any:
        if self._closed:
            raise RuntimeError("UsageProducer is closed")
        return self._producer.send(
            self.topic,
            value=encode_event(event),
            key=event.tenant_id.encode("utf-8"),
            headers=list(HEADERS),
        )

    def flush(self, timeout: float | None = None) -> None:
        # Failures are settled by the errbacks before kafka-python's flush returns.
        try:
            self._producer.flush(timeout)
        except KafkaTimeoutError as exc:
            raise TimeoutError(f"Kafka flush did not complete within {timeout}s") from exc
        self._tracker.raise_failures()

    def close(self, timeout: float | None = None) -> None:
        with self._close_lock:
            if self._closed:
                self._tracker.raise_failures()
                return
            self._closed = True
        timed_out = False
        try:
            self._producer.flush(timeout)
        except KafkaTimeoutError:
            timed_out = True
            # Maybe delivered later, maybe not: unconfirmed counts as failed.
            # Resending them (same ids) is safe.
            self._tracker.fail_all_pending(
                TimeoutError(f"not acknowledged by Kafka within the close timeout ({timeout}s)")
            )
        finally:
            self._close_producer(0 if timed_out else timeout)
        self._tracker.raise_failures()

    def _close_producer(self, timeout: float | None) -> None:
        # kafka-python's close() flushes first and raises KafkaTimeoutError if
        # records are still pending; by then we have reported them as failed.
        try:
            self._producer.close(timeout)
        except KafkaTimeoutError:
            pass
