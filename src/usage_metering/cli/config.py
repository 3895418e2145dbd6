"""Configuration: plans, tenants and metric definitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

import click

from usage_metering.schemas import Aggregation, NotFoundError

from .common import load_json, open_metering
from .output import METRIC_COLUMNS, PLAN_COLUMNS, TENANT_COLUMNS, as_json, emit, emit_plan


@click.group()
def plans() -> None:
    """Plans: price lists with quotas; every change makes a new version."""


@plans.command("list")
@click.pass_context
def plans_list(ctx: click.Context) -> None:
    """The current version of every plan."""
    with open_metering(ctx) as metering:
        items = as_json(metering.plans())
    rows = [{**p, "metrics": ",".join(m["metric"] for m in p.get("metrics", []))} for p in items]
    emit(items, rows, PLAN_COLUMNS)


@plans.command("show")
@click.argument("plan_id")
@click.option("--version", type=click.IntRange(min=1), help="An older version (default: the newest).")
@click.pass_context
def plans_show(ctx: click.Context, plan_id: str, version: int | None) -> None:
    """One plan with its metrics, quotas and prices."""
    with open_metering(ctx) as metering:
        plan = as_json(metering.plan(plan_id, version))
    emit_plan(plan)


@plans.command("set")
@click.argument("plan_file", metavar="FILE.json", type=click.File("r", encoding="utf-8"))
@click.pass_context
def plans_set(ctx: click.Context, plan_file: IO[str]) -> None:
    """Create a plan from a JSON file ('-' = stdin), or a new version if it changed."""
    data = load_json(plan_file.read(), getattr(plan_file, "name", "the plan file"))
    with open_metering(ctx, writes="config") as metering:
        plan = as_json(metering.save_plan(data))
    emit_plan(plan)


def with_changes(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with the options the user gave (None = not given, keep the current value)."""
    return {**current, **{key: value for key, value in changes.items() if value is not None}}


@click.group()
def tenants() -> None:
    """Tenants: the customers, each on a plan with a billing anchor day."""


@tenants.command("list")
@click.pass_context
def tenants_list(ctx: click.Context) -> None:
    """Every tenant."""
    with open_metering(ctx) as metering:
        items = as_json(metering.tenants())
    emit(items, items, TENANT_COLUMNS)


@tenants.command("show")
@click.argument("tenant_id", metavar="ID")
@click.pass_context
def tenants_show(ctx: click.Context, tenant_id: str) -> None:
    """One tenant."""
    with open_metering(ctx) as metering:
        tenant = as_json(metering.tenant(tenant_id))
    emit(tenant, [tenant], TENANT_COLUMNS)


@tenants.command("set")
@click.argument("tenant_id", metavar="ID")
@click.option("--name", help="Display name.")
@click.option("--plan", "plan_id", metavar="PLAN_ID", help="The plan the tenant is billed on.")
@click.option("--anchor-day", type=int, help="Day of month (1-31) billing periods start.")
@click.option("--webhook-url", metavar="URL", help="Where this tenant's quota alerts are POSTed ('' = none).")
@click.pass_context
def tenants_set(
    ctx: click.Context,
    tenant_id: str,
    name: str | None,
    plan_id: str | None,
    anchor_day: int | None,
    webhook_url: str | None = None,
) -> None:
    """Create a tenant, or change the given fields of an existing one."""
    changes = {"name": name, "plan_id": plan_id, "billing_anchor_day": anchor_day, "webhook_url": webhook_url}
    with open_metering(ctx, writes="config") as metering:
        try:
            current = as_json(metering.tenant(tenant_id))
        except NotFoundError:
            current = {"tenant_id": tenant_id}
        tenant = as_json(metering.save_tenant(with_changes(current, changes)))
    emit(tenant, [tenant], TENANT_COLUMNS)


@click.group()
def metrics() -> None:
    """Metric definitions: how each metric's events aggregate."""


@metrics.command("list")
@click.pass_context
def metrics_list(ctx: click.Context) -> None:
    """Every defined metric (undefined metrics aggregate with SUM)."""
    with open_metering(ctx) as metering:
        items = as_json(metering.metrics())
    emit(items, items, METRIC_COLUMNS)


@metrics.command("define")
@click.argument("name")
@click.option(
    "--aggregation",
    type=click.Choice([a.value for a in Aggregation], case_sensitive=False),
    help="How events aggregate (new metrics default to SUM).",
)
@click.option("--unit", help="Unit shown in reports, e.g. calls or GB.")
@click.option("--description", help="What the metric measures.")
@click.pass_context
def metrics_define(
    ctx: click.Context, name: str, aggregation: str | None, unit: str | None, description: str | None
) -> None:
    """Define a metric, or change the given fields of an existing one."""
    changes = {"aggregation": aggregation.upper() if aggregation else None, "unit": unit, "description": description}
    with open_metering(ctx, writes="config") as metering:
        current = next((as_json(m) for m in metering.metrics() if m.name == name), {"name": name})
        metric = as_json(metering.define_metric(with_changes(current, changes)))
    emit(metric, [metric], METRIC_COLUMNS)
