"""The Kafka consumer group loop: poll, validate, ingest, commit — exactly once.

Exactly-once comes from DuckDB, not Kafka: each batch's events, rollups,
next offsets per (topic, partition) and dead letters are committed in ONE
DuckDB transaction by the `Ingestor`, and on every partition assignment the
consumer seeks to the offsets stored there (or to the beginning). A crash at
any point therefore replays exactly the records whose transaction did not
commit. Kafka's own committed offsets mirror DuckDB's (after each batch, and
retried every second until acknowledged), for lag tools only; they are never
read back.

Pipelining: the main thread polls and validates batch N+1 while one worker
thread commits batch N. The worker runs batches strictly in order and stops at
the first failure, so a later batch can never commit offsets past a batch that
was rolled back.

Events the ingestor blocks (a `block` quota policy) become dead letters
(`quota_exceeded: ...`) in the same transaction that advances the offsets past
them (the ingestor's `dead_letter_blocked` hook).

Input never stops the consumer: a record whose value is not an event, and a
record that kafka-python cannot even unpack (a codec it lacks, a failed CRC),
becomes a dead letter committed with the offset past it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError
from kafka.structs import OffsetAndMetadata

from usage_metering.ingest import Ingestor, IngestOutcome
from usage_metering.schemas import DEFAULT_LATE_WINDOW, EventStatus
from usage_metering.schemas.topics import DEFAULT_GROUP_ID, DEFAULT_TOPIC, dead_letter_topic_for
from usage_metering.store import Database, DeadLetter
from usage_metering.store.offsets import PartitionKey, PartitionLost

from .records import PolledBatch, blocked_letter, decode_polled, undecodable_record

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 1.0  # how often end offsets (lag) are refreshed and Kafka offsets re-mirrored
_MAX_IN_FLIGHT = 2  # batches handed to the writer and not yet committed
_RETRY_BACKOFF_SECONDS = 0.5  # after a retriable Kafka error (broker restarting, leader moving)
_TOPIC_WAIT_SECONDS = 1.0  # between checks for a topic that does not exist yet


def _raised_unpacking_records(error: BaseException) -> bool:
    """True if `error` came out of kafka-python's record unpacking (decompression, CRC, record parsing)."""
    return any(frame.name == "_unpack_records" for frame in traceback.extract_tb(error.__traceback__))


def _undecodable_position(consumer: KafkaConsumer) -> tuple[TopicPartition, int] | None:
    """The partition and offset whose records kafka-python failed to unpack in the last poll, if any.

    kafka-python 3.0.12 raises from poll() without saying which partition
    failed; its fetcher keeps the failed partition's records as next in line,
    stopped at the offset it could not unpack, which is also the partition's
    position. Reads private attributes, hence the version pin in
    pyproject.toml and tests/kafka/test_interop.py.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    records = getattr(fetcher, "_next_partition_records", None)
    tp = getattr(records, "topic_partition", None)
    offset = getattr(records, "next_fetch_offset", None)
    if tp is None or offset is None or tp not in consumer.assignment():
        return None
    if consumer.position(tp) != offset:
        return None
    return tp, offset


# -- batches -------------------------------------------------------------------------


@dataclass
class _Committed:
    dead_letters: list[DeadLetter]
    dead_letter_keys: list[bytes | None]
    records: int
    recorded: int
    duplicates: int
    blocked: int


@dataclass
class ConsumerStats:
    """Counts since this consumer started (committed batches only)."""

    records: int = 0
    recorded: int = 0
    duplicates: int = 0
    blocked: int = 0
    dead_letters: int = 0  # including blocked events
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Rebalance(ConsumerRebalanceListener):
    """Seek to the DuckDB offsets on assignment; finish in-flight commits first."""

    def __init__(self, owner: KafkaIngestConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.owner._wait_in_flight()
        self.owner._forget_partitions(revoked)

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.owner._wait_in_flight()
        self.owner._seek_to_stored(assigned)


class KafkaIngestConsumer:
    """Reads `topic` as part of `group_id` and commits it to DuckDB exactly once.

    The caller opens (and closes) the `Database`; opening it is what fails at
    once, with StoreLockedError, when another process holds the file. Call
    `run()` (blocking) and `stop()` from another thread or a signal handler;
    `close()` afterwards, or use the consumer as a context manager.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        database: Database,
        *,
        topic: str = DEFAULT_TOPIC,
        group_id: str = DEFAULT_GROUP_ID,
        dead_letter_topic: str | None = None,
        max_poll_records: int = 5000,
        late_window: timedelta = DEFAULT_LATE_WINDOW,
        group_instance_id: str | None = None,
        ingestor: Ingestor | None = None,
        poll_timeout_ms: int = 200,
        node_url: str | None = None,
        **kafka_options: Any,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.database = database
        self.topic = topic
        self.group_id = group_id
        # None: `<topic>-dead-letters`; "": dead letters only in the dead_letters table.
        self.dead_letter_topic = dead_letter_topic_for(topic) if dead_letter_topic is None else dead_letter_topic
        self.max_poll_records = max_poll_records
        self.late_window = late_window
        self.poll_timeout_ms = poll_timeout_ms
        self.node_url = node_url  # recorded as the owner of the partitions this consumer claims
        self._partition_count: int | None = None
        self.stats = ConsumerStats()
        self.last_commit_at: datetime | None = None

        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _stored, _end_offsets, _kafka_acknowledged
        # Next offset committed in DuckDB per owned partition (None: nothing stored yet).
        self._stored: dict[PartitionKey, int | None] = {}
        self._end_offsets: dict[PartitionKey, int] = {}
        self._housekeeping_at = 0.0
        # Offsets Kafka acknowledged for the group (its mirror of _stored).
        self._kafka_acknowledged: dict[PartitionKey, int] = {}
        self._in_flight: deque[Future[_Committed]] = deque()
        self._writer_failed: BaseException | None = None
        self._dead_letter_producer: KafkaProducer | None = None
        self._closed = False

        self.ingestor = ingestor or Ingestor(database)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-ingest-writer")
        options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "group_instance_id": group_instance_id,
            "client_id": f"usage-metering-consumer-{group_id}",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": max_poll_records,
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
        }
        options.update(kafka_options)
        try:
            self._consumer = KafkaConsumer(**options)
        except Exception:
            self._writer.shutdown(wait=False)
            raise

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> KafkaIngestConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask `run()` to finish the current batch and return. Safe from any thread or signal handler."""
        self._stop.set()

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Consume until `stop()` (or `stop_event` is set); every polled record is committed on return.

        Raises if a DuckDB commit fails: the records of that batch (and any
        after it) are not committed, and a restart replays them from the
        stored offsets.
        """
        stop = stop_event or self._stop
        if not self._wait_for_topic(stop):
            return
        self._consumer.subscribe([self.topic], listener=_Rebalance(self))
        try:
            while not (stop.is_set() or self._stop.is_set()):
                polled = self._poll(stop)
                self._finish_committed(block=False)
                if polled:
                    self._submit(decode_polled(polled, self.late_window))
                self._maybe_housekeep()
        finally:
            # Finish what was handed to the writer (a rolled-back batch re-raises here).
            self._finish_committed(block=True)
        self._mirror_offsets_to_kafka(sync=True)
        if self._dead_letter_producer is not None:
            self._dead_letter_producer.flush(timeout=30)

    def _wait_for_topic(self, stop: threading.Event) -> bool:
        """Wait until the topic exists; False if stopped first.

        Subscribing to a missing topic would make a broker with
        auto.create.topics.enable create it with its default partition count
        (often 1), which `kafka init` would then keep. kafka-python 3.0.12
        ignores its own allow_auto_create_topics option, so we do not ask for
        the topic by name until it is listed.
        """
        warned = False
        while not (stop.is_set() or self._stop.is_set()):
            try:
                if self.topic in self._consumer.topics():
                    return True
            except KafkaError as exc:
                if not exc.retriable:
                    raise
            if not warned:
                log.warning(
                    "topic %s does not exist yet; waiting for it (create it with `usage-metering kafka init`)",
                    self.topic,
                )
                warned = True
            stop.wait(_TOPIC_WAIT_SECONDS)
        return False

    def _poll(self, stop: threading.Event) -> Mapping[TopicPartition, Sequence[Any]]:
        """One poll; a broker that is down or moving (retriable errors) means wait and poll again.

        Nothing is lost by retrying: positions only move past records we were
        given, or past a record that cannot be unpacked once its dead letter
        is handed to the writer.
        """
        try:
            polled = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
        except Exception as exc:
            if isinstance(exc, KafkaError) and exc.retriable:
                log.warning("Kafka unavailable (%s); retrying", exc)
                stop.wait(_RETRY_BACKOFF_SECONDS)
                return {}
            if not self._skip_undecodable_record(exc):
                raise
            return {}
        self._rejoin_if_assignment_was_dropped()
        return polled

    def _skip_undecodable_record(self, error: Exception) -> bool:
        """Dead-letter the record kafka-python failed to unpack and move past it; False if `error` is not that.

        The record's bytes are not available (the batch around it could not
        be decompressed or failed its CRC), so the dead letter keeps its
        topic, partition, offset and the error. A compressed batch is skipped
        one offset at a time: each poll fails again on the same batch until
        the position is past its last record.
        """
        if isinstance(error, KafkaError) and not isinstance(error, (UnsupportedCodecError, CorruptRecordError)):
            return False
        if not _raised_unpacking_records(error):  # e.g. a bug elsewhere: never skip a record for it
            return False
        stuck = _undecodable_position(self._consumer)
        if stuck is None:
            return False
        tp, offset = stuck
        log.error("cannot unpack %s/%d@%d (%r); dead-lettering it", tp.topic, tp.partition, offset, error)
        self._submit(undecodable_record(tp.topic, tp.partition, offset, error))
        self._consumer.seek(tp, offset + 1)
        return True

    def _rejoin_if_assignment_was_dropped(self) -> None:
        """Work around kafka-python 3.0.x leaving this member with no partitions, forever.

        When the group leader rejoins because the topic's metadata changed (a
        topic created moments ago, partitions added, a broker restart) and
        poll() times out between its JoinGroup and SyncGroup, kafka-python
        3.0.12 finishes the join but never applies the assignment: the broker
        counts the partitions as ours while we fetch none. The finished join
        is left behind as a done task while no rejoin is pending; asking for a
        rejoin makes the next poll join again and apply its result. This reads
        private attributes, hence the version pin in pyproject.toml and
        tests/kafka/test_kafka_pipeline.py::test_partitions_added_while_consuming_are_picked_up.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        join_task = getattr(coordinator, "_join_task", None)
        if coordinator is None or join_task is None or not join_task.is_done or coordinator.need_rejoin():
            return
        log.warning("group %s: a finished rebalance was not applied by kafka-python; rejoining", self.group_id)
        coordinator.request_rejoin()

    def close(self) -> None:
        """Leave the group and release the Kafka clients and the writer. The database stays open."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False)
        except Exception:
            log.exception("closing the Kafka consumer failed")
        if self._dead_letter_producer is not None:
            try:
                self._dead_letter_producer.close(timeout=30)
            except Exception:
                log.exception("closing the dead-letter producer failed")
        self._writer.shutdown(wait=True)
        self.ingestor.stop()

    # -- observability ---------------------------------------------------------------

    def lag(self) -> dict[int, int]:
        """Per owned partition of `topic`: end offset minus the next offset stored in DuckDB.

        End offsets are refreshed by the consumer loop at most every ~1 s.
        Partitions whose end offset is not known yet (just assigned) are left out:
        an unknown lag is not a zero lag.
        """
        with self._lock:
            return {
                partition: max(0, self._end_offsets[(topic, partition)] - (stored or 0))
                for (topic, partition), stored in self._stored.items()
                if topic == self.topic and (topic, partition) in self._end_offsets
            }

    def lag_known(self) -> bool:
        """True once partitions are assigned and the end offset of every one of them is known."""
        with self._lock:
            owned = [key for key in self._stored if key[0] == self.topic]
            return bool(owned) and all(key in self._end_offsets for key in owned)

    def assigned_partitions(self) -> list[int]:
        """The partitions this member owns now (empty until the group assigned some)."""
        with self._lock:
            return sorted(partition for _topic, partition in self._stored)

    def partition_count(self) -> int | None:
        """How many partitions `topic` had at the last assignment (None before the first)."""
        return self._partition_count

    def stored_offsets(self) -> dict[int, int]:
        """The next offset committed in DuckDB, per owned partition of `topic`."""
        return {p: o for (t, p), o in self._stored_offsets().items() if t == self.topic}

    def _stored_offsets(self) -> dict[PartitionKey, int]:
        with self._lock:
            return {key: offset for key, offset in self._stored.items() if offset is not None}

    def _maybe_housekeep(self) -> None:
        """About once a second: refresh the end offsets behind lag(), re-mirror unacknowledged offsets."""
        now = time.monotonic()
        if now - self._housekeeping_at < HOUSEKEEPING_SECONDS:
            return
        self._housekeeping_at = now
        self._refresh_end_offsets()
        self._mirror_offsets_to_kafka(sync=False)

    def _refresh_end_offsets(self) -> None:
        partitions = list(self._consumer.assignment())
        ends: dict[PartitionKey, int] = {}
        unknown = []
        for tp in partitions:
            high = self._consumer.highwater(tp)  # from the last fetch response; no round trip
            if high is None:
                unknown.append(tp)
            else:
                ends[(tp.topic, tp.partition)] = high
        if unknown:
            try:
                for tp, end in self._consumer.end_offsets(unknown, timeout_ms=2000).items():
                    ends[(tp.topic, tp.partition)] = end
            except Exception as exc:  # lag is best effort
                log.debug("end_offsets failed: %r", exc)
        with self._lock:
            self._end_offsets.update(ends)

    # -- rebalance -----------------------------------------------------------------

    def _seek_to_stored(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        stored_by_topic = {
            topic: self.ingestor.claim(topic, [tp.partition for tp in assigned if tp.topic == topic], self.node_url)
            for topic in {tp.topic for tp in assigned}
        }
        from_start = []
        for tp in assigned:
            offset = stored_by_topic[tp.topic].get(tp.partition)
            if offset is None:
                from_start.append(tp)
            else:
                self._consumer.seek(tp, offset)
            with self._lock:
                self._stored[(tp.topic, tp.partition)] = offset
        if from_start:
            self._consumer.seek_to_beginning(*from_start)
        # On the polling thread (the client is not thread-safe), from its metadata cache.
        self._partition_count = len(self._consumer.partitions_for_topic(self.topic)) or None
        self._housekeeping_at = 0.0  # learn the new partitions' end offsets (their lag) on the next loop
        log.info(
            "assigned %s; resuming from stored offsets %s (from the beginning: %s)",
            sorted(tp.partition for tp in assigned),
            {tp.partition: stored_by_topic[tp.topic].get(tp.partition) for tp in assigned if tp not in from_start},
            sorted(tp.partition for tp in from_start),
        )

    def _forget_partitions(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        self.ingestor.release((tp.topic, tp.partition) for tp in revoked)
        with self._lock:
            for tp in revoked:
                self._stored.pop((tp.topic, tp.partition), None)
                self._end_offsets.pop((tp.topic, tp.partition), None)
                self._kafka_acknowledged.pop((tp.topic, tp.partition), None)

    def _wait_in_flight(self) -> None:
        """Block until every batch handed to the writer is committed or failed (not acknowledged)."""
        for future in list(self._in_flight):
            with contextlib.suppress(BaseException):  # reported by _finish_committed on the main thread
                future.result()

    # -- the batch pipeline ------------------------------------------------------------

    def _submit(self, batch: PolledBatch) -> None:
        while len(self._in_flight) >= _MAX_IN_FLIGHT:
            if not self._finish_one(self._in_flight[0]):
                return  # read before the consumer sought back to the stored offsets: it is read again
        self._in_flight.append(self._writer.submit(self._commit, batch))

    def _finish_committed(self, *, block: bool) -> None:
        while self._in_flight and (block or self._in_flight[0].done()):
            self._finish_one(self._in_flight[0])

    def _finish_one(self, future: Future[_Committed]) -> bool:
        """Account for the oldest batch in flight; False if a partition was lost and positions were reset."""
        try:
            committed = future.result()  # re-raises a failed commit: run() stops
        except PartitionLost as lost:
            self._take_back_partitions(lost)
            return False
        self._in_flight.popleft()
        stats = self.stats
        stats.records += committed.records
        stats.recorded += committed.recorded
        stats.duplicates += committed.duplicates
        stats.blocked += committed.blocked
        stats.dead_letters += len(committed.dead_letters)
        stats.batches += 1
        self.last_commit_at = self.ingestor.last_commit_at
        self._mirror_offsets_to_kafka(sync=False)
        self._publish_dead_letters(committed.dead_letters, committed.dead_letter_keys)
        return True

    def _take_back_partitions(self, lost: PartitionLost) -> None:
        """Another consumer committed one of our partitions (we were paused past the session timeout, or it
        was before a rebalance reached us): nothing of ours was stored from the failed batch on. Drop the
        batches in flight and read every assigned partition again from the offsets stored now; if the group
        moved a partition away, the coming rebalance revokes it."""
        log.warning("%s; reading the assigned partitions again from their stored offsets", lost)
        self._wait_in_flight()
        self._in_flight.clear()
        self._writer_failed = None
        self._seek_to_stored(self._consumer.assignment())

    # -- on the writer thread -----------------------------------------------------------

    def _commit(self, batch: PolledBatch) -> _Committed:
        if self._writer_failed is not None:
            raise RuntimeError("an earlier batch failed to commit; not committing later ones") from self._writer_failed
        try:
            # One transaction: events, rollups, offsets, parse dead letters, and a dead
            # letter for each event a `block` quota refused.
            blocked_letters: list[DeadLetter] = []
            blocked_keys: list[bytes | None] = []

            def letter_for_blocked(index: int, outcome: IngestOutcome) -> DeadLetter:
                source = batch.sources[index]
                blocked_letters.append(blocked_letter(source, batch.events[index], outcome))
                blocked_keys.append(source.key)  # for the copy on the dead-letter topic
                return blocked_letters[-1]

            outcomes = self.ingestor.ingest(
                batch.events,
                offsets=batch.offsets,
                dead_letters=batch.dead_letters,
                dead_letter_blocked=letter_for_blocked,
            )
        except BaseException as exc:
            self._writer_failed = exc
            raise
        with self._lock:  # as soon as readers can see the batch, lag() stops counting it
            for key, offset in batch.offsets.items():
                if key in self._stored:  # still ours
                    self._stored[key] = offset
        statuses = [outcome.status for outcome in outcomes]
        return _Committed(
            dead_letters=batch.dead_letters + blocked_letters,
            dead_letter_keys=batch.dead_letter_keys + blocked_keys,
            records=batch.records,
            recorded=statuses.count(EventStatus.RECORDED),
            duplicates=statuses.count(EventStatus.DUPLICATE),
            blocked=statuses.count(EventStatus.BLOCKED),
        )

    # -- after the DuckDB commit ------------------------------------------------------------

    def _mirror_offsets_to_kafka(self, *, sync: bool) -> None:
        """Commit DuckDB's offsets to the group's Kafka offsets where Kafka has not acknowledged them.

        For lag tools only (never read back). Retrying whatever is not
        acknowledged matters: after a crash between a DuckDB commit and its
        Kafka commit, or a commit lost in a rebalance, Kafka would otherwise
        show a stale lag for a partition until new records arrive on it.
        """
        owned = set(self._consumer.assignment())
        stored = self._stored_offsets()
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
                self._consumer.commit(pending)
                self._on_kafka_commit(pending, None)
            else:
                self._consumer.commit_async(pending, callback=self._on_kafka_commit)
        except Exception as exc:  # e.g. a rebalance in progress: DuckDB already has them
            log.warning("Kafka offset commit failed (DuckDB offsets are authoritative): %r", exc)

    def _on_kafka_commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        if isinstance(result, BaseException):
            log.warning("Kafka offset commit failed (DuckDB offsets are authoritative; will retry): %r", result)
            return
        with self._lock:
            for tp, meta in offsets.items():
                self._kafka_acknowledged[(tp.topic, tp.partition)] = meta.offset

    def _publish_dead_letters(self, letters: Sequence[DeadLetter], keys: Sequence[bytes | None]) -> None:
        if not letters or not self.dead_letter_topic:
            return
        try:
            if self._dead_letter_producer is None:
                self._dead_letter_producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    acks="all",
                    client_id=f"usage-metering-dead-letters-{self.group_id}",
                )
            producer = self._dead_letter_producer
            for letter, key in zip(letters, keys):
                headers = [
                    ("reason", letter.reason.encode("utf-8")),
                    ("source-topic", (letter.topic or "").encode("utf-8")),
                    ("source-partition", str(letter.partition).encode("ascii")),
                    ("source-offset", str(letter.offset).encode("ascii")),
                ]
                future = producer.send(self.dead_letter_topic, value=letter.raw, key=key, headers=headers)
                future.add_errback(_log_dead_letter_failure, letter)
        except Exception:  # the DuckDB dead_letters table is the record
            log.exception("could not publish %d dead letters to %s", len(letters), self.dead_letter_topic)


def _log_dead_letter_failure(letter: DeadLetter, error: BaseException) -> None:
    log.error("dead letter %s/%s@%s not published: %r", letter.topic, letter.partition, letter.offset, error)


# -- the process entry point ---------------------------------------------------------
