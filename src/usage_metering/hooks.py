"""The node face of the library: what a running node drives beside the calls users make.

`Metering` is what users call; `metering.node` is this object: events submitted without waiting
(the HTTP loop), observers (Prometheus), the Kafka consumer and partition ownership in a cluster,
configuration other nodes changed, and quota alert delivery.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .access import KeyRing
from .ingest import Ingestor, IngestOutcome, QuotaExceeded
from .ingest.observer import MeteringObserver
from .kafka.partitions import partition_of
from .schemas import ErrorDetail, EventResult, EventStatus, UsageEvent, ValidationError
from .schemas.event_json import decode_valid_events_json, parse_events
from .store import Database
from .store.alerts import Alert, due_alerts, mark_delivered, mark_failed
from .store.dead_letters import DeadLetter
from .store.owners import load_owners
from .utilities import PeriodicTask

if TYPE_CHECKING:  # kafka-python loads only when a node runs in Kafka mode
    from .kafka.consumer import KafkaIngestConsumer

CONFIG_REFRESH_SECONDS = 5.0
_OWNERS_CACHE_SECONDS = 1.0


class EventPublisher(Protocol):
    """Where a front end sends validated events instead of ingesting them (Kafka mode)."""

    def publish(self, events: Sequence[UsageEvent]) -> Future[None]:
        """Resolves once every event is durably accepted, or fails."""
        ...


def blocked_detail(quota: QuotaExceeded) -> ErrorDetail:
    return ErrorDetail.quota_exceeded(quota.metric, quota.limit, quota.used, quota.period)


def _result_from_outcome(index: int, outcome: IngestOutcome) -> EventResult:
    if outcome.status == EventStatus.BLOCKED and outcome.quota is not None:
        return EventResult(index, outcome.event_id, outcome.status, blocked_detail(outcome.quota))
    return EventResult(index, outcome.event_id, outcome.status)


def _finish_ingested(
    inner: Future[list[IngestOutcome]],
    outer: Future[list[EventResult]],
    positions: list[int],
    results: list[EventResult | None],
) -> None:
    """The ingestor's outcomes as the caller's results, in the caller's positions."""
    error = inner.exception()
    if error is not None:
        outer.set_exception(error)
        return
    outcomes = inner.result()
    if len(outcomes) == len(results):  # nothing rejected: positions are 0, 1, ...
        outer.set_result(
            [  # the common outcome built inline: a call per event is a fifth of the cost
                EventResult(position, outcome.event_id, outcome.status)
                if outcome.quota is None
                else _result_from_outcome(position, outcome)
                for position, outcome in enumerate(outcomes)
            ]
        )
        return
    for position, outcome in zip(positions, outcomes):
        results[position] = _result_from_outcome(position, outcome)
    outer.set_result([r for r in results if r is not None])


class NodeHooks:
    def __init__(
        self,
        database: Database,
        ingestor: Ingestor,
        access: KeyRing,
        *,
        clock: Callable[[], datetime],
        late_window: timedelta,
        publisher: EventPublisher | None,
    ) -> None:
        """`publisher` (Kafka mode): valid events go there instead of being ingested here."""
        self.database = database
        self.ingestor = ingestor
        self.access = access
        self.clock = clock
        self.late_window = late_window
        self.publisher = publisher
        self.observer: MeteringObserver | None = None
        self._consumer: KafkaIngestConsumer | None = None
        self._owners: dict[int, str | None] = {}  # partition -> owning node's URL, read from the lake
        self._owners_read_at = float("-inf")
        # On a lake other nodes change plans, tenants, metrics and keys: in force here within this interval.
        self.config_refresh = PeriodicTask("config-refresh", CONFIG_REFRESH_SECONDS, self.refresh_config)
        if database.lake is not None and not database.read_only:
            self.config_refresh.start()

    def close(self) -> None:
        self.config_refresh.stop()

    # -- configuration other nodes changed, observers ---------------------------------

    def refresh_config(self) -> None:
        """Adopt the plans, tenants, metrics and API keys stored now (what other nodes of a cluster changed)."""
        self.ingestor.refresh_catalog()
        self.access.refresh()

    def observe(self, observer: MeteringObserver | None) -> None:
        """Report ingest batches, rejections and quota checks to `observer` (None stops it)."""
        self.observer = observer
        self.ingestor.observer = observer

    # -- the writer ----------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        """True while the writer runs: quota counters are loaded and events are accepted."""
        return self.ingestor.running

    @property
    def last_commit_at(self) -> datetime | None:
        """When this process last committed ingested events (None: not yet)."""
        return self.ingestor.last_commit_at

    def kafka_consumer(self, bootstrap_servers: str | list[str], **options: Any) -> KafkaIngestConsumer:
        """A consumer-group member that ingests a Kafka topic through this library's writer.

        `options` are `KafkaIngestConsumer`'s (topic, group_id, dead_letter_topic, ...).
        Sharing the writer keeps one set of quota counters for HTTP and Kafka alike.
        """
        from .kafka.consumer import KafkaIngestConsumer

        consumer = KafkaIngestConsumer(
            bootstrap_servers, self.database, ingestor=self.ingestor, late_window=self.late_window, **options
        )
        self._consumer = consumer  # on a lake, which tenants this node owns follows its assignment
        return consumer

    # -- events, submitted without waiting ---------------------------------------------

    def validate_events_json(self, body: bytes) -> list[UsageEvent] | None:
        """An HTTP batch body (`{"events": [...]}` or a list) as events when every one is valid, else None:
        then decode it as JSON and pass the items to `submit_events`, which says what is wrong with each."""
        return decode_valid_events_json(body, now=self.clock(), late_window=self.late_window)

    def _validate_all(self, items: Sequence[Mapping[str, Any] | UsageEvent]) -> list[UsageEvent | ValidationError]:
        """Each item validated (a dict) or as it is (already a UsageEvent)."""
        raw = [index for index, item in enumerate(items) if not isinstance(item, UsageEvent)]
        if len(raw) == len(items):  # all dicts, the usual case
            return parse_events(items, now=self.clock(), late_window=self.late_window)
        checked = parse_events([items[index] for index in raw], now=self.clock(), late_window=self.late_window)
        validated: list[UsageEvent | ValidationError] = list(items)  # type: ignore[arg-type]  # dicts replaced below
        for index, result in zip(raw, checked):
            validated[index] = result
        return validated

    def submit_events(
        self,
        items: Sequence[Mapping[str, Any] | UsageEvent],
        *,
        dead_letter_for: Callable[[int, ValidationError], DeadLetter] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> Future[list[EventResult]]:
        """Validate each item, queue the valid ones; the future resolves after the commit.

        Invalid items are `rejected` with their error; they never hold back valid ones.
        With `dead_letter_for(index, error)`, each rejected item is also stored as the
        dead letter it returns; those and `dead_letters` commit with the events.
        """
        letters = list(dead_letters)
        results: list[EventResult | None] = [None] * len(items)
        events: list[UsageEvent] = []
        positions: list[int] = []
        for index, event in enumerate(self._validate_all(items)):
            if isinstance(event, ValidationError):
                error = event
                results[index] = EventResult(index, None, EventStatus.REJECTED, ErrorDetail.of(error))
                if dead_letter_for is not None:
                    letters.append(dead_letter_for(index, error))
                if self.observer is not None:
                    self.observer.on_rejected(error.code)
                continue
            events.append(event)
            positions.append(index)
        if self.publisher is not None:
            return self._publish(events, positions, results, letters)
        outer: Future[list[EventResult]] = Future()
        if not events and not letters:
            outer.set_result([r for r in results if r is not None])
            return outer
        submitted = self.ingestor.submit(events, dead_letters=letters)
        submitted.add_done_callback(lambda inner: _finish_ingested(inner, outer, positions, results))
        return outer

    def _publish(
        self,
        events: list[UsageEvent],
        positions: list[int],
        results: list[EventResult | None],
        letters: list[DeadLetter],
    ) -> Future[list[EventResult]]:
        """Kafka mode: answer 429 early from committed usage, publish the rest.

        The consumer's ingest still makes the exact quota decision (a blocked
        event then becomes a dead letter); this check only spares the broker.
        """
        assert self.publisher is not None
        if letters:
            self.ingestor.submit([], dead_letters=letters)
        to_send: list[tuple[int, UsageEvent]] = []
        for position, event in zip(positions, events):
            exceeded = self.ingestor.check_quota(event)
            if exceeded is not None:
                results[position] = EventResult(position, event.event_id, EventStatus.BLOCKED, blocked_detail(exceeded))
            else:
                to_send.append((position, event))
        outer: Future[list[EventResult]] = Future()

        def finish(published: Future[None]) -> None:
            error = published.exception()
            if error is not None:
                outer.set_exception(error)
                return
            for position, event in to_send:
                results[position] = EventResult(position, event.event_id, EventStatus.ACCEPTED)
            outer.set_result([r for r in results if r is not None])

        self.publisher.publish([event for _position, event in to_send]).add_done_callback(finish)
        return outer

    # -- partition ownership in a cluster ---------------------------------------------

    def quota_owner(self, tenant_id: str) -> str | None:
        """In a cluster: the URL of the node that owns this tenant's Kafka partition, when that is another
        node answering HTTP (ask it: its counters are exact and current). None: answer here."""
        partition = self._partition_of(tenant_id)
        consumer = self._consumer
        if partition is None or consumer is None or partition in consumer.assigned_partitions():
            return None
        now = time.monotonic()
        if now - self._owners_read_at > _OWNERS_CACHE_SECONDS:
            self._owners = load_owners(self.database.cursor(), consumer.topic)
            self._owners_read_at = now
        url = self._owners.get(partition)
        return url if url and url != consumer.node_url else None

    def owns_partition_of(self, tenant_id: str) -> bool | None:
        """Whether this node's consumer owns the tenant's partition; None when that does not apply (not a
        lake, or no consumer here). Before its first assignment a lake node owns nothing: its counters
        follow no tenant, so it must not answer from them (it reads the lake)."""
        if self._consumer is None or self.database.lake is None:
            return None
        partition = self._partition_of(tenant_id)
        return partition is not None and partition in self._consumer.assigned_partitions()

    def _partition_of(self, tenant_id: str) -> int | None:
        """The tenant's Kafka partition, on a lake node with a consumer that has had an assignment."""
        consumer = self._consumer
        count = consumer.partition_count() if consumer is not None and self.database.lake is not None else None
        return None if count is None else partition_of(tenant_id, count)

    # -- quota alert delivery ------------------------------------------------------------

    def due_alerts(self, default_url: str | None) -> list[tuple[Alert, str]]:
        """Pending alerts whose next delivery attempt is due, each with the URL to POST it to."""
        return due_alerts(self.database.cursor(), self.clock(), default_url)

    def mark_alert_delivered(self, alert: Alert) -> None:
        now = self.clock()
        self.ingestor.write(lambda cursor: mark_delivered(cursor, alert, now))

    def mark_alert_failed(self, alert: Alert, reason: str, retry_at: datetime) -> None:
        self.ingestor.write(lambda cursor: mark_failed(cursor, alert, reason, retry_at))
