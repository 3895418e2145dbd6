"""The library: everything the HTTP API and the CLI do, in one object.

from usage_metering import Metering
with Metering.open("data/metering.duckdb") as metering:
    metering.record({"tenant_id": "acme", "metric": "api_calls", "quantity": 1})
    print(metering.quota("acme", "api_calls").to_json_dict())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .access import KeyRing, Principal
from .hooks import EventPublisher, NodeHooks
from .ingest import Ingestor
from .reports.billing import billing_report
from .reports.pricing import Invoice
from .reports.quota import QuotaStatus, quota_status
from .reports.top_users import TopUsers, top_users
from .reports.usage import TenantUsage, UsageSummary, date_range_period, summarize_metric, summarize_tenant
from .schemas import (
    DEFAULT_LATE_WINDOW,
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
from .store import DEFAULT_DB_PATH, DEFAULT_MEMORY_LIMIT, Database, Lake
from .store import catalog as catalog_store
from .store.alerts import ALERT_STATUSES, Alert, list_alerts
from .store.dead_letters import StoredDeadLetter, list_dead_letters
from .store.export import EventFilter
from .store.export import export_events as export_event_rows
from .store.keys import ApiKey
from .store.lake_maintenance import DEFAULT_KEEP_SNAPSHOTS, MaintenanceReport, maintain_lake
from .store.snapshot import SnapshotInfo, default_snapshot_path, write_snapshot


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
        if ingest and not database.read_only:  # a read-only file (e.g. a snapshot) is only read: no writer thread
            self.ingestor.start()
        self.access = KeyRing(database, clock=self.clock)  # API keys; see access.py
        # What a running node drives (hooks.py): async submits, observers, ownership, alert delivery.
        self.node = NodeHooks(
            database, self.ingestor, self.access, clock=self.clock, late_window=late_window, publisher=publisher
        )

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
        self.node.close()
        self.ingestor.stop()
        self.database.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self.database.path

    def __enter__(self) -> Metering:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- recording -----------------------------------------------------------

    def validate(self, data: Mapping[str, Any]) -> UsageEvent:
        return parse_event(data, now=self.clock(), late_window=self.late_window)

    def record_events(self, items: Sequence[Mapping[str, Any] | UsageEvent]) -> list[EventResult]:
        """One batch; a result per event, in order (rejected events are results, not exceptions)."""
        return self.node.submit_events(items).result()

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
            and self.node.config_refresh.running
            and catalog_store.tenant_stored(self.database.cursor(), tenant_id)
        ):
            self.node.refresh_config()  # on a lake, another node registered it since this one last looked
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
        if self.node.owns_partition_of(tenant_id) is False:
            period, state = self.ingestor.stored_usage(tenant_id, metric, now)
        else:
            period, state = self.ingestor.current_state(tenant_id, metric, now)
        entitlement = Entitlement.of(catalog.plan_for(tenant_id), metric)
        status = quota_status(tenant_id, metric, entitlement, catalog.aggregation(metric), period, state, now)
        if self.node.observer is not None:
            self.node.observer.on_quota_check(status.allowed)
        return status

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
        """Seal every day due now and fold every rollup delta (the node's background pass seals a few days at
        a time and folds recent hours; ingest/compactor.py); returns the days sealed. A lake is neither compacted nor
        sealed (its readers fold delta rows)."""
        if self.database.lake is not None:
            return 0
        compactor = self.ingestor.compactor
        sealed = compactor.seal_due_days()
        compactor.compact(seal_limit=0, everything=True)  # every delta: nothing is left to seal
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
