"""What a consumer knows about the offsets of the partitions it owns, and their mirror in Kafka.

Three maps under one lock, keyed by (topic, partition): the next offset
committed in DuckDB (None: nothing stored yet), the partition's end offset (for
lag), and the offset Kafka acknowledged for the group. The polling thread
claims and forgets partitions, refreshes end offsets and mirrors the stored
offsets to the group's Kafka offsets; the writer thread records its commits;
any thread reads lag. The stored offsets themselves live in DuckDB
(store/offsets.py); these are this process's copy of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from usage_metering.store.offsets import PartitionKey

from .client_types import Consumer, OffsetAndMetadata, TopicPartition

# The consumer's logger, as before this moved out of consumer.py: log filters key on its name.
log = logging.getLogger("usage_metering.kafka.consumer")


class OwnedOffsets:
    """The offsets of the partitions a consumer owns: stored in DuckDB, at the end of the log, acknowledged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _stored, _end_offsets, _kafka_acknowledged
        # Next offset committed in DuckDB per owned partition (None: nothing stored yet).
        self._stored: dict[PartitionKey, int | None] = {}
        self._end_offsets: dict[PartitionKey, int] = {}
        # Offsets Kafka acknowledged for the group (its mirror of _stored).
        self._kafka_acknowledged: dict[PartitionKey, int] = {}

    # -- the polling thread ------------------------------------------------------------

    def claim(self, key: PartitionKey, stored: int | None) -> None:
        """Own `key`, whose next offset in DuckDB is `stored` (None: nothing stored yet)."""
        with self._lock:
            self._stored[key] = stored

    def forget(self, keys: Iterable[PartitionKey]) -> None:
        """No longer own `keys` (revoked or lost)."""
        with self._lock:
            for key in keys:
                self._stored.pop(key, None)
                self._end_offsets.pop(key, None)
                self._kafka_acknowledged.pop(key, None)

    def refresh_end_offsets(self, consumer: Consumer) -> None:
        """The end offsets behind lag(): from the last fetch responses, else asked of the brokers."""
        partitions = list(consumer.assignment())
        ends: dict[PartitionKey, int] = {}
        unknown: list[TopicPartition] = []
        for tp in partitions:
            high = consumer.highwater(tp)  # from the last fetch response; no round trip
            if high is None:
                unknown.append(tp)
            else:
                ends[(tp.topic, tp.partition)] = high
        if unknown:
            try:
                for tp, end in consumer.end_offsets(unknown, timeout_ms=2000).items():
                    ends[(tp.topic, tp.partition)] = end
            except Exception as exc:  # lag is best effort
                log.debug("end_offsets failed: %r", exc)
        with self._lock:
            self._end_offsets.update(ends)

    def mirror_to_kafka(self, consumer: Consumer, *, sync: bool) -> None:
        """Commit DuckDB's offsets to the group's Kafka offsets where Kafka has not acknowledged them.

        For lag tools only (never read back). Retrying whatever is not
        acknowledged matters: after a crash between a DuckDB commit and its
        Kafka commit, or a commit lost in a rebalance, Kafka would otherwise
        show a stale lag for a partition until new records arrive on it.
        """
        owned = set(consumer.assignment())
        stored = self.stored()
        with self._lock:
            pending = {
                TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
                for (topic, partition), offset in stored.items()
                if self._kafka_acknowledged.get((topic, partition)) != offset
                and TopicPartition(topic, partition) in owned
            }
        if not pending:
            return
        try:
            if sync:
                consumer.commit(pending)
                self._on_kafka_commit(pending, None)
            else:
                consumer.commit_async(pending, callback=self._on_kafka_commit)
        except Exception as exc:  # e.g. a rebalance in progress: DuckDB already has them
            log.warning("Kafka offset commit failed (DuckDB offsets are authoritative): %r", exc)

    def _on_kafka_commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], result: object) -> None:
        if isinstance(result, BaseException):
            log.warning("Kafka offset commit failed (DuckDB offsets are authoritative; will retry): %r", result)
            return
        with self._lock:
            for tp, meta in offsets.items():
                self._kafka_acknowledged[(tp.topic, tp.partition)] = meta.offset

    # -- the writer thread ---------------------------------------------------------------

    def record_committed(self, offsets: Mapping[PartitionKey, int]) -> None:
        """DuckDB committed these next offsets; partitions no longer owned are left out."""
        with self._lock:  # as soon as readers can see the batch, lag() stops counting it
            for key, offset in offsets.items():
                if key in self._stored:  # still ours
                    self._stored[key] = offset

    # -- any thread ----------------------------------------------------------------------

    def stored(self) -> dict[PartitionKey, int]:
        """The next offset committed in DuckDB per owned partition that has one."""
        with self._lock:
            return {key: offset for key, offset in self._stored.items() if offset is not None}

    def lag(self, topic: str) -> dict[int, int]:
        """Per owned partition of `topic` whose end offset is known: end offset minus the stored offset."""
        with self._lock:
            return {
                partition: max(0, self._end_offsets[(owned_topic, partition)] - (stored or 0))
                for (owned_topic, partition), stored in self._stored.items()
                if owned_topic == topic and (owned_topic, partition) in self._end_offsets
            }

    def lag_known(self, topic: str) -> bool:
        """True once partitions of `topic` are owned and the end offset of every one of them is known."""
        with self._lock:
            owned = [key for key in self._stored if key[0] == topic]
            return bool(owned) and all(key in self._end_offsets for key in owned)

    def partitions(self) -> list[int]:
        """The partitions owned now, sorted."""
        with self._lock:
            return sorted(partition for _topic, partition in self._stored)
