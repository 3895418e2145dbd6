"""Printing results: JSON (the API's shapes), CSV with a header, or an aligned table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import click

from usage_metering.reports.pricing import CSV_COLUMNS
from usage_metering.schemas.wire import to_json_data

from .common import output_format

TABLE_CELL_MAX = 80


def as_json(value: Any) -> Any:
    """A library result (or a list of them) as its JSON shape: what `--format json` prints, what rows are made of."""
    if isinstance(value, list):
        return [to_json_data(item) for item in value]
    return to_json_data(value)


def _cell(value: Any, none: str) -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return text[:1].isdigit() or text[:1] == "-"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns with a header; numeric columns right-aligned, None as '-'."""
    cells = [[_cell(row.get(c), "-") for c in columns] for row in rows]
    cells = [[c if len(c) <= TABLE_CELL_MAX else c[: TABLE_CELL_MAX - 1] + "…" for c in line] for line in cells]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    numeric = [
        any(_is_number(line[i]) for line in cells)
        and all(line[i] in ("-", "") or _is_number(line[i]) for line in cells)
        for i in range(len(columns))
    ]

    def render(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [render(list(columns)), "  ".join("-" * w for w in widths)]
    lines.extend(render(line) for line in cells)
    return "\n".join(lines)


def format_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(row.get(c), "") for c in columns] for row in rows)
    return buffer.getvalue().rstrip("\n")


def emit(
    data: Any,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
) -> None:
    """Print `data` as JSON, or `rows` (flat dicts) as CSV or an aligned table."""
    output = output_format()
    if output == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif output == "csv":
        click.echo(format_csv(rows, columns))
    else:
        if title:
            click.echo(title)
        click.echo(format_table(rows, columns))


def flat_period(data: Mapping[str, Any]) -> dict[str, Any]:
    """`period: {start, end}` as period_start/period_end columns."""
    period = data.get("period") or {}
    flat = {k: v for k, v in data.items() if k != "period"}
    return {**flat, "period_start": period.get("start"), "period_end": period.get("end")}


USAGE_COLUMNS = ("tenant_id", "metric", "aggregation", "value", "event_count", "period_start", "period_end")
QUOTA_COLUMNS = (
    "tenant_id",
    "metric",
    "used",
    "limit",
    "remaining",
    "policy",
    "allowed",
    "period_start",
    "period_end",
    "as_of",
)
REPORT_TABLE_COLUMNS = tuple(c for c in CSV_COLUMNS if c not in ("period_start", "period_end"))  # the CSV's, less width
TOP_USER_COLUMNS = ("rank", "user_id", "value", "event_count")
PLAN_COLUMNS = ("plan_id", "version", "name", "currency", "base_fee", "metrics")
PLAN_METRIC_COLUMNS = ("plan_id", "version", "metric", "included", "policy", "unit_price", "tiers")
TENANT_COLUMNS = ("tenant_id", "name", "plan_id", "billing_anchor_day")
METRIC_COLUMNS = ("name", "aggregation", "unit", "description")
KEY_COLUMNS = ("key_id", "name", "scope", "tenant_id", "created_at", "revoked_at")
DEAD_LETTER_COLUMNS = ("id", "received_at", "source", "topic", "partition", "offset", "reason", "raw")
ALERT_COLUMNS = (
    "tenant_id",
    "metric",
    "threshold_percent",
    "used",
    "included",
    "period_start",
    "status",
    "attempts",
    "last_error",
    "created_at",
    "delivered_at",
)
RECORD_COLUMNS = ("event_id", "status")
SUMMARY_COLUMNS = ("recorded", "duplicates", "blocked", "rejected")


def _tiers_text(tiers: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(f"up to {t['up_to'] or 'unlimited'} at {t['unit_price']}" for t in tiers)


def emit_plan(plan: Mapping[str, Any]) -> None:
    rows = [
        {**m, "plan_id": plan["plan_id"], "version": plan["version"], "tiers": _tiers_text(m.get("tiers") or [])}
        for m in plan.get("metrics", [])
    ]
    title = (
        f"plan {plan['plan_id']} v{plan['version']}: {plan['name']} ({plan['currency']}, base fee {plan['base_fee']})"
    )
    emit(plan, rows, PLAN_METRIC_COLUMNS, title=title)
