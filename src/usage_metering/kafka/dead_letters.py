"""Publishing dead letters to the dead-letter topic, after the batch that holds them is committed.

The DuckDB dead_letters table, written in the batch's own transaction, is the
record; the copy on the topic (the dead letter's bytes as the value, the
source record's key, the reason and source position as headers) is for
operators' tools and best effort: a failure to publish is logged and never
stops the consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kafka import KafkaProducer

from usage_metering.store import DeadLetter

from .client_types import Producer

# The consumer's logger, as before this moved out of consumer.py: log filters key on its name.
log = logging.getLogger("usage_metering.kafka.consumer")

_CLOSE_TIMEOUT_SECONDS = 30


def dead_letter_producer(bootstrap_servers: str | list[str], group_id: str) -> Producer:
    """The producer a consumer of `group_id` publishes its dead letters with (acks from every replica)."""
    producer: Producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        client_id=f"usage-metering-dead-letters-{group_id}",
    )
    return producer


class DeadLetterPublisher:
    """Sends a consumer's committed dead letters to a topic; its producer is made at the first dead letter."""

    def __init__(self, bootstrap_servers: str | list[str], group_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self._producer: Producer | None = None

    def publish(self, topic: str, letters: Sequence[DeadLetter], keys: Sequence[bytes | None]) -> None:
        """Send `letters` (with the source records' `keys`, in the same order) to `topic`; "" sends nothing."""
        if not letters or not topic:
            return
        try:
            if self._producer is None:
                self._producer = dead_letter_producer(self.bootstrap_servers, self.group_id)
            producer = self._producer
            for letter, key in zip(letters, keys):
                headers = [
                    ("reason", letter.reason.encode("utf-8")),
                    ("source-topic", (letter.topic or "").encode("utf-8")),
                    ("source-partition", str(letter.partition).encode("ascii")),
                    ("source-offset", str(letter.offset).encode("ascii")),
                ]
                future = producer.send(topic, value=letter.raw, key=key, headers=headers)
                future.add_errback(_log_dead_letter_failure, letter)
        except Exception:  # the DuckDB dead_letters table is the record
            log.exception("could not publish %d dead letters to %s", len(letters), topic)

    def flush(self) -> None:
        """Wait (up to 30 s) until every dead letter sent so far is acknowledged or failed."""
        if self._producer is not None:
            self._producer.flush(timeout=_CLOSE_TIMEOUT_SECONDS)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=_CLOSE_TIMEOUT_SECONDS)
            except Exception:
                log.exception("closing the dead-letter producer failed")


def _log_dead_letter_failure(letter: DeadLetter, error: BaseException) -> None:
    log.error("dead letter %s/%s@%s not published: %r", letter.topic, letter.partition, letter.offset, error)
