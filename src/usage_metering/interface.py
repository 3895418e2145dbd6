"""The one interface of the library: what `Metering` (in-process) and `MeteringClient` (over HTTP) both offer.

Code written against `MeteringApi` (the CLI, scripts, tests) runs the same on a DuckDB file, a lake or a
running node. tests/test_interface.py fails when a method, a parameter or a return type of either
drifts from this definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from .reports.pricing import Invoice
from .reports.quota import QuotaStatus
from .reports.top_users import TopUsers
from .reports.usage import TenantUsage, UsageSummary
from .schemas import EventResult, MetricDefinition, Plan, Tenant, UsageEvent
from .store.alerts import Alert
from .store.dead_letters import StoredDeadLetter
from .store.keys import ApiKey


class MeteringApi(Protocol):
    def close(self) -> None: ...

    # -- recording

    def record_events(self, items: Sequence[Mapping[str, Any] | UsageEvent]) -> list[EventResult]:
        """One batch; a result per event, in order (rejected events are results, not exceptions)."""
        ...

    def record(self, item: Mapping[str, Any] | UsageEvent) -> EventResult:
        """Record one event; raises ValidationError if it is invalid. A blocked event is a result."""
        ...

    # -- reading

    def tenant(self, tenant_id: str) -> Tenant: ...

    def tenants(self) -> list[Tenant]: ...

    def usage(
        self,
        tenant_id: str,
        metric: str,
        *,
        period: str | None = None,
        start: date | None = None,
        end: date | None = None,
        daily: bool = False,
    ) -> UsageSummary: ...

    def usage_all(
        self, tenant_id: str, *, period: str | None = None, start: date | None = None, end: date | None = None
    ) -> TenantUsage: ...

    def quota(self, tenant_id: str, metric: str) -> QuotaStatus: ...

    def top_users(self, tenant_id: str, metric: str, *, limit: int = 10, period: str | None = None) -> TopUsers: ...

    def billing_report(self, tenant_id: str | None = None, period: str | None = None) -> list[Invoice]: ...

    def dead_letters(self, limit: int = 100) -> list[StoredDeadLetter]: ...

    def alerts(self, tenant_id: str | None = None, status: str | None = None, limit: int = 1000) -> list[Alert]: ...

    # -- configuration

    def save_plan(self, plan: Plan | Mapping[str, Any]) -> Plan: ...

    def plans(self) -> list[Plan]: ...

    def plan(self, plan_id: str, version: int | None = None) -> Plan: ...

    def save_tenant(self, tenant: Tenant | Mapping[str, Any]) -> Tenant: ...

    def define_metric(self, metric: MetricDefinition | Mapping[str, Any]) -> MetricDefinition: ...

    def metrics(self) -> list[MetricDefinition]: ...

    # -- API keys

    def create_api_key(self, name: str, scope: str, tenant_id: str | None = None) -> tuple[ApiKey, str]:
        """The new key and its token (shown once; only its hash is stored)."""
        ...

    def list_api_keys(self) -> list[ApiKey]: ...

    def revoke_api_key(self, key_id: str) -> ApiKey: ...


if TYPE_CHECKING:  # mypy (make lint) checks both implementations against the protocol
    from .client import MeteringClient
    from .metering import Metering

    def _implementations(in_process: Metering, over_http: MeteringClient) -> tuple[MeteringApi, MeteringApi]:
        return in_process, over_http
