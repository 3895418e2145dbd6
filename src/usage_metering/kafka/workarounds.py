"""Workarounds for kafka-python 3.0.12 that read its private attributes.

Each function says which kafka-python behaviour it works around. They read
private attributes and frame names of kafka-python, hence the version pin
(<3.1) in pyproject.toml and the tests that fail when a release changes them:
tests/kafka/test_interop.py (undecodable records) and
tests/kafka/test_kafka_pipeline.py::test_partitions_added_while_consuming_are_picked_up
(the dropped assignment).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Protocol

from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError

from .client_types import Consumer, TopicPartition
from .records import PolledBatch, undecodable_record

# The consumer's logger, as before these moved out of consumer.py: log filters key on its name.
log = logging.getLogger("usage_metering.kafka.consumer")


def skip_undecodable_record(consumer: Consumer, error: Exception, submit: Callable[[PolledBatch], None]) -> bool:
    """Dead-letter the record kafka-python failed to unpack and move past it; False if `error` is not that.

    kafka-python 3.0.12 has no way past a record it cannot unpack (a codec it
    lacks, a failed CRC): every poll raises again at the same offset, without
    saying which partition or offset failed. This finds them
    (`undecodable_position`), hands the dead letter to `submit` (the writer)
    and seeks past the offset. The record's bytes are not available (the batch
    around it could not be decompressed or failed its CRC), so the dead letter
    keeps its topic, partition, offset and the error. A compressed batch is
    skipped one offset at a time: each poll fails again on the same batch until
    the position is past its last record.
    """
    if isinstance(error, KafkaError) and not isinstance(error, (UnsupportedCodecError, CorruptRecordError)):
        return False
    if not raised_unpacking_records(error):  # e.g. a bug elsewhere: never skip a record for it
        return False
    stuck = undecodable_position(consumer)
    if stuck is None:
        return False
    tp, offset = stuck
    log.error("cannot unpack %s/%d@%d (%r); dead-lettering it", tp.topic, tp.partition, offset, error)
    submit(undecodable_record(tp.topic, tp.partition, offset, error))
    consumer.seek(tp, offset + 1)
    return True


def raised_unpacking_records(error: BaseException) -> bool:
    """True if `error` came out of kafka-python's record unpacking (decompression, CRC, record parsing).

    kafka-python 3.0.12 raises a record it cannot unpack out of poll() like
    any other error (a codec it lacks, a failed CRC, or whatever the parser
    raised), with nothing on the exception saying so; its traceback passes
    through the fetcher's private `_unpack_records`.
    """
    return any(frame.name == "_unpack_records" for frame in traceback.extract_tb(error.__traceback__))


def undecodable_position(consumer: Consumer) -> tuple[TopicPartition, int] | None:
    """The partition and offset whose records kafka-python failed to unpack in the last poll, if any.

    kafka-python 3.0.12 raises from poll() without saying which partition
    failed; its fetcher keeps the failed partition's records as next in line,
    stopped at the offset it could not unpack, which is also the partition's
    position. Reads private attributes, hence the version pin in
    pyproject.toml and tests/kafka/test_interop.py.
    """
    fetcher: object = getattr(consumer, "_fetcher", None)
    records: object = getattr(fetcher, "_next_partition_records", None)
    tp: TopicPartition | None = getattr(records, "topic_partition", None)
    offset: int | None = getattr(records, "next_fetch_offset", None)
    if tp is None or offset is None or tp not in consumer.assignment():
        return None
    if consumer.position(tp) != offset:
        return None
    return tp, offset


class _JoinTask(Protocol):
    @property
    def is_done(self) -> bool: ...


class _GroupCoordinator(Protocol):
    """kafka-python's private ConsumerCoordinator (KafkaConsumer._coordinator)."""

    def need_rejoin(self) -> bool: ...
    def request_rejoin(self) -> None: ...


def rejoin_if_assignment_was_dropped(consumer: Consumer, group_id: str) -> None:
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
    coordinator: _GroupCoordinator | None = getattr(consumer, "_coordinator", None)
    join_task: _JoinTask | None = getattr(coordinator, "_join_task", None)
    if coordinator is None or join_task is None or not join_task.is_done or coordinator.need_rejoin():
        return
    log.warning("group %s: a finished rebalance was not applied by kafka-python; rejoining", group_id)
    coordinator.request_rejoin()
