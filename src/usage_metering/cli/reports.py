"""Reports: usage, quota, billing, top users, dead letters and alerts."""

from __future__ import annotations

from datetime import date, datetime

import click

from usage_metering.reports.pricing import CSV_COLUMNS, invoice_csv_rows

from .common import open_metering, output_format, period_option
from .output import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    QUOTA_COLUMNS,
    REPORT_TABLE_COLUMNS,
    TOP_USER_COLUMNS,
    USAGE_COLUMNS,
    as_json,
    emit,
    flat_period,
)


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@click.command()
@click.argument("tenant_id", metavar="TENANT")
@click.argument("metric", required=False)
@period_option
@click.option(
    "--from",
    "start",
    type=click.DateTime(["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="First day, YYYY-MM-DD (with --to).",
)
@click.option(
    "--to", "end", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Last day, inclusive (with --from)."
)
@click.option("--daily", is_flag=True, help="Per-day values (with METRIC).")
@click.pass_context
def usage(
    ctx: click.Context,
    tenant_id: str,
    metric: str | None,
    period: str | None,
    start: datetime | None,
    end: datetime | None,
    daily: bool,
) -> None:
    """A tenant's usage of METRIC, or of every metric, in the current period.

    --period YYYY-MM picks another billing period, --from/--to a date range.
    """
    if period is not None and (start is not None or end is not None):
        raise click.UsageError("use --period or --from/--to, not both")
    if daily and metric is None:
        raise click.UsageError("--daily needs a METRIC")
    first, last = _day(start), _day(end)
    with open_metering(ctx) as metering:
        if metric is None:
            summaries = as_json(metering.usage_all(tenant_id, period=period, start=first, end=last).metrics)
            emit(summaries, [flat_period(s) for s in summaries], USAGE_COLUMNS)
            return
        summary = as_json(metering.usage(tenant_id, metric, period=period, start=first, end=last, daily=daily))
    if not daily:
        emit(summary, [flat_period(summary)], USAGE_COLUMNS)
        return
    rows = [{"tenant_id": tenant_id, "metric": metric, **day} for day in summary.get("daily", [])]
    period_text = f"{summary['period']['start']} to {summary['period']['end']}"
    title = (
        f"{tenant_id} {metric} ({summary['aggregation']}) {period_text}: "
        f"{summary['value']} from {summary['event_count']} events"
    )
    emit(summary, rows, ("tenant_id", "metric", "date", "value", "event_count"), title=title)


@click.command()
@click.argument("tenant_id", metavar="TENANT")
@click.argument("metric")
@click.pass_context
def quota(ctx: click.Context, tenant_id: str, metric: str) -> None:
    """Usage of METRIC in the current period against the tenant's plan quota."""
    with open_metering(ctx) as metering:
        status = as_json(metering.quota(tenant_id, metric))
    emit(status, [flat_period(status)], QUOTA_COLUMNS)


@click.command()
@click.option("--tenant", "tenant_id", metavar="TENANT", help="One tenant (default: all tenants).")
@period_option
@click.pass_context
def report(ctx: click.Context, tenant_id: str | None, period: str | None) -> None:
    """Billing report: one invoice per tenant with base fee, overage charges and total.

    CSV has one row per base fee, line item and total (amounts add up per invoice).
    """
    output = output_format()
    with open_metering(ctx) as metering:
        invoices = metering.billing_report(tenant_id, period)
    if output == "json":
        emit(as_json(invoices), [], CSV_COLUMNS)
        return
    rows = invoice_csv_rows(invoices)
    emit(None, rows, CSV_COLUMNS if output == "csv" else REPORT_TABLE_COLUMNS)


@click.command("top-users")
@click.argument("tenant_id", metavar="TENANT")
@click.argument("metric")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many users.")
@period_option
@click.pass_context
def top_users_command(ctx: click.Context, tenant_id: str, metric: str, limit: int, period: str | None) -> None:
    """A tenant's heaviest users of METRIC in the current (or given) period."""
    with open_metering(ctx) as metering:
        users = as_json(metering.top_users(tenant_id, metric, limit=limit, period=period).users)
    emit(users, users, TOP_USER_COLUMNS)


@click.command("dead-letters")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000), help="How many, newest first.")
@click.pass_context
def dead_letters(ctx: click.Context, limit: int) -> None:
    """Input that could not become an event, with the reason (newest first)."""
    with open_metering(ctx) as metering:
        letters = as_json(metering.dead_letters(limit))
    emit(letters, letters, DEAD_LETTER_COLUMNS)


@click.command()
@click.option("--tenant", "tenant_id", metavar="TENANT", help="One tenant (default: all tenants).")
@click.option("--status", type=click.Choice(["pending", "delivered"]), help="Only alerts with this delivery status.")
@click.option(
    "--limit", default=1000, show_default=True, type=click.IntRange(1, 10_000), help="How many, newest first."
)
@click.pass_context
def alerts(ctx: click.Context, tenant_id: str | None, status: str | None, limit: int) -> None:
    """Quota alerts: thresholds crossed per period, and whether their webhook was delivered."""
    with open_metering(ctx) as metering:
        items = as_json(metering.alerts(tenant_id, status, limit))
    emit(items, [flat_period(a) for a in items], ALERT_COLUMNS)
