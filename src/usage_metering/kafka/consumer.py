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

Beside this module: offsets.py (the owned partitions' offsets, lag, and
their mirror in Kafka), dead_letters.py (the copy of dead letters on the
dead-letter topic), workarounds.py (kafka-python 3.0.12 workarounds that read
its private attributes, such as skipping a record it cannot unpack),
records.py (polled records into a batch) and client_types.py (kafka-python's
objects, typed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from usage_metering.ingest import Ingestor, IngestOutcome
from usage_metering.schemas import DEFAULT_LATE_WINDOW, EventStatus
from usage_metering.schemas.topics import DEFAULT_GROUP_ID, DEFAULT_TOPIC, dead_letter_topic_for
from usage_metering.store import Database, DeadLetter
from usage_metering.store.offsets import PartitionLost

from .client_types import Consumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from .dead_letters import DeadLetterPublisher
from .offsets import OwnedOffsets
from .records import PolledBatch, blocked_letter, decode_polled
from .workarounds import rejoin_if_assignment_was_dropped, skip_undecodable_record

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 1.0  # how often end offsets (lag) are refreshed and Kafka offsets re-mirrored
_MAX_IN_FLIGHT = 2  # batches handed to the writer and not yet committed
_RETRY_BACKOFF_SECONDS = 0.5  # after a retriable Kafka error (broker restarting, leader moving)
_TOPIC_WAIT_SECONDS = 1.0  # between checks for a topic that does not exist yet


def _group_member(
    bootstrap_servers: str | list[str],
    group_id: str,
    group_instance_id: str | None,
    max_poll_records: int,
    kafka_options: Mapping[str, object],
) -> Consumer:
    """The kafka-python consumer of one group member; `kafka_options` override the defaults.

    Offsets are never auto-committed (DuckDB's are the ones that count, see the
    module docstring); a group new to a partition reads it from the beginning.
    """
    options: dict[str, object] = {
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
    consumer: Consumer = KafkaConsumer(**options)
    return consumer


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
        **kafka_options: object,
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
        self._offsets = OwnedOffsets()
        self._housekeeping_at = 0.0
        self._in_flight: deque[Future[_Committed]] = deque()
        self._writer_failed: BaseException | None = None
        self._dead_letters = DeadLetterPublisher(bootstrap_servers, group_id)
        self._closed = False

        self.ingestor = ingestor or Ingestor(database)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-ingest-writer")
        try:
            self._consumer = _group_member(
                bootstrap_servers, group_id, group_instance_id, max_poll_records, kafka_options
            )
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
        self._offsets.mirror_to_kafka(self._consumer, sync=True)
        self._dead_letters.flush()

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

    def _poll(self, stop: threading.Event) -> Mapping[TopicPartition, Sequence[ConsumerRecord]]:
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
            if not skip_undecodable_record(self._consumer, exc, self._submit):
                raise
            return {}
        rejoin_if_assignment_was_dropped(self._consumer, self.group_id)
        return polled

    def close(self) -> None:
        """Leave the group and release the Kafka clients and the writer. The database stays open."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False)
        except Exception:
            log.exception("closing the Kafka consumer failed")
        self._dead_letters.close()
        self._writer.shutdown(wait=True)
        self.ingestor.stop()

    # -- observability ---------------------------------------------------------------

    def lag(self) -> dict[int, int]:
        """Per owned partition of `topic`: end offset minus the next offset stored in DuckDB.

        End offsets are refreshed by the consumer loop at most every ~1 s.
        Partitions whose end offset is not known yet (just assigned) are left out:
        an unknown lag is not a zero lag.
        """
        return self._offsets.lag(self.topic)

    def lag_known(self) -> bool:
        """True once partitions are assigned and the end offset of every one of them is known."""
        return self._offsets.lag_known(self.topic)

    def assigned_partitions(self) -> list[int]:
        """The partitions this member owns now (empty until the group assigned some)."""
        return self._offsets.partitions()

    def partition_count(self) -> int | None:
        """How many partitions `topic` had at the last assignment (None before the first)."""
        return self._partition_count

    def stored_offsets(self) -> dict[int, int]:
        """The next offset committed in DuckDB, per owned partition of `topic`."""
        return {p: o for (t, p), o in self._offsets.stored().items() if t == self.topic}

    def _maybe_housekeep(self) -> None:
        """About once a second: refresh the end offsets behind lag(), re-mirror unacknowledged offsets."""
        now = time.monotonic()
        if now - self._housekeeping_at < HOUSEKEEPING_SECONDS:
            return
        self._housekeeping_at = now
        self._offsets.refresh_end_offsets(self._consumer)
        self._offsets.mirror_to_kafka(self._consumer, sync=False)

    # -- rebalance -----------------------------------------------------------------

    def _seek_to_stored(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        stored_by_topic = {
            topic: self.ingestor.claim(topic, [tp.partition for tp in assigned if tp.topic == topic], self.node_url)
            for topic in {tp.topic for tp in assigned}
        }
        from_start: list[TopicPartition] = []
        for tp in assigned:
            offset = stored_by_topic[tp.topic].get(tp.partition)
            if offset is None:
                from_start.append(tp)
            else:
                self._consumer.seek(tp, offset)
            self._offsets.claim((tp.topic, tp.partition), offset)
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
        self._offsets.forget((tp.topic, tp.partition) for tp in revoked)

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
        self._offsets.mirror_to_kafka(self._consumer, sync=False)
        self._dead_letters.publish(self.dead_letter_topic, committed.dead_letters, committed.dead_letter_keys)
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
        self._offsets.record_committed(batch.offsets)  # as soon as readers can see the batch, lag() stops counting it
        statuses = [outcome.status for outcome in outcomes]
        return _Committed(
            dead_letters=batch.dead_letters + blocked_letters,
            dead_letter_keys=batch.dead_letter_keys + blocked_keys,
            records=batch.records,
            recorded=statuses.count(EventStatus.RECORDED),
            duplicates=statuses.count(EventStatus.DUPLICATE),
            blocked=statuses.count(EventStatus.BLOCKED),
        )
