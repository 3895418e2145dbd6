"""Billing reports: one invoice per tenant and period, from the rollups in one query."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb

from usage_metering.schemas import Period, Tenant, parse_period_label, period_containing
from usage_metering.store import Catalog
from usage_metering.store.catalog import load_plans_as_of
from usage_metering.store.usage import usage_values_for_windows

from .pricing import Invoice, build_invoice


def tenant_period(tenant: Tenant, period_label: str | None, now: datetime) -> Period:
    """The tenant's period starting in month `period_label` (YYYY-MM), else the current one."""
    if period_label is None:
        return period_containing(now, tenant.billing_anchor_day)
    return parse_period_label("period", period_label, tenant.billing_anchor_day)


def billing_report(
    cursor: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    tenants: Sequence[Tenant],
    *,
    period_label: str | None,
    now: datetime,
) -> list[Invoice]:
    """Invoices for `tenants`, each priced with its plan version in effect at the period end."""
    periods = {t.tenant_id: tenant_period(t, period_label, now) for t in tenants}
    windows = [(tenant_id, p.start, p.end) for tenant_id, p in periods.items()]
    usage = usage_values_for_windows(
        cursor, windows, {metric: catalog.aggregation(metric) for metric in catalog.metrics}
    )
    plans_at_end = {end: load_plans_as_of(cursor, end) for end in {p.end for p in periods.values()}}
    invoices = []
    for tenant in tenants:
        period = periods[tenant.tenant_id]
        plan = plans_at_end[period.end].get(tenant.plan_id) if tenant.plan_id else None
        values = usage.get((tenant.tenant_id, period.start), {})
        invoices.append(build_invoice(tenant.tenant_id, plan, period, values))
    return invoices
