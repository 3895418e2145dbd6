"""Pricing: hand-worked line items and invoices, and a property test against an
independent reference written with fractions.Fraction and integer minor units."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_metering.reports.pricing import (
    CSV_COLUMNS,
    Invoice,
    build_invoice,
    currency_minor_units,
    invoice_csv_rows,
    price_line_item,
    round_money,
)
from usage_metering.schemas import (
    OveragePolicy,
    Plan,
    PlanMetric,
    PriceTier,
    parse_plan,
    period_containing,
)
from usage_metering.schemas.periods import BillingPeriod

pytestmark = pytest.mark.unit

D = Decimal
PERIOD = period_containing(datetime(2024, 3, 10, tzinfo=timezone.utc), 1)


def flat(included: str | None, price: str, policy: OveragePolicy = OveragePolicy.CHARGE) -> PlanMetric:
    return PlanMetric(
        "api_calls", None if included is None else D(included), policy, D(price)
    )


def tiered(included: str | None, *tiers: tuple[str | None, str]) -> PlanMetric:
    return PlanMetric(
        "api_calls",
        None if included is None else D(included),
        OveragePolicy.CHARGE,
        D("99"),  # ignored when tiers are given
        tuple(PriceTier(None if up is None else D(up), D(price)) for up, price in tiers),
    )


# --- hand-worked line items ------------------------------------------------


def test_usage_under_quota_has_no_overage() -> None:
    item = price_line_item(flat("1000", "0.01"), D(999), "USD")
    assert item.overage_quantity == 0
    assert item.amount == 0
    assert item.used == D(999)
    assert item.included == D(1000)
    assert item.tiers == ()


def test_usage_exactly_at_quota_has_no_overage() -> None:
    item = price_line_item(flat("1000", "0.01"), D(1000), "USD")
    assert item.overage_quantity == 0
    assert item.amount == 0


def test_flat_overage_is_quantity_times_price() -> None:
    item = price_line_item(flat("1000", "0.015"), D(1250), "USD")
    assert item.overage_quantity == D(250)
    assert item.unit_price == D("0.015")
    assert item.amount == D("3.75")
    assert str(item.amount) == "3.75"  # rounded to cents


def test_unlimited_quota_never_bills() -> None:
    item = price_line_item(flat(None, "5"), D(10**9), "USD")
    assert item.included is None
    assert item.overage_quantity == 0
    assert item.amount == 0
    assert item.to_json_dict()["included"] is None


@pytest.mark.parametrize("policy", [OveragePolicy.NOTIFY, OveragePolicy.BLOCK])
def test_notify_and_block_report_overage_but_bill_nothing(policy: OveragePolicy) -> None:
    metric = PlanMetric(
        "api_calls", D(100), policy, D("2"), (PriceTier(D(10), D(1)), PriceTier(None, D(3)))
    )
    item = price_line_item(metric, D(150), "USD")
    assert item.policy is policy
    assert item.overage_quantity == D(50)
    assert item.amount == 0
    assert item.unit_price == 0
    assert item.tiers == ()


def test_tiers_crossing_boundaries() -> None:
    # overage 350: 100 @ 0.10 + 200 @ 0.05 + 50 @ 0.01 = 10 + 10 + 0.5
    metric = tiered("1000", ("100", "0.10"), ("300", "0.05"), (None, "0.01"))
    item = price_line_item(metric, D(1350), "USD")
    assert item.overage_quantity == D(350)
    assert [(t.up_to, t.quantity, t.unit_price, t.amount) for t in item.tiers] == [
        (D(100), D(100), D("0.10"), D("10")),
        (D(300), D(200), D("0.05"), D("10")),
        (None, D(50), D("0.01"), D("0.5")),
    ]
    assert item.amount == D("20.50")
    assert item.unit_price == D("0.01")  # marginal price: the next unit is in the last tier


def test_tiers_overage_ending_exactly_on_a_boundary_lists_only_used_tiers() -> None:
    metric = tiered("0", ("100", "1"), ("300", "0.5"), (None, "0.25"))
    item = price_line_item(metric, D(100), "USD")
    assert [(t.up_to, t.quantity) for t in item.tiers] == [(D(100), D(100))]
    assert item.amount == D(100)
    assert item.unit_price == D("0.5")  # the 101st unit is in the second tier


def test_tiers_with_fractional_overage() -> None:
    metric = tiered("10", ("0.5", "2"), (None, "1"))
    item = price_line_item(metric, D("11.25"), "USD")
    assert [(t.quantity, t.amount) for t in item.tiers] == [(D("0.5"), D("1.0")), (D("0.75"), D("0.75"))]
    assert item.amount == D("1.75")


def test_overage_beyond_a_bounded_last_tier_is_priced_at_the_last_price() -> None:
    metric = tiered("0", ("100", "1"), ("200", "0.5"))
    item = price_line_item(metric, D(260), "USD")
    assert [(t.up_to, t.quantity, t.unit_price, t.amount) for t in item.tiers] == [
        (D(100), D(100), D(1), D(100)),
        (D(200), D(100), D("0.5"), D("50")),
        (None, D(60), D("0.5"), D("30")),
    ]
    assert item.amount == D(180)
    assert item.unit_price == D("0.5")


def test_tiers_with_no_overage_are_empty() -> None:
    item = price_line_item(tiered("500", ("100", "1")), D(400), "USD")
    assert item.tiers == ()
    assert item.amount == 0
    assert item.unit_price == D(1)


def test_tier_amounts_are_exact_and_line_amount_is_rounded_sum() -> None:
    # 3 @ 0.0015 = 0.0045 and 3 @ 0.0015 = 0.0045: each would round to 0.00,
    # but the line rounds their sum 0.009 -> 0.01.
    metric = tiered("0", ("3", "0.0015"), (None, "0.0015"))
    item = price_line_item(metric, D(6), "USD")
    assert [t.amount for t in item.tiers] == [D("0.0045"), D("0.0045")]
    assert item.amount == D("0.01")


def test_jpy_rounds_to_whole_yen() -> None:
    item = price_line_item(flat("0", "0.5"), D(3), "JPY")  # 1.5 yen -> 2
    assert item.amount == D(2)
    assert item.amount.as_tuple().exponent == 0
    assert price_line_item(flat("0", "0.4"), D(3), "JPY").amount == D(1)  # 1.2 -> 1


def test_three_decimal_currency() -> None:
    item = price_line_item(flat("0", "0.0001"), D(15), "KWD")  # 0.0015 -> 0.002
    assert item.amount == D("0.002")
    assert str(item.amount) == "0.002"


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.005", "USD", "0.01"),
        ("0.004999", "USD", "0.00"),
        ("2.675", "EUR", "2.68"),  # a float would give 2.67
        ("0.5", "JPY", "1"),
        ("2.5", "JPY", "3"),  # half-up, not banker's rounding
        ("1.0005", "BHD", "1.001"),
        ("12345678901234567890.125", "USD", "12345678901234567890.13"),  # > 28 digits
    ],
)
def test_round_money_half_up(amount: str, currency: str, expected: str) -> None:
    result = round_money(D(amount), currency)
    assert result == D(expected)
    assert str(result) == expected


def test_currency_minor_units_table() -> None:
    assert currency_minor_units("USD") == 2
    assert currency_minor_units("EUR") == 2
    assert currency_minor_units("JPY") == 0
    assert currency_minor_units("KRW") == 0
    assert currency_minor_units("ISK") == 0
    assert currency_minor_units("KWD") == 3
    assert currency_minor_units("TND") == 3
    assert currency_minor_units("jpy") == 0


def test_float_usage_is_refused() -> None:
    with pytest.raises(TypeError):
        price_line_item(flat("0", "1"), 0.1, "USD")  # type: ignore[arg-type]


def test_line_item_json() -> None:
    item = price_line_item(tiered("1000", ("100", "0.10"), (None, "0.05")), D("1150.5"), "USD")
    assert item.to_json_dict() == {
        "metric": "api_calls",
        "policy": "charge",
        "used": "1150.5",
        "included": "1000",
        "overage_quantity": "150.5",
        "unit_price": "0.05",
        "amount": "12.53",  # 10 + 2.525 -> 12.53 (half up)
        "tiers": [
            {"up_to": "100", "quantity": "100", "unit_price": "0.1", "amount": "10"},
            {"up_to": None, "quantity": "50.5", "unit_price": "0.05", "amount": "2.525"},
        ],
    }


# --- invoices -----------------------------------------------------------------


PLAN = Plan(
    plan_id="pro",
    name="Pro",
    currency="USD",
    base_fee=D("49.995"),
    metrics=(
        PlanMetric("api_calls", D(1000), OveragePolicy.CHARGE, D("0.01")),
        PlanMetric("storage_gb", D(10), OveragePolicy.NOTIFY, D("1")),
        PlanMetric("seats", None, OveragePolicy.CHARGE, D("5")),
    ),
    version=3,
)


def test_build_invoice_lists_plan_metrics_in_order_and_totals() -> None:
    usage = {"storage_gb": D(12), "api_calls": D(1500), "unknown_metric": D(10**6)}
    invoice = build_invoice("acme", PLAN, PERIOD, usage)
    assert [i.metric for i in invoice.line_items] == ["api_calls", "storage_gb", "seats"]
    assert [i.amount for i in invoice.line_items] == [D(5), D(0), D(0)]
    assert invoice.line_items[1].overage_quantity == D(2)
    assert invoice.line_items[2].used == 0  # missing usage counts as 0
    assert invoice.base_fee == D("50.00")  # rounded half up
    assert invoice.total == D("55.00")
    assert (invoice.plan_id, invoice.plan_version, invoice.currency) == ("pro", 3, "USD")


def test_build_invoice_without_plan_is_empty_usd() -> None:
    invoice = build_invoice("acme", None, PERIOD, {"api_calls": D(5)})
    assert invoice == Invoice("acme", None, None, BillingPeriod.of(PERIOD), "USD", D(0), (), D(0))
    data = invoice.to_json_dict()
    assert data["plan_id"] is None and data["plan_version"] is None
    assert data["total"] == "0.00" and data["line_items"] == []


def test_invoice_json() -> None:
    invoice = build_invoice("acme", PLAN, PERIOD, {"api_calls": D(1001)})
    data = invoice.to_json_dict()
    assert data["period"] == {
        "start": "2024-03-01T00:00:00Z",
        "end": "2024-04-01T00:00:00Z",
        "label": "2024-03",
    }
    assert data["base_fee"] == "50.00"  # money keeps its minor units
    assert data["total"] == "50.01"
    assert data["line_items"][0]["amount"] == "0.01"
    assert set(data) == {
        "tenant_id", "plan_id", "plan_version", "period", "currency", "base_fee", "line_items", "total",
    }


def test_jpy_invoice_totals_whole_yen() -> None:
    plan = Plan("jp", "JP", "JPY", D("980.5"), (PlanMetric("api_calls", D(0), OveragePolicy.CHARGE, D("0.3")),))
    invoice = build_invoice("t", plan, PERIOD, {"api_calls": D(5)})  # 1.5 -> 2
    assert invoice.base_fee == D(981)
    assert invoice.total == D(983)


def test_invoice_csv_rows_shape_and_sums() -> None:
    invoices = [
        build_invoice("acme", PLAN, PERIOD, {"api_calls": D(1500), "storage_gb": D(11)}),
        build_invoice("solo", None, PERIOD, {}),
    ]
    rows = invoice_csv_rows(invoices)
    assert all(tuple(row) == CSV_COLUMNS for row in rows)
    assert all(isinstance(v, str) for row in rows for v in row.values())
    assert [(r["tenant_id"], r["row_type"], r["metric"]) for r in rows] == [
        ("acme", "base_fee", ""),
        ("acme", "line_item", "api_calls"),
        ("acme", "line_item", "storage_gb"),
        ("acme", "line_item", "seats"),
        ("acme", "total", ""),
        ("solo", "base_fee", ""),
        ("solo", "total", ""),
    ]
    acme = [r for r in rows if r["tenant_id"] == "acme"]
    parts = sum(D(r["amount"]) for r in acme if r["row_type"] != "total")
    assert parts == D(acme[-1]["amount"]) == D("55")
    assert acme[3]["included"] == ""  # unlimited
    assert acme[0]["period_label"] == "2024-03"
    assert rows[5]["plan_id"] == "" and rows[5]["plan_version"] == ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    assert out.getvalue().splitlines()[0] == ",".join(CSV_COLUMNS)


# --- property test against an independent reference -------------------------
#
# The reference works in Fraction and integer minor units and shares no code
# with the module: bands are listed as (low, high, price) with high=None for
# "no upper bound", a bounded last tier gets an extra band at its price.


def ref_line_amount(
    included: Fraction | None,
    policy: str,
    price: Fraction,
    tiers: list[tuple[Fraction | None, Fraction]],
    used: Fraction,
    minor_units: int,
) -> tuple[Fraction, int]:
    """(overage, amount in integer minor units)."""
    overage = Fraction(0) if included is None else max(Fraction(0), used - included)
    if policy != "charge":
        return overage, 0
    if not tiers:
        exact = overage * price
    else:
        bands: list[tuple[Fraction, Fraction | None, Fraction]] = []
        low = Fraction(0)
        for up_to, tier_price in tiers:
            bands.append((low, up_to, tier_price))
            if up_to is not None:
                low = up_to
        if tiers[-1][0] is not None:
            bands.append((low, None, tiers[-1][1]))
        exact = Fraction(0)
        for band_low, band_high, band_price in bands:
            top = overage if band_high is None else min(overage, band_high)
            if top > band_low:
                exact += (top - band_low) * band_price
    scaled = exact * 10**minor_units
    # half up for non-negative values: floor(x + 1/2)
    return overage, (scaled.numerator * 2 + scaled.denominator) // (2 * scaled.denominator)


def fraction_of(text: str | None) -> Fraction | None:
    return None if text is None else Fraction(text)


def decimal_text(max_units: int, scale: int) -> st.SearchStrategy[str]:
    """Decimal strings 0 <= x <= max_units/10**scale with up to `scale` fractional digits."""
    return st.integers(0, max_units).map(lambda n: format(D(n).scaleb(-scale), "f"))


PRICES = decimal_text(10**8, 4)  # up to 10000 with 4 decimals
QUANTITIES = decimal_text(10**18, 9)  # up to 10^9 with 9 decimals


@st.composite
def plan_metric_json(draw: st.DrawFn, name: str) -> dict:
    n_tiers = draw(st.integers(0, 4))
    bounds = sorted(draw(st.sets(st.integers(1, 10**18), min_size=n_tiers, max_size=n_tiers)))
    ups: list[str | None] = [format(D(b).scaleb(-9), "f") for b in bounds]
    if ups and draw(st.booleans()):
        ups[-1] = None
    return {
        "metric": name,
        "included": draw(st.none() | QUANTITIES),
        "policy": draw(st.sampled_from(["charge", "charge", "notify", "block"])),
        "unit_price": draw(PRICES),
        "tiers": [{"up_to": up, "unit_price": draw(PRICES)} for up in ups],
    }


CURRENCIES = st.sampled_from(["USD", "EUR", "JPY", "KRW", "KWD", "BHD"])


def ref_check_line(metric_json: dict, used: str, currency: str, minor: int) -> tuple[Fraction, int]:
    tiers = [(fraction_of(t["up_to"]), Fraction(t["unit_price"])) for t in metric_json["tiers"]]
    return ref_line_amount(
        fraction_of(metric_json["included"]),
        metric_json["policy"],
        Fraction(metric_json["unit_price"]),
        tiers,
        Fraction(used),
        minor,
    )


REF_MINOR_UNITS = {"USD": 2, "EUR": 2, "JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3}


@settings(max_examples=300, deadline=None)
@given(metric_json=plan_metric_json("m"), used=QUANTITIES, currency=CURRENCIES)
def test_price_line_item_matches_reference(metric_json: dict, used: str, currency: str) -> None:
    plan = parse_plan({"plan_id": "p", "currency": currency, "metrics": [metric_json]})
    item = price_line_item(plan.metrics[0], D(used), currency)
    minor = REF_MINOR_UNITS[currency]
    overage, amount_minor = ref_check_line(metric_json, used, currency, minor)
    assert Fraction(item.overage_quantity) == overage
    assert Fraction(item.amount) * 10**minor == amount_minor
    assert -item.amount.as_tuple().exponent == minor  # exactly `minor` decimals
    # tier charges: positive quantities that add up to the billed overage
    if metric_json["policy"] == "charge" and metric_json["tiers"]:
        assert all(t.quantity > 0 for t in item.tiers)
        assert sum(Fraction(t.quantity) for t in item.tiers) == overage
        assert all(t.amount == t.quantity * t.unit_price for t in item.tiers)
    else:
        assert item.tiers == ()


@settings(max_examples=150, deadline=None)
@given(
    metrics=st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4).flatmap(
        lambda names: st.tuples(*(plan_metric_json(n) for n in names))
    ),
    usage=st.dictionaries(st.sampled_from(["a", "b", "c", "d", "x"]), QUANTITIES),
    base_fee=PRICES,
    currency=CURRENCIES,
)
def test_build_invoice_matches_reference(
    metrics: tuple[dict, ...], usage: dict[str, str], base_fee: str, currency: str
) -> None:
    plan = parse_plan({"plan_id": "p", "currency": currency, "base_fee": base_fee, "metrics": list(metrics)})
    invoice = build_invoice("t", plan, PERIOD, {k: D(v) for k, v in usage.items()})
    minor = REF_MINOR_UNITS[currency]
    scaled_fee = Fraction(base_fee) * 10**minor
    expected_total = (scaled_fee.numerator * 2 + scaled_fee.denominator) // (2 * scaled_fee.denominator)
    assert [i.metric for i in invoice.line_items] == [m["metric"] for m in metrics]
    for item, metric_json in zip(invoice.line_items, metrics):
        _, amount_minor = ref_check_line(metric_json, usage.get(metric_json["metric"], "0"), currency, minor)
        assert Fraction(item.amount) * 10**minor == amount_minor
        expected_total += amount_minor
    assert Fraction(invoice.total) * 10**minor == expected_total
    assert invoice.currency == currency
