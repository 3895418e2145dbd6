"""Polled Kafka records into one batch of events, dead letters and next offsets.

A record holds one event's JSON (what any producer may write) or, with the
content-type header `EVENT_BATCH_CONTENT_TYPE`, the SDK's envelope of many
events of one tenant. Either way every event is validated on its own: an
invalid one becomes a dead letter at its record's offset, and the record's
other events still count. Validation is relative to the record's Kafka
timestamp, so a replay after downtime accepts what was valid when it was sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from usage_metering.ingest import IngestOutcome
from usage_metering.schemas import DEFAULT_LATE_WINDOW, UsageEvent, ValidationError
from usage_metering.schemas.event_json import (
    EVENT_BATCH_CONTENT_TYPE,
    RejectedEvent,
    decode_event_batch,
    decode_event_json,
)
from usage_metering.store import DeadLetter
from usage_metering.store.dead_letters import dead_letter_reason
from usage_metering.store.offsets import PartitionKey

if TYPE_CHECKING:  # annotations only: decoding records needs no kafka-python import
    from .client_types import ConsumerRecord, TopicPartition

log = logging.getLogger(__name__)

_EVENT_BATCH_MEDIA_TYPE = EVENT_BATCH_CONTENT_TYPE.split(";", 1)[0].encode("ascii")


@dataclass
class PolledBatch:
    """What one DuckDB transaction commits for a poll: events, dead letters, next offsets."""

    events: list[UsageEvent] = field(default_factory=list)
    sources: list[ConsumerRecord] = field(default_factory=list)  # the record of each event (parallel)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letter_keys: list[bytes | None] = field(default_factory=list)  # parallel to dead_letters
    offsets: dict[PartitionKey, int] = field(default_factory=dict)  # next offset per partition
    records: int = 0

    def add_dead_letter(self, record: ConsumerRecord, reason: str, raw: bytes | None = None) -> None:
        """A dead letter for `record` (its whole value unless `raw`, one event of it, is given)."""
        if raw is None:
            raw = record.value if record.value is not None else b""
        self.dead_letters.append(DeadLetter("kafka", raw, reason, record.topic, record.partition, record.offset))
        self.dead_letter_keys.append(record.key)


def decode_polled(
    polled: Mapping[TopicPartition, Sequence[ConsumerRecord]], late_window: timedelta = DEFAULT_LATE_WINDOW
) -> PolledBatch:
    """Every polled record's events and dead letters, and the next offset of each partition."""
    batch = PolledBatch()
    times: dict[int | None, datetime] = {}
    for tp, records in polled.items():
        if not records:
            continue
        for record in records:
            produced_at = times.get(record.timestamp)
            if produced_at is None:
                produced_at = times[record.timestamp] = _record_time(record.timestamp)
            try:
                value = _value_of(record)
                if record.headers and is_event_batch(record.headers):
                    _add_event_batch(batch, record, value, produced_at, late_window)
                else:
                    batch.events.append(decode_event_json(value, now=produced_at, late_window=late_window))
                    batch.sources.append(record)
            except ValidationError as error:
                batch.add_dead_letter(record, dead_letter_reason(error))
            except Exception as exc:  # a validator bug must not stop the partition
                log.exception("unexpected error validating %s/%d@%d", record.topic, record.partition, record.offset)
                batch.add_dead_letter(record, f"internal_error: -: {exc!r}")
        batch.records += len(records)
        batch.offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
    return batch


def _value_of(record: ConsumerRecord) -> bytes:
    """The record's value; a tombstone (no value) is not an event."""
    if record.value is None:
        raise ValidationError(None, "empty message (no value)", "invalid_json")
    return record.value


def is_event_batch(headers: Sequence[tuple[str, bytes | None]]) -> bool:
    """True for a record the SDK packed several events into (its content-type header says so)."""
    for name, value in headers:
        if name.lower() == "content-type" and value is not None:
            return value.split(b";", 1)[0].strip().lower() == _EVENT_BATCH_MEDIA_TYPE
    return False


def _add_event_batch(
    batch: PolledBatch, record: ConsumerRecord, value: bytes, produced_at: datetime, late_window: timedelta
) -> None:
    for item in decode_event_batch(value, now=produced_at, late_window=late_window):
        if isinstance(item, RejectedEvent):
            error = item.error
            path = f"events[{item.index}]" + (f".{error.field}" if error.field else "")
            batch.add_dead_letter(
                record, dead_letter_reason(ValidationError(path, error.message, error.code)), raw=item.raw
            )
        else:
            batch.events.append(item)
            batch.sources.append(record)


def undecodable_record(topic: str, partition: int, offset: int, error: Exception) -> PolledBatch:
    """The dead letter (and next offset) of a record kafka-python could not unpack; its bytes are lost to us."""
    described = str(error)  # a KafkaError names its class itself
    if not described.startswith(type(error).__name__):
        described = f"{type(error).__name__}: {described}"
    batch = PolledBatch(records=1, offsets={(topic, partition): offset + 1})
    reason = f"undecodable_record: -: {described}"
    batch.dead_letters.append(DeadLetter("kafka", b"", reason, topic, partition, offset))
    batch.dead_letter_keys.append(None)
    return batch


def blocked_letter(record: ConsumerRecord, event: UsageEvent, outcome: IngestOutcome) -> DeadLetter:
    """The dead letter of an event a `block` quota refused: the record's value, or the event's JSON in a batch."""
    raw = record.value or b""
    if record.headers and is_event_batch(record.headers):
        raw = json.dumps(event.to_json_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return DeadLetter("kafka", raw, _quota_reason(outcome), record.topic, record.partition, record.offset)


def _quota_reason(outcome: IngestOutcome) -> str:
    quota = outcome.quota
    if quota is None:
        return "quota_exceeded: -: blocked by a quota"
    return (
        f"quota_exceeded: {quota.metric}: usage {quota.used} of {quota.limit} included "
        f"in period {quota.period.label()} (policy block)"
    )


def _record_time(timestamp_ms: int | None) -> datetime:
    if timestamp_ms is None or timestamp_ms < 0:
        return datetime.now(timezone.utc)
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc)
