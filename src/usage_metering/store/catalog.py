"""Metric definitions, versioned plans and tenants: the node's configuration."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa

from usage_metering.schemas import (
    Aggregation,
    MetricDefinition,
    Plan,
    Tenant,
    parse_plan,
)

from .timeutil import to_naive_utc, utc_now_naive


@dataclass(frozen=True)
class Catalog:
    """A consistent in-memory copy of metrics, current plans and tenants."""

    metrics: dict[str, MetricDefinition] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)  # newest version of each plan
    tenants: dict[str, Tenant] = field(default_factory=dict)

    def aggregation(self, metric: str) -> Aggregation:
        definition = self.metrics.get(metric)
        return definition.aggregation if definition else Aggregation.SUM

    def plan_for(self, tenant_id: str) -> Plan | None:
        tenant = self.tenants.get(tenant_id)
        if tenant is None or tenant.plan_id is None:
            return None
        return self.plans.get(tenant.plan_id)

    def with_new_tenants(self, tenant_ids: list[str]) -> Catalog:
        """This catalog plus tenants first seen in events (no plan, anchor day 1)."""
        tenants = dict(self.tenants)
        for tenant_id in tenant_ids:
            tenants.setdefault(tenant_id, Tenant(tenant_id))
        return Catalog(self.metrics, self.plans, tenants)

    def anchor_day(self, tenant_id: str) -> int:
        tenant = self.tenants.get(tenant_id)
        return tenant.billing_anchor_day if tenant else 1


# -- metrics -----------------------------------------------------------------


def upsert_metric(cursor: duckdb.DuckDBPyConnection, metric: MetricDefinition) -> None:
    cursor.execute("DELETE FROM metrics WHERE name = ?", [metric.name])
    cursor.execute(
        "INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
        [metric.name, metric.aggregation.value, metric.unit, metric.description, utc_now_naive()],
    )


def load_metrics(cursor: duckdb.DuckDBPyConnection) -> dict[str, MetricDefinition]:
    rows = cursor.execute("SELECT name, aggregation, unit, description FROM metrics ORDER BY name").fetchall()
    return {
        name: MetricDefinition(name, Aggregation(aggregation), unit, description)
        for name, aggregation, unit, description in rows
    }


# -- plans -------------------------------------------------------------------


def _plan_definition(plan: Plan) -> str:
    data = plan.to_json_dict()
    data.pop("version")
    return json.dumps(data, separators=(",", ":"))


def save_plan(cursor: duckdb.DuckDBPyConnection, plan: Plan) -> Plan:
    """Store `plan` as a new version, unless it equals the newest version already stored."""
    current = load_plan(cursor, plan.plan_id)
    if current is not None and _plan_definition(current) == _plan_definition(plan):
        return current
    version = (current.version if current else 0) + 1
    cursor.execute(
        "INSERT INTO plans VALUES (?, ?, ?, ?, ?, ?, ?)",
        [plan.plan_id, version, plan.name, plan.currency, plan.base_fee, _plan_definition(plan), utc_now_naive()],
    )
    return _with_version(plan, version)


def _with_version(plan: Plan, version: int) -> Plan:
    return Plan(plan.plan_id, plan.name, plan.currency, plan.base_fee, plan.metrics, version)


def _plan_from_row(definition: str, version: int) -> Plan:
    return _with_version(parse_plan(json.loads(definition)), version)


def load_plan(cursor: duckdb.DuckDBPyConnection, plan_id: str, version: int | None = None) -> Plan | None:
    if version is None:
        row = cursor.execute(
            "SELECT definition, version FROM plans WHERE plan_id = ? ORDER BY version DESC LIMIT 1",
            [plan_id],
        ).fetchall()
    else:
        row = cursor.execute(
            "SELECT definition, version FROM plans WHERE plan_id = ? AND version = ?", [plan_id, version]
        ).fetchall()
    return _plan_from_row(row[0][0], row[0][1]) if row else None


def load_current_plans(cursor: duckdb.DuckDBPyConnection) -> dict[str, Plan]:
    rows = cursor.execute("SELECT plan_id, definition, version FROM current_plans ORDER BY plan_id").fetchall()
    return {plan_id: _plan_from_row(definition, version) for plan_id, definition, version in rows}


# -- tenants -----------------------------------------------------------------


def save_tenant(cursor: duckdb.DuckDBPyConnection, tenant: Tenant) -> None:
    """Update the tenant, or add it (created now) when it is new; no ON CONFLICT, so it runs on a DuckLake."""
    updated = cursor.execute(
        "UPDATE tenants SET name = ?, plan_id = ?, billing_anchor_day = ?, webhook_url = ? WHERE tenant_id = ?",
        [tenant.name, tenant.plan_id, tenant.billing_anchor_day, tenant.webhook_url, tenant.tenant_id],
    ).fetchall()[0][0]
    if updated == 0:
        cursor.execute(
            "INSERT INTO tenants (tenant_id, name, plan_id, billing_anchor_day, created_at, webhook_url) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                tenant.tenant_id,
                tenant.name,
                tenant.plan_id,
                tenant.billing_anchor_day,
                utc_now_naive(),
                tenant.webhook_url,
            ],
        )


def register_tenants(cursor: duckdb.DuckDBPyConnection, tenant_ids: list[str]) -> None:
    """Add tenants first seen in events (no plan, anchor day 1); existing ones are untouched."""
    if not tenant_ids:
        return
    # One columnar insert: executemany costs about a millisecond per row here.
    cursor.register("new_tenants", pa.table({"tenant_id": pa.array(tenant_ids, pa.string())}))
    try:
        cursor.execute(
            "INSERT INTO tenants (tenant_id, name, plan_id, billing_anchor_day, created_at) "
            "SELECT tenant_id, '', NULL, 1, ? FROM new_tenants WHERE tenant_id NOT IN (SELECT tenant_id FROM tenants)",
            [utc_now_naive()],
        )
    finally:
        cursor.unregister("new_tenants")


def tenant_stored(cursor: duckdb.DuckDBPyConnection, tenant_id: str) -> bool:
    return bool(cursor.execute("SELECT count(*) FROM tenants WHERE tenant_id = ?", [tenant_id]).fetchall()[0][0])


def load_tenants(cursor: duckdb.DuckDBPyConnection) -> dict[str, Tenant]:
    rows = cursor.execute(
        "SELECT tenant_id, name, plan_id, billing_anchor_day, webhook_url FROM tenants ORDER BY tenant_id"
    ).fetchall()
    return {row[0]: Tenant(*row) for row in rows}


def load_catalog(cursor: duckdb.DuckDBPyConnection) -> Catalog:
    return Catalog(load_metrics(cursor), load_current_plans(cursor), load_tenants(cursor))


def load_plans_as_of(cursor: duckdb.DuckDBPyConnection, moment: datetime) -> dict[str, Plan]:
    """Per plan, the version in effect at `moment`: the newest created before it (else the first).

    A billing period is priced with the plan as it stood when the period ended.
    """
    rows = cursor.execute(
        """
        SELECT plan_id, definition, version FROM plans
        QUALIFY version = coalesce(
            max(version) FILTER (WHERE created_at < ?) OVER (PARTITION BY plan_id),
            min(version) OVER (PARTITION BY plan_id))
        """,
        [to_naive_utc(moment)],
    ).fetchall()
    return {plan_id: _plan_from_row(definition, version) for plan_id, definition, version in rows}
