"""Pricing: usage against a plan becomes line items, invoices and CSV rows.

Pure functions of plain values (no database): the billing reports feed them the
usage of one period. All arithmetic is exact `Decimal`; only the amounts that
end up on an invoice line are rounded, once, to the currency's minor unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from usage_metering.schemas import (
    OveragePolicy,
    Period,
    Plan,
    PlanMetric,
    PriceTier,
    format_decimal,
)
from usage_metering.schemas.entitlement import Entitlement
from usage_metering.schemas.money import EXACT as _EXACT
from usage_metering.schemas.periods import BillingPeriod
from usage_metering.schemas.wire import DecimalText, Identifier, JsonShape, Money, format_money

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_CURRENCY",
    "Invoice",
    "LineItem",
    "TierCharge",
    "build_invoice",
    "currency_minor_units",
    "invoice_csv_rows",
    "price_line_item",
    "round_money",
]

DEFAULT_CURRENCY = "USD"
_DEFAULT_MINOR_UNITS = 2

# ISO 4217 currencies whose minor unit is not 2 decimals. Every other code is
# treated as 2 (USD, EUR, GBP, ...).
_MINOR_UNITS: dict[str, int] = {
    # no minor unit
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # thousandths
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
}

_ZERO = Decimal(0)


def currency_minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit: 0 for JPY, 3 for KWD, else 2."""
    return _MINOR_UNITS.get(currency.upper(), _DEFAULT_MINOR_UNITS)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up (away from zero on a tie) to the currency's minor unit."""
    exponent = Decimal(1).scaleb(-currency_minor_units(currency))
    with localcontext(_EXACT):
        return amount.quantize(exponent, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class TierCharge(JsonShape):
    """The overage units that fell in one price tier and what they cost (unrounded).

    `up_to` is the tier's cumulative upper bound in overage units; None for an
    unbounded last tier, and for overage beyond a bounded last tier (those units
    are charged at the last tier's price, as a separate entry).
    """

    up_to: DecimalText | None
    quantity: DecimalText
    unit_price: DecimalText
    amount: DecimalText


@dataclass(frozen=True)
class LineItem(JsonShape):
    """One plan metric on an invoice.

    `overage_quantity` is reported whatever the policy; only `charge` bills it.
    `unit_price` is the price per overage unit that applies: the flat price, or
    with tiers the marginal price (the price of the tier the next overage unit
    falls in); 0 for `notify` and `block`, which bill nothing.
    `amount` is rounded to the currency's minor unit; tier amounts are exact.
    """

    metric: Identifier
    policy: OveragePolicy
    used: DecimalText
    included: DecimalText | None
    overage_quantity: DecimalText
    unit_price: DecimalText
    amount: Money
    tiers: tuple[TierCharge, ...]


@dataclass(frozen=True)
class Invoice(JsonShape):
    """A tenant's bill for one period. `plan_id` is None when no plan is assigned."""

    tenant_id: Identifier
    plan_id: Identifier | None
    plan_version: int | None
    period: BillingPeriod
    currency: str
    base_fee: Money
    line_items: tuple[LineItem, ...]
    total: Money


def _as_decimal(name: str, value: Decimal | int) -> Decimal:
    """Accept Decimal or int; refuse float, which would carry binary rounding error."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"{name} must be a Decimal, not {type(value).__name__}")
    return Decimal(value)


def _tier_charges(tiers: tuple[PriceTier, ...], overage: Decimal) -> tuple[TierCharge, ...]:
    """Graduated charges: each tier bills the overage units between its bounds.

    Units in a tier are those above the previous tier's `up_to` and at most its
    own. If the last tier is bounded and the overage goes past it, the rest is
    billed at the last tier's price (an extra charge with `up_to` None), so a
    plan never gives usage away for free by running out of tiers.
    """
    charges: list[TierCharge] = []
    lower = _ZERO
    with localcontext(_EXACT):
        for tier in tiers:
            upper = overage if tier.up_to is None else min(overage, tier.up_to)
            if upper > lower:
                quantity = upper - lower
                charges.append(TierCharge(tier.up_to, quantity, tier.unit_price, quantity * tier.unit_price))
            if tier.up_to is None or overage <= tier.up_to:
                return tuple(charges)
            lower = tier.up_to
        if tiers and overage > lower:
            last_price = tiers[-1].unit_price
            quantity = overage - lower
            charges.append(TierCharge(None, quantity, last_price, quantity * last_price))
    return tuple(charges)


def _marginal_price(tiers: tuple[PriceTier, ...], overage: Decimal) -> Decimal:
    """The price of the tier the next overage unit (just above `overage`) falls in."""
    for tier in tiers:
        if tier.up_to is None or overage < tier.up_to:
            return tier.unit_price
    return tiers[-1].unit_price


def price_line_item(plan_metric: PlanMetric, used: Decimal, currency: str) -> LineItem:
    """Price one metric's usage for a period against its plan entry."""
    used = _as_decimal("used", used)
    overage = Entitlement.of_plan_metric(plan_metric).overage(used)
    tiers: tuple[TierCharge, ...]
    if plan_metric.policy is not OveragePolicy.CHARGE:
        unit_price, tiers, exact_amount = _ZERO, (), _ZERO
    elif plan_metric.tiers:
        unit_price = _marginal_price(plan_metric.tiers, overage)
        tiers = _tier_charges(plan_metric.tiers, overage)
        with localcontext(_EXACT):
            exact_amount = sum((tier.amount for tier in tiers), _ZERO)
    else:
        unit_price, tiers = plan_metric.unit_price, ()
        with localcontext(_EXACT):
            exact_amount = overage * unit_price
    return LineItem(
        metric=plan_metric.metric,
        policy=plan_metric.policy,
        used=used,
        included=plan_metric.included,
        overage_quantity=overage,
        unit_price=unit_price,
        amount=round_money(exact_amount, currency),
        tiers=tiers,
    )


def build_invoice(tenant_id: str, plan: Plan | None, period: Period, usage: Mapping[str, Decimal]) -> Invoice:
    """The invoice for one tenant and period.

    One line item per plan metric, in plan order (missing usage counts as 0).
    Usage of metrics the plan does not list is not billed and not listed.
    Total = base fee (rounded) + the (rounded) line amounts. Without a plan the
    invoice is empty: USD, no base fee, no line items, total 0.
    """
    if plan is None:
        nothing = round_money(_ZERO, DEFAULT_CURRENCY)
        return Invoice(tenant_id, None, None, BillingPeriod.of(period), DEFAULT_CURRENCY, nothing, (), nothing)
    currency = plan.currency
    line_items = tuple(
        price_line_item(plan_metric, usage.get(plan_metric.metric, _ZERO), currency) for plan_metric in plan.metrics
    )
    base_fee = round_money(plan.base_fee, currency)
    with localcontext(_EXACT):
        total = sum((item.amount for item in line_items), base_fee)
    return Invoice(
        tenant_id=tenant_id,
        plan_id=plan.plan_id,
        plan_version=plan.version,
        period=BillingPeriod.of(period),
        currency=currency,
        base_fee=base_fee,
        line_items=line_items,
        total=total,
    )


# Flat CSV shape: every row carries the invoice columns; `row_type` says what the
# row is. Per invoice: one "base_fee" row, one "line_item" row per line item,
# then one "total" row. base_fee and total rows have an empty metric and usage
# columns, and their `amount` is the base fee or the total, so the amounts of
# base_fee + line_item rows add up to the total row's amount. Tier detail is
# not flattened (see the JSON form). Empty string = not applicable / unlimited.
CSV_COLUMNS: tuple[str, ...] = (
    "tenant_id",
    "plan_id",
    "plan_version",
    "period_label",
    "period_start",
    "period_end",
    "currency",
    "row_type",
    "metric",
    "policy",
    "used",
    "included",
    "overage_quantity",
    "unit_price",
    "amount",
)


def _invoice_columns(invoice: Invoice) -> dict[str, str]:
    period = invoice.period.to_json_dict()
    return {
        "tenant_id": invoice.tenant_id,
        "plan_id": invoice.plan_id or "",
        "plan_version": "" if invoice.plan_version is None else str(invoice.plan_version),
        "period_label": invoice.period.label(),
        "period_start": period["start"],
        "period_end": period["end"],
        "currency": invoice.currency,
    }


def _summary_row(head: dict[str, str], row_type: str, amount: Decimal) -> dict[str, str]:
    empty = dict.fromkeys(("metric", "policy", "used", "included", "overage_quantity", "unit_price"), "")
    return {**head, "row_type": row_type, **empty, "amount": format_money(amount)}


def _line_item_row(head: dict[str, str], item: LineItem) -> dict[str, str]:
    return {
        **head,
        "row_type": "line_item",
        "metric": item.metric,
        "policy": item.policy.value,
        "used": format_decimal(item.used),
        "included": "" if item.included is None else format_decimal(item.included),
        "overage_quantity": format_decimal(item.overage_quantity),
        "unit_price": format_decimal(item.unit_price),
        "amount": format_money(item.amount),
    }


def invoice_csv_rows(invoices: Iterable[Invoice]) -> list[dict[str, str]]:
    """Flat rows (keys = CSV_COLUMNS, all strings) for csv.DictWriter."""
    rows: list[dict[str, str]] = []
    for invoice in invoices:
        head = _invoice_columns(invoice)
        rows.append(_summary_row(head, "base_fee", invoice.base_fee))
        rows.extend(_line_item_row(head, item) for item in invoice.line_items)
        rows.append(_summary_row(head, "total", invoice.total))
    return rows
