"""Plans (price lists with quotas) and tenants (customers assigned to a plan)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field

from .errors import ValidationError
from .ids import check_id
from .money import parse_amount
from .wire import DecimalText, Identifier, JsonShape

CURRENCY_PATTERN = r"^[A-Z]{3}$"
CURRENCY_RE = re.compile(CURRENCY_PATTERN)
DEFAULT_ALERT_THRESHOLDS = (Decimal(80), Decimal(100))  # percent of `included`
MAX_ALERT_THRESHOLDS = 10
MAX_WEBHOOK_URL_LENGTH = 2000


class OveragePolicy(str, Enum):
    BLOCK = "block"  # events over the limit are rejected (HTTP 429)
    CHARGE = "charge"  # accepted; the overage is billed
    NOTIFY = "notify"  # accepted and flagged; not billed


@dataclass(frozen=True)
class PriceTier(JsonShape):
    """Graduated tier over the overage quantity: units up to `up_to` cost `unit_price`.

    `up_to` is cumulative overage units (None = no upper bound, only on the last tier).
    """

    up_to: DecimalText | None
    unit_price: DecimalText


@dataclass(frozen=True)
class PlanMetric(JsonShape):
    metric: Identifier
    included: DecimalText | None = None  # the quota; None = unlimited
    policy: OveragePolicy = OveragePolicy.CHARGE
    unit_price: DecimalText = Decimal(0)  # per unit of overage when no tiers are given
    tiers: tuple[PriceTier, ...] = ()
    alert_thresholds: tuple[DecimalText, ...] = DEFAULT_ALERT_THRESHOLDS  # percent of included; unused without it


@dataclass(frozen=True)
class Plan(JsonShape):
    plan_id: Identifier
    name: str
    currency: Annotated[str, Field(pattern=CURRENCY_PATTERN)] = "USD"
    base_fee: DecimalText = Decimal(0)
    metrics: tuple[PlanMetric, ...] = ()
    version: int = 0  # assigned by the store; each change makes a new version

    def metric(self, name: str) -> PlanMetric | None:
        for plan_metric in self.metrics:
            if plan_metric.metric == name:
                return plan_metric
        return None


@dataclass(frozen=True)
class Tenant(JsonShape):
    tenant_id: Identifier
    name: str = ""
    plan_id: Identifier | None = None
    billing_anchor_day: Annotated[int, Field(ge=1, le=31)] = 1  # day of month periods start (clamped to short months)
    webhook_url: str | None = None  # quota alerts go here (else to the node's global URL)


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], prefix: str = "") -> None:
    for key in data:
        if key not in allowed:
            raise ValidationError(f"{prefix}{key}", "is not a known field", "unknown_field")


def _require_object(field: str | None, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(field, "must be a JSON object", "invalid_type")
    return data


def _parse_tiers(field: str, value: Any) -> tuple[PriceTier, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValidationError(field, "must be a list", "invalid_type")
    tiers: list[PriceTier] = []
    previous = Decimal(0)
    for index, raw in enumerate(value):
        where = f"{field}[{index}]"
        raw = _require_object(where, raw)
        _reject_unknown(raw, {"up_to", "unit_price"}, f"{where}.")
        up_to = parse_amount(f"{where}.up_to", raw.get("up_to"), required=False)
        is_last = index == len(value) - 1
        if up_to is None and not is_last:
            raise ValidationError(f"{where}.up_to", "only the last tier may be unbounded", "invalid_tiers")
        if up_to is not None and up_to <= previous:
            raise ValidationError(f"{where}.up_to", "tiers must increase", "invalid_tiers")
        unit_price = parse_amount(f"{where}.unit_price", raw.get("unit_price"))
        assert unit_price is not None
        tiers.append(PriceTier(up_to, unit_price))
        previous = up_to if up_to is not None else previous
    return tuple(tiers)


def _parse_policy(field: str, value: Any) -> OveragePolicy:
    if value is None:
        return OveragePolicy.CHARGE
    try:
        return OveragePolicy(str(value).lower())
    except ValueError:
        raise ValidationError(field, "must be one of block, charge, notify", "invalid_policy") from None


def _parse_alert_thresholds(field: str, value: Any, included: Decimal | None) -> tuple[Decimal, ...]:
    """Percentages of `included` (0 < t <= 1000), sorted; default 80 and 100; none without a quota."""
    if value is None:
        return DEFAULT_ALERT_THRESHOLDS if included is not None else ()
    if not isinstance(value, list) or len(value) > MAX_ALERT_THRESHOLDS:
        raise ValidationError(field, f"must be a list of at most {MAX_ALERT_THRESHOLDS} percentages", "invalid_type")
    if value and included is None:
        raise ValidationError(field, "needs an included quantity to be a percentage of", "invalid_thresholds")
    thresholds: list[Decimal] = []
    for index, raw in enumerate(value):
        threshold = parse_amount(f"{field}[{index}]", raw)
        assert threshold is not None
        if not 0 < threshold <= 1000:
            raise ValidationError(
                f"{field}[{index}]", "must be a percentage above 0 and at most 1000", "invalid_thresholds"
            )
        if threshold in thresholds:
            raise ValidationError(f"{field}[{index}]", "each threshold may appear once", "invalid_thresholds")
        thresholds.append(threshold)
    return tuple(sorted(thresholds))


def parse_plan_metric(field: str, data: Any) -> PlanMetric:
    data = _require_object(field, data)
    _reject_unknown(data, {"metric", "included", "policy", "unit_price", "tiers", "alert_thresholds"}, f"{field}.")
    included = parse_amount(f"{field}.included", data.get("included"), required=False)
    return PlanMetric(
        metric=check_id(f"{field}.metric", data.get("metric")) or "",
        included=included,
        policy=_parse_policy(f"{field}.policy", data.get("policy")),
        unit_price=parse_amount(f"{field}.unit_price", data.get("unit_price", 0)) or Decimal(0),
        tiers=_parse_tiers(f"{field}.tiers", data.get("tiers")),
        alert_thresholds=_parse_alert_thresholds(f"{field}.alert_thresholds", data.get("alert_thresholds"), included),
    )


def parse_plan(data: Any) -> Plan:
    """Validate plan JSON: {plan_id, name, currency, base_fee, metrics: [...]}."""
    data = _require_object(None, data)
    _reject_unknown(data, {"plan_id", "name", "currency", "base_fee", "metrics", "version"})
    currency = data.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise ValidationError("currency", "must be a 3-letter ISO 4217 code, e.g. USD", "invalid_currency")
    raw_metrics = data.get("metrics", [])
    if not isinstance(raw_metrics, list):
        raise ValidationError("metrics", "must be a list", "invalid_type")
    metrics = tuple(parse_plan_metric(f"metrics[{i}]", m) for i, m in enumerate(raw_metrics))
    plan_id = check_id("plan_id", data.get("plan_id")) or ""
    names = [m.metric for m in metrics]
    if len(names) != len(set(names)):
        raise ValidationError("metrics", "each metric may appear once", "duplicate_metric")
    name = data.get("name", data.get("plan_id"))
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise ValidationError("name", "must be a string of 1-200 characters", "invalid_type")
    return Plan(
        plan_id=plan_id,
        name=name,
        currency=currency,
        base_fee=parse_amount("base_fee", data.get("base_fee", 0)) or Decimal(0),
        metrics=metrics,
    )


def parse_anchor_day(field: str, value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 31:
        raise ValidationError(field, "must be an integer day of month 1-31", "invalid_anchor_day")
    return value


def parse_webhook_url(field: str, value: Any) -> str | None:
    """An absolute http(s) URL, or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_WEBHOOK_URL_LENGTH:
        raise ValidationError(field, f"must be a URL of at most {MAX_WEBHOOK_URL_LENGTH} characters", "invalid_type")
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 bracket, "http://[::1"
        raise ValidationError(field, "must be an absolute http:// or https:// URL", "invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, "must be an absolute http:// or https:// URL", "invalid_url")
    return value


def parse_tenant(data: Any) -> Tenant:
    """Validate tenant JSON: {tenant_id, name, plan_id, billing_anchor_day, webhook_url}."""
    data = _require_object(None, data)
    _reject_unknown(data, {"tenant_id", "name", "plan_id", "billing_anchor_day", "webhook_url"})
    name = data.get("name") or ""
    if not isinstance(name, str) or len(name) > 200:
        raise ValidationError("name", "must be a string of at most 200 characters", "invalid_type")
    return Tenant(
        tenant_id=check_id("tenant_id", data.get("tenant_id")) or "",
        name=name,
        plan_id=check_id("plan_id", data.get("plan_id"), required=False),
        billing_anchor_day=parse_anchor_day("billing_anchor_day", data.get("billing_anchor_day")),
        webhook_url=parse_webhook_url("webhook_url", data.get("webhook_url")),
    )
