"""The library: everything the HTTP API and the CLI do, in one object.

from usage_metering import Metering
with Metering.open("data/metering.duckdb") as metering:
    metering.record({"tenant_id": "acme", "metric": "api_calls", "quantity": 1})
    print(metering.quota("acme", "api_calls").to_json_dict())
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .access import KeyRing, Principal
from .ingest import Ingestor, IngestOutcome, QuotaExceeded
from .ingest.observer import MeteringObserver
from .kafka.partitions import partition_of
from .reports.billing import billing_report
from .reports.pricing import Invoice
from .reports.quota import QuotaStatus, quota_status
from .reports.top_users import TopUsers, top_users
from .reports.usage import TenantUsage, UsageSummary, date_range_period, summarize_metric, summarize_tenant
from .schemas import (
    DEFAULT_LATE_WINDOW,
    ErrorDetail,
    EventResult,
    EventStatus,
    MetricDefinition,
    NotFoundError,
    Period,
    Plan,
    Tenant,
    UsageEvent,
    ValidationError,
    check_id,
    parse_event,
    parse_metric_definition,
    parse_period_label,
    parse_plan,
    parse_tenant,
    period_containing,
)
from .schemas.entitlement import Entitlement
from .schemas.event_json import decode_valid_events_json, parse_events
from .store import DEFAULT_DB_PATH, DEFAULT_MEMORY_LIMIT, Database, Lake
from .store import catalog as catalog_store
from .store.alerts import ALERT_STATUSES, Alert, due_alerts, list_alerts, mark_delivered, mark_failed
from .store.dead_letters import DeadLetter, StoredDeadLetter, list_dead_letters
from .store.export import EventFilter
from .store.export import export_events as export_event_rows
from .store.keys import ApiKey
from .store.lake_maintenance import DEFAULT_KEEP_SNAPSHOTS, MaintenanceReport, maintain_lake
from .store.owners import load_owners
from .store.snapshot import SnapshotInfo, default_snapshot_path, write_snapshot
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


def _blocked_detail(quota: QuotaExceeded) -> ErrorDetail:
    return ErrorDetail.quota_exceeded(quota.metric, quota.limit, quota.used, quota.period)


def _result_from_outcome(index: int, outcome: IngestOutcome) -> EventResult:
    if outcome.status == EventStatus.BLOCKED and outcome.quota is not None:
        return EventResult(index, outcome.event_id, outcome.status, _blocked_detail(outcome.quota))
    return EventResult(index, outcome.event_id, outcome.status)


class Metering:
    def __init__(
        self,
        database: Database,
        *,
        publisher: EventPublisher | None = None,
        late_window: timedelta = DEFAULT_LATE_WINDOW,
        clock: Callable[[], datetime] | None = None,
        ingest: bool = True,
    ) -> None:
        """`publisher` (Kafka mode): valid events go there instead of being ingested here.

        `ingest=False`: no writer thread (recording events fails), configuration changes still work:
        a command-line process changing a lake's plans or keys beside the nodes that ingest it.
        """
        self.database = database
        self.late_window = late_window
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.ingestor = Ingestor(database, clock=self.clock)
        self.publisher = publisher
        if ingest and not database.read_only:  # a read-only file (e.g. a snapshot) is only read: no writer thread
            self.ingestor.start()
        self.access = KeyRing(database, clock=self.clock)  # API keys; see access.py
        self.observer: MeteringObserver | None = None
        self._consumer: KafkaIngestConsumer | None = None
        self._owners: dict[int, str | None] = {}  # partition -> owning node's URL, read from the lake
        self._owners_read_at = float("-inf")
        # On a lake other nodes change plans, tenants, metrics and keys: in force here within this interval.
        self._config_refresh = PeriodicTask("config-refresh", CONFIG_REFRESH_SECONDS, self.refresh_config)
        if database.lake is not None and not database.read_only:
            self._config_refresh.start()

    def refresh_config(self) -> None:
        """Adopt the plans, tenants, metrics and API keys stored now (what other nodes of a cluster changed)."""
        self.ingestor.refresh_catalog()
        self.access.refresh()

    def observe(self, observer: MeteringObserver | None) -> None:
        """Report ingest batches, rejections and quota checks to `observer` (None stops it)."""
        self.observer = observer
        self.ingestor.observer = observer

    @classmethod
    def open(
        cls,
        path: str | Path = DEFAULT_DB_PATH,
        *,
        read_only: bool = False,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        lake: Lake | None = None,
        **options: Any,
    ) -> Metering:
        """Open the file; read_only (a snapshot, or the main file of a stopped node) runs no migrations and no writer.

        `memory_limit` caps DuckDB's buffer pool (DuckDB's syntax, e.g. "512MB", "4GB").
        With `lake`, the store is that DuckLake and `path` is where this node keeps its local files.
        """
        return cls(Database(path, read_only=read_only, memory_limit=memory_limit, lake=lake), **options)

    def close(self) -> None:
        self._config_refresh.stop()
        self.ingestor.stop()
        self.database.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self.database.path

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

    def __enter__(self) -> Metering:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- recording -----------------------------------------------------------

    def validate(self, data: Mapping[str, Any]) -> UsageEvent:
        return parse_event(data, now=self.clock(), late_window=self.late_window)

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

        def finish(inner: Future[list[IngestOutcome]]) -> None:
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

        self.ingestor.submit(events, dead_letters=letters).add_done_callback(finish)
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
                results[position] = EventResult(
                    position, event.event_id, EventStatus.BLOCKED, _blocked_detail(exceeded)
                )
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

    def record_events(
        self,
        items: Sequence[Mapping[str, Any] | UsageEvent],
        *,
        dead_letter_for: Callable[[int, ValidationError], DeadLetter] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> list[EventResult]:
        return self.submit_events(items, dead_letter_for=dead_letter_for, dead_letters=dead_letters).result()

    def record(self, item: Mapping[str, Any] | UsageEvent) -> EventResult:
        """Record one event; raises ValidationError if it is invalid."""
        result = self.record_events([item])[0]
        if result.status == EventStatus.REJECTED and result.error is not None:
            raise result.error.exception()
        return result

    # -- reading ---------------------------------------------------------------

    def tenant(self, tenant_id: str) -> Tenant:
        tenant = self.ingestor.catalog.tenants.get(tenant_id)
        if (
            tenant is None
            and self._config_refresh.running
            and catalog_store.tenant_stored(self.database.cursor(), tenant_id)
        ):
            self.refresh_config()  # on a lake, another node registered it since this one last looked
            tenant = self.ingestor.catalog.tenants.get(tenant_id)
        if tenant is None:
            raise NotFoundError("tenant", tenant_id)
        return tenant

    def resolve_period(
        self,
        tenant_id: str,
        period: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> Period:
        """The window a report covers: dates [start, end], period YYYY-MM, or the current period."""
        tenant = self.tenant(tenant_id)
        if start is not None or end is not None:
            if start is None or end is None:
                raise ValidationError("from" if start is None else "to", "both from and to are needed", "invalid_range")
            if end < start:
                raise ValidationError("to", "must not be before from", "invalid_range")
            if end == date.max:  # the range ends (exclusive) the next day, which is no date
                raise ValidationError("to", "must be before 9999-12-31", "invalid_range")
            return date_range_period(start, end)
        if period is not None:
            return parse_period_label("period", period, tenant.billing_anchor_day)
        return period_containing(self.clock(), tenant.billing_anchor_day)

    def usage(
        self,
        tenant_id: str,
        metric: str,
        *,
        period: str | None = None,
        start: date | None = None,
        end: date | None = None,
        daily: bool = False,
    ) -> UsageSummary:
        """A metric's usage in the current period, period `YYYY-MM`, or dates [start, end]."""
        check_id("metric", metric)
        window = self.resolve_period(tenant_id, period, start, end)
        aggregation = self.ingestor.catalog.aggregation(metric)
        return summarize_metric(self.database.cursor(), tenant_id, metric, aggregation, window, daily=daily)

    def usage_all(
        self, tenant_id: str, *, period: str | None = None, start: date | None = None, end: date | None = None
    ) -> TenantUsage:
        window = self.resolve_period(tenant_id, period, start, end)
        catalog = self.ingestor.catalog
        aggregation_of = {name: m.aggregation for name, m in catalog.metrics.items()}
        return summarize_tenant(self.database.cursor(), tenant_id, aggregation_of, window)

    def quota(self, tenant_id: str, metric: str) -> QuotaStatus:
        """Served from the ingestor's in-memory counters: no query per request. In a cluster, for a
        tenant whose partition another node owns, from the lake instead (see `quota_owner`)."""
        self.tenant(tenant_id)
        check_id("metric", metric)
        now = self.clock()
        catalog = self.ingestor.catalog
        if self.owns_partition_of(tenant_id) is False:
            period, state = self.ingestor.stored_usage(tenant_id, metric, now)
        else:
            period, state = self.ingestor.current_state(tenant_id, metric, now)
        entitlement = Entitlement.of(catalog.plan_for(tenant_id), metric)
        status = quota_status(tenant_id, metric, entitlement, catalog.aggregation(metric), period, state, now)
        if self.observer is not None:
            self.observer.on_quota_check(status.allowed)
        return status

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
        """Whether this node's consumer owns the tenant's partition; None when that does not apply
        (not a lake, no consumer here, or no assignment yet)."""
        partition = self._partition_of(tenant_id)
        if partition is None or self._consumer is None:
            return None
        return partition in self._consumer.assigned_partitions()

    def _partition_of(self, tenant_id: str) -> int | None:
        """The tenant's Kafka partition, on a lake node with a consumer that has had an assignment."""
        consumer = self._consumer
        count = consumer.partition_count() if consumer is not None and self.database.lake is not None else None
        return None if count is None else partition_of(tenant_id, count)

    def top_users(self, tenant_id: str, metric: str, *, limit: int = 10, period: str | None = None) -> TopUsers:
        check_id("metric", metric)
        if not 1 <= limit <= 1000:
            raise ValidationError("limit", "must be between 1 and 1000", "invalid_limit")
        window = self.resolve_period(tenant_id, period)
        aggregation = self.ingestor.catalog.aggregation(metric)
        return top_users(self.database.cursor(), tenant_id, metric, aggregation, window, limit)

    def billing_report(self, tenant_id: str | None = None, period: str | None = None) -> list[Invoice]:
        """Invoices for one tenant or all tenants, for period `YYYY-MM` or the current one."""
        if period is not None:
            parse_period_label("period", period)
        catalog = self.ingestor.catalog
        tenants = [self.tenant(tenant_id)] if tenant_id is not None else list(catalog.tenants.values())
        return billing_report(self.database.cursor(), catalog, tenants, period_label=period, now=self.clock())

    def dead_letters(self, limit: int = 100) -> list[StoredDeadLetter]:
        return list_dead_letters(self.database.cursor(), limit)

    # -- analysts: snapshot and export (SQL in store/snapshot.py and store/export.py) --------

    def compact_rollups(self) -> int:
        """Fold the rollup deltas and seal every day due now, as the node's background pass does a few
        days at a time (ingest/compactor.py); returns the days sealed. A lake is neither compacted nor
        sealed (its readers fold delta rows)."""
        if self.database.lake is not None:
            return 0
        compactor = self.ingestor.compactor
        sealed = compactor.seal_due_days()
        compactor.compact(seal_limit=0)  # fold the deltas: nothing is left to seal
        return sealed

    def maintain_lake(self, keep_snapshots: timedelta = DEFAULT_KEEP_SNAPSHOTS) -> MaintenanceReport:
        """One maintenance pass over the lake this node writes (store/lake_maintenance.py); safe while ingesting."""
        if self.database.lake is None:
            raise ValidationError("lake", "maintenance is for a lake (--lake); a DuckDB file needs none", "not_a_lake")
        return maintain_lake(self.database.cursor(), keep_snapshots)

    @staticmethod
    def maintain(lake: Lake, keep_snapshots: timedelta = DEFAULT_KEEP_SNAPSHOTS) -> MaintenanceReport:
        """One maintenance pass over `lake` without running a node (from cron, or any machine that reaches it)."""
        database = Database(DEFAULT_DB_PATH, lake=lake)
        try:
            return maintain_lake(database.cursor(), keep_snapshots)
        finally:
            database.close()

    def snapshot_path(self) -> Path:
        """Where snapshots go by default: `<db stem>.snapshot.duckdb` next to the database."""
        return default_snapshot_path(self.database.path)

    def snapshot(self, path: str | Path | None = None) -> SnapshotInfo:
        """Publish a consistent read-only copy of the database, atomically replacing `path`.

        One transaction reads every table as of the same commit; ingestion goes on meanwhile.
        """
        return write_snapshot(self.database.cursor(), path if path is not None else self.snapshot_path())

    def export_events(
        self,
        path: str | Path,
        fmt: str,
        *,
        start: date | None = None,
        end: date | None = None,
        tenant_id: str | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> int:
        """Write events with UTC day in [start, end] (and of one tenant) as parquet, csv or jsonl; returns rows."""
        if start is not None and end is not None and end < start:
            raise ValidationError("to", "must not be before from", "invalid_range")
        if tenant_id is not None:
            check_id("tenant_id", tenant_id)
        selection = EventFilter(start, end, tenant_id)
        return export_event_rows(self.database.cursor(), path, fmt, selection, on_progress)

    def alerts(self, tenant_id: str | None = None, status: str | None = None, limit: int = 1000) -> list[Alert]:
        """Quota alerts (crossed thresholds), newest first; `status` is pending or delivered."""
        check_id("tenant_id", tenant_id, required=False)
        if status is not None and status not in ALERT_STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(ALERT_STATUSES)}", "invalid_status")
        return list_alerts(self.database.cursor(), tenant_id, status, limit)

    def due_alerts(self, default_url: str | None) -> list[tuple[Alert, str]]:
        """Pending alerts whose next delivery attempt is due, each with the URL to POST it to."""
        return due_alerts(self.database.cursor(), self.clock(), default_url)

    def mark_alert_delivered(self, alert: Alert) -> None:
        now = self.clock()
        self.ingestor.write(lambda cursor: mark_delivered(cursor, alert, now))

    def mark_alert_failed(self, alert: Alert, reason: str, retry_at: datetime) -> None:
        self.ingestor.write(lambda cursor: mark_failed(cursor, alert, reason, retry_at))

    # -- configuration -----------------------------------------------------------

    def save_plan(self, plan: Plan | Mapping[str, Any]) -> Plan:
        """Create a plan, or a new version of it when its definition changed."""
        parsed = plan if isinstance(plan, Plan) else parse_plan(plan)
        return self.ingestor.change_config(lambda cursor: catalog_store.save_plan(cursor, parsed))

    def plans(self) -> list[Plan]:
        return list(self.ingestor.catalog.plans.values())

    def plan(self, plan_id: str, version: int | None = None) -> Plan:
        plan = catalog_store.load_plan(self.database.cursor(), plan_id, version)
        if plan is None:
            raise NotFoundError("plan", plan_id if version is None else f"{plan_id} v{version}")
        return plan

    def save_tenant(self, tenant: Tenant | Mapping[str, Any]) -> Tenant:
        """Create or update a tenant: its name, plan and billing anchor day."""
        parsed = tenant if isinstance(tenant, Tenant) else parse_tenant(tenant)
        if parsed.plan_id is not None and parsed.plan_id not in self.ingestor.catalog.plans:
            raise NotFoundError("plan", parsed.plan_id)
        self.ingestor.change_config(lambda cursor: catalog_store.save_tenant(cursor, parsed))
        return parsed

    def tenants(self) -> list[Tenant]:
        return list(self.ingestor.catalog.tenants.values())

    def define_metric(self, metric: MetricDefinition | Mapping[str, Any]) -> MetricDefinition:
        parsed = metric if isinstance(metric, MetricDefinition) else parse_metric_definition(metric)
        self.ingestor.change_config(lambda cursor: catalog_store.upsert_metric(cursor, parsed))
        return parsed

    def metrics(self) -> list[MetricDefinition]:
        return list(self.ingestor.catalog.metrics.values())

    # -- access control (API keys; the logic is in access.py) ------------------------

    def create_api_key(self, name: str, scope: str, tenant_id: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its token; the token is shown only now (only its hash is stored)."""
        return self.access.create(name, scope, tenant_id)

    def list_api_keys(self) -> list[ApiKey]:
        return self.access.all_keys()

    def revoke_api_key(self, key_id: str) -> ApiKey:
        revoked = self.access.revoke(key_id)
        if revoked is None:
            raise NotFoundError("key", key_id)
        return revoked

    def authenticate(self, token: str) -> Principal | None:
        return self.access.authenticate(token)
