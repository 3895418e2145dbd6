"""The parts of kafka-python this adapter uses, typed (kafka-python ships no type information).

mypy sees every kafka-python name as Any. These declarations say what its
objects hold and what its methods return, as documented for kafka-python 3.0.x:
its namedtuples `TopicPartition` and `OffsetAndMetadata` and the base class
`ConsumerRebalanceListener` (declared for mypy; at run time they are
kafka-python's own), and Protocols for a polled record and for the consumer,
producer and admin clients. Nothing wraps kafka-python's objects: they are
annotated with these types where they are made. A method not listed here is not
used by the adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypedDict, TypeVar

if TYPE_CHECKING:
    from abc import ABC, abstractmethod
    from typing import NamedTuple

    class TopicPartition(NamedTuple):
        topic: str
        partition: int

    class OffsetAndMetadata(NamedTuple):
        offset: int
        metadata: str
        leader_epoch: int

    class ConsumerRebalanceListener(ABC):
        @abstractmethod
        def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None: ...

        @abstractmethod
        def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None: ...

        def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
            self.on_partitions_revoked(lost)  # kafka-python's default

else:
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.structs import OffsetAndMetadata, TopicPartition

__all__ = [
    "AdminClient",
    "CommitCallback",
    "Consumer",
    "ConsumerRebalanceListener",
    "ConsumerRecord",
    "CreateTopicsResult",
    "CreatedTopic",
    "OffsetAndMetadata",
    "Producer",
    "SendFuture",
    "TopicPartition",
]

_Arg = TypeVar("_Arg")


class ConsumerRecord(Protocol):
    """A polled record (kafka-python's ConsumerRecord namedtuple); key and value as bytes (no deserializers)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...  # epoch milliseconds; None in the oldest message format
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...  # None: a tombstone
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...  # empty when the record has none


# What commit_async calls back with: the offsets asked for, and the response or the exception.
CommitCallback = Callable[[Mapping[TopicPartition, OffsetAndMetadata], object], None]


class Consumer(Protocol):
    """kafka.KafkaConsumer."""

    def subscribe(self, topics: Sequence[str], *, listener: ConsumerRebalanceListener) -> None: ...
    def topics(self) -> set[str]: ...
    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[ConsumerRecord]]: ...
    def assignment(self) -> set[TopicPartition]: ...
    def partitions_for_topic(self, topic: str) -> set[int]: ...  # empty if the topic is not known
    def position(self, partition: TopicPartition) -> int | None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...  # None before the partition's first fetch
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_ms: int | None = None
    ) -> dict[TopicPartition, int]: ...
    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None: ...
    def commit_async(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], callback: CommitCallback) -> object: ...
    def close(self, autocommit: bool = True) -> None: ...


class SendFuture(Protocol):
    """What KafkaProducer.send returns (kafka-python's FutureRecordMetadata)."""

    def add_errback(self, errback: Callable[[_Arg, BaseException], object], arg: _Arg, /) -> SendFuture:
        """Call `errback(arg, exception)` if the send fails."""
        ...


class Producer(Protocol):
    """kafka.KafkaProducer."""

    def send(
        self, topic: str, *, value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> SendFuture: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


class CreatedTopic(TypedDict):
    """One topic of a CreateTopics response (KafkaAdminClient.create_topics returns the response as dicts)."""

    name: str
    error_code: int
    error_message: str | None


class CreateTopicsResult(TypedDict):
    topics: list[CreatedTopic]


class AdminClient(Protocol):
    """kafka.KafkaAdminClient."""

    def list_topics(self) -> list[str]: ...
    def create_topics(
        self, new_topics: Mapping[str, Mapping[str, int]], *, timeout_ms: int, raise_errors: bool
    ) -> CreateTopicsResult: ...
    def wait_for_topics(self, topic_names: Sequence[str], *, timeout_ms: int) -> None: ...
    def close(self) -> None: ...
