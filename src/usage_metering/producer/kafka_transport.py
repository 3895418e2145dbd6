"""The Kafka transport: a tenant's events packed into records keyed by tenant, with acks=all.

Packing (producer/packing.py) is what makes the pipeline fast: kafka-python's
cost is per record, on the producer and on the consumer, so 500 events in one
record pay it once.

kafka-python 3 enables the idempotent producer by default (KIP-679); we ask for
it explicitly so a conflicting option raises instead of silently turning it off.
With idempotence the producer keeps one batch in flight per partition, so
retries keep each tenant's events in order, and the broker drops retried
duplicates. Duplicates that still get through (a resend after a producer
restart) carry the same event id and the consumer drops them.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from usage_metering.schemas import EVENT_SCHEMA_VERSION, UsageEvent
from usage_metering.schemas.event_json import EVENT_BATCH_CONTENT_TYPE, encode_event_batch
from usage_metering.schemas.topics import DEFAULT_TOPIC

from .base import BaseUsageProducer
from .delivery import DeliveryTracker, ErrorCallback
from .events import encode_event
from .packing import RecordPacker

DEFAULT_KAFKA_OPTIONS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    # retries defaults to infinity in kafka-python 3; the delivery timeout bounds
    # the time a record may spend retrying before its future fails.
    "delivery_timeout_ms": 120_000,
    "batch_size": 1024 * 1024,  # Kafka's own batches of (already packed) records per partition
    "max_request_size": 2 * 1024 * 1024,
    "compression_type": "lz4",
}
DEFAULT_MAX_BATCH_EVENTS = 500
DEFAULT_MAX_BATCH_BYTES = 256 * 1024
DEFAULT_LINGER_MS = 20

BATCH_HEADERS: list[tuple[str, bytes]] = [
    ("schema-version", str(EVENT_SCHEMA_VERSION).encode("ascii")),
    ("content-type", EVENT_BATCH_CONTENT_TYPE.encode("ascii")),
]
SINGLE_EVENT_HEADERS: list[tuple[str, bytes]] = [
    ("schema-version", str(EVENT_SCHEMA_VERSION).encode("ascii")),
    ("content-type", b"application/json"),
]


class _Publication:
    """The events of one `publish()` call: done when all are acknowledged, failed at the first error."""

    def __init__(self, count: int) -> None:
        self.done: Future[None] = Future()
        self._remaining = count
        self._lock = threading.Lock()
        if count == 0:
            self.done.set_result(None)

    def settle(self, count: int, error: BaseException | None) -> None:
        with self._lock:
            if self.done.done():
                return
            if error is not None:
                self.done.set_exception(error)
                return
            self._remaining -= count
            if self._remaining <= 0:
                self.done.set_result(None)


class UsageProducer(BaseUsageProducer):
    """Records usage events to Kafka. Safe to share between threads.

    A tenant's events are packed into one record (the batch envelope of
    schemas.event_json, keyed by tenant id) of at most `max_batch_events`
    events and `max_batch_bytes` bytes, sent when full or once its first event
    has waited `linger_ms`. `max_batch_events=1` sends one plain event JSON
    per record instead, the format any producer may write. `kafka_options`
    are passed to `kafka.KafkaProducer` and override `DEFAULT_KAFKA_OPTIONS`
    (e.g. ``compression_type=None``).
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str] = "localhost:9092",
        topic: str = DEFAULT_TOPIC,
        *,
        on_error: ErrorCallback | None = None,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        linger_ms: float = DEFAULT_LINGER_MS,
        **kafka_options: Any,
    ) -> None:
        self.topic = topic
        self._tracker = DeliveryTracker(on_error)
        self._closed = False
        self._close_lock = threading.Lock()
        self._single_events = max_batch_events == 1
        options = {**DEFAULT_KAFKA_OPTIONS, **kafka_options, "bootstrap_servers": bootstrap_servers}
        self._producer = KafkaProducer(**options)
        self._packer: RecordPacker[str | _Publication] = RecordPacker(
            self._ship, max_events=max_batch_events, max_bytes=max_batch_bytes, linger_seconds=linger_ms / 1000
        )

    def _send(self, event: UsageEvent) -> None:
        if self._closed:
            raise RuntimeError("UsageProducer is closed")
        self._packer.add(event.tenant_id.encode("utf-8"), encode_event(event), event.event_id)

    def publish(self, events: Sequence[UsageEvent]) -> Future[None]:
        """Send validated events; the future resolves once Kafka acknowledged all (acks=all).

        For a front end that answers its caller only after the broker has the
        events (the HTTP node in Kafka mode). Fails with the first send error.
        """
        publication = _Publication(len(events))
        try:
            if self._closed:
                raise RuntimeError("UsageProducer is closed")
            for event in events:
                self._packer.add(event.tenant_id.encode("utf-8"), encode_event(event), publication)
        except Exception as exc:
            publication.settle(1, exc)
        return publication.done

    def _ship(self, key: bytes, payloads: list[bytes], items: list[str | _Publication]) -> None:
        """One record to Kafka (called by the packer, in order per tenant); settles its events when answered."""
        event_ids = [item for item in items if isinstance(item, str)]
        token = self._tracker.start_many(event_ids) if event_ids else None
        publications = Counter(item for item in items if isinstance(item, _Publication))

        def settle(error: BaseException | None) -> None:
            if token is not None:
                if error is None:
                    self._tracker.succeeded(token)
                else:
                    self._tracker.failed(token, error if isinstance(error, Exception) else RuntimeError(repr(error)))
            for publication, count in publications.items():
                publication.settle(count, error)

        if self._single_events:
            value, headers = payloads[0], list(SINGLE_EVENT_HEADERS)
        else:
            value, headers = encode_event_batch(payloads), list(BATCH_HEADERS)
        try:
            future = self._producer.send(self.topic, value=value, key=key, headers=headers)
        except Exception as exc:  # not queued (no metadata, buffer full past max_block_ms, closed)
            settle(exc)
            return
        future.add_callback(lambda _metadata: settle(None))
        future.add_errback(settle)

    def flush(self, timeout: float | None = None) -> None:
        # Failures are settled by the errbacks before kafka-python's flush returns.
        self._packer.ship_all()
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
        self._packer.close()
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
        with contextlib.suppress(KafkaTimeoutError):
            self._producer.close(timeout)
