"""Plans (price lists with quotas) and tenants (customers assigned to a plan).

Each is one dataclass: the library's value, its JSON shape in the OpenAPI
document and the validation of input (`parse_plan`, `parse_tenant`: the type
itself checks the data). Rules JSON Schema can state (lengths, patterns,
ranges, no unknown fields) are annotations; rules across fields are
validators on the type, in its schema where JSON Schema can say them and in
its description where it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from .errors import ValidationError
from .money import MONEY_MAX_SCALE
from .validation import closed, reported_as, validate
from .wire import Amount, Identifier, JsonShape, any_case_schema, ascii_lower, at_most_characters

CURRENCY_PATTERN = r"^[A-Z]{3}$"
DEFAULT_ALERT_THRESHOLDS = (Decimal(80), Decimal(100))  # percent of `included`
MAX_ALERT_THRESHOLDS = 10
MAX_THRESHOLD_PERCENT = 1000
MAX_WEBHOOK_URL_LENGTH = 2000
NAME_MAX_LENGTH = 200
# Exactly the text a `Percentage` takes: above 0, at most 1000 (MAX_THRESHOLD_PERCENT), at most 9 fractional
# digits (trailing zeros aside).
PERCENT_TEXT_PATTERN = (
    rf"^0*(?:[1-9][0-9]{{0,2}}(?:\.[0-9]{{1,{MONEY_MAX_SCALE}}}0*)?"
    rf"|1000(?:\.0+)?"
    rf"|0\.[0-9]{{0,{MONEY_MAX_SCALE - 1}}}[1-9]0*)$"
)


class OveragePolicy(str, Enum):
    BLOCK = "block"  # events over the limit are rejected (HTTP 429)
    CHARGE = "charge"  # accepted; the overage is billed
    NOTIFY = "notify"  # accepted and flagged; not billed


Policy = Annotated[
    OveragePolicy,
    BeforeValidator(ascii_lower),
    any_case_schema(OveragePolicy),
    reported_as("invalid_policy", f"must be one of {', '.join(p.value for p in OveragePolicy)}"),
]


def _percentage(threshold: Decimal) -> Decimal:
    if not 0 < threshold <= MAX_THRESHOLD_PERCENT:
        raise ValidationError(
            None, f"must be a percentage above 0 and at most {MAX_THRESHOLD_PERCENT}", "invalid_thresholds"
        )
    return threshold


Percentage = Annotated[
    Amount,
    AfterValidator(_percentage),
    WithJsonSchema(
        {
            "description": f"A percentage above 0 and at most {MAX_THRESHOLD_PERCENT}: a JSON number or decimal text",
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_THRESHOLD_PERCENT},
                {"type": "string", "pattern": PERCENT_TEXT_PATTERN},
            ],
        },
        mode="validation",
    ),
]
"""A quota alert threshold: percent of `included`."""


@dataclass(frozen=True)
class PriceTier(JsonShape):
    """Graduated tier over the overage quantity: units up to `up_to` cost `unit_price`.

    `up_to` is cumulative overage units (null = no upper bound, only on the last tier).
    """

    __pydantic_config__: ClassVar[ConfigDict] = closed()

    up_to: Annotated[Amount | None, Field(default=None)]
    unit_price: Amount


def _thresholds_schema(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # it depends on `included`: the description says how
    schema["uniqueItems"] = True  # as JSON values; by value (80 and "80" are one) in words


# `alert_thresholds` only with an `included` quantity to be a percentage of (`PlanMetric._need_a_quota`).
THRESHOLDS_NEED_A_QUOTA: JsonDict = {
    "anyOf": [
        {"required": ["included"], "properties": {"included": {"not": {"type": "null"}}}},
        {"properties": {"alert_thresholds": {"maxItems": 0}}},
    ]
}


@dataclass(frozen=True)
class PlanMetric(JsonShape):
    __pydantic_config__: ClassVar[ConfigDict] = closed(THRESHOLDS_NEED_A_QUOTA)

    metric: Identifier
    included: Annotated[Amount | None, Field(description="The quota per period; null: unlimited")] = None
    policy: Policy = OveragePolicy.CHARGE
    unit_price: Annotated[Amount, Field(description="Per unit of overage when no tiers are given")] = Decimal(0)
    tiers: Annotated[
        tuple[PriceTier, ...],
        Field(description="Graduated prices of the overage: `up_to` increases, only the last tier may be unbounded"),
    ] = ()
    alert_thresholds: Annotated[
        tuple[Percentage, ...],
        Field(
            max_length=MAX_ALERT_THRESHOLDS,
            json_schema_extra=_thresholds_schema,
            description="Percentages of `included` that raise a quota alert, each value once (kept sorted); "
            "default 80 and 100, none without `included`",
        ),
        reported_as("invalid_type", f"must be a list of at most {MAX_ALERT_THRESHOLDS} percentages"),
    ] = DEFAULT_ALERT_THRESHOLDS

    @model_validator(mode="before")
    @classmethod
    def _no_default_thresholds_without_a_quota(cls, data: Any) -> Any:
        if isinstance(data, dict) and "alert_thresholds" not in data and data.get("included") is None:
            return {**data, "alert_thresholds": ()}
        return data

    @field_validator("tiers")
    @classmethod
    def _tiers_increase(cls, tiers: tuple[PriceTier, ...]) -> tuple[PriceTier, ...]:
        previous = Decimal(0)
        for index, tier in enumerate(tiers):
            if tier.up_to is None:
                if index != len(tiers) - 1:
                    raise ValidationError(f"[{index}].up_to", "only the last tier may be unbounded", "invalid_tiers")
            elif tier.up_to <= previous:
                raise ValidationError(f"[{index}].up_to", "tiers must increase", "invalid_tiers")
            else:
                previous = tier.up_to
        return tiers

    @field_validator("alert_thresholds")
    @classmethod
    def _thresholds_once_sorted(cls, thresholds: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        for index, threshold in enumerate(thresholds):
            if threshold in thresholds[:index]:
                raise ValidationError(f"[{index}]", "each threshold may appear once", "invalid_thresholds")
        return tuple(sorted(thresholds))

    @model_validator(mode="after")
    def _need_a_quota(self) -> PlanMetric:
        if self.alert_thresholds and self.included is None:
            raise ValidationError(
                "alert_thresholds", "needs an included quantity to be a percentage of", "invalid_thresholds"
            )
        return self


def _name_of(data: dict[str, Any]) -> Any:
    return data.get("plan_id")


@dataclass(frozen=True)
class Plan(JsonShape):
    __pydantic_config__: ClassVar[ConfigDict] = closed()

    plan_id: Identifier
    name: Annotated[
        str,
        Field(min_length=1, max_length=NAME_MAX_LENGTH, default_factory=_name_of, description="Default: the plan_id"),
        reported_as("invalid_type", f"must be a string of 1-{NAME_MAX_LENGTH} characters"),
    ]
    currency: Annotated[
        str,
        Field(pattern=CURRENCY_PATTERN, description="ISO 4217"),
        reported_as("invalid_currency", "must be a 3-letter ISO 4217 code, e.g. USD"),
    ] = "USD"
    base_fee: Amount = Decimal(0)
    metrics: Annotated[tuple[PlanMetric, ...], Field(description="Each metric once")] = ()
    version: Annotated[
        int, Field(strict=True, description="Assigned by the store: each change makes a new version")
    ] = 0

    @field_validator("metrics")
    @classmethod
    def _each_metric_once(cls, metrics: tuple[PlanMetric, ...]) -> tuple[PlanMetric, ...]:
        names = [m.metric for m in metrics]
        if len(names) != len(set(names)):
            raise ValidationError(None, "each metric may appear once", "duplicate_metric")
        return metrics

    def metric(self, name: str) -> PlanMetric | None:
        for plan_metric in self.metrics:
            if plan_metric.metric == name:
                return plan_metric
        return None


def _absolute_http_url(value: str) -> str | None:
    if value == "":
        return None
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 bracket, "http://[::1"
        raise ValidationError(None, "must be an absolute http:// or https:// URL", "invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(None, "must be an absolute http:// or https:// URL", "invalid_url")
    return value


WebhookUrl = Annotated[
    str,
    Field(
        max_length=MAX_WEBHOOK_URL_LENGTH,
        description='An absolute http:// or https:// URL ("": none)',
    ),
    reported_as("invalid_type", f"must be a URL of at most {MAX_WEBHOOK_URL_LENGTH} characters"),
    AfterValidator(_absolute_http_url),
]
"""Where quota alerts are POSTed; an empty string reads as None."""


@dataclass(frozen=True)
class Tenant(JsonShape):
    __pydantic_config__: ClassVar[ConfigDict] = closed()

    tenant_id: Identifier
    name: Annotated[str, Field(max_length=NAME_MAX_LENGTH), at_most_characters(NAME_MAX_LENGTH)] = ""
    plan_id: Identifier | None = None
    billing_anchor_day: Annotated[
        int,
        Field(ge=1, le=31, strict=True, description="Day of month periods start (clamped to short months)"),
        reported_as("invalid_anchor_day", "must be an integer day of month 1-31"),
    ] = 1
    webhook_url: Annotated[
        WebhookUrl | None, Field(description="Quota alerts go here (else to the node's global URL)")
    ] = None


def parse_plan(data: Any) -> Plan:
    """Plan JSON ({plan_id, name, currency, base_fee, metrics: [...]}) checked by the `Plan` type."""
    return validate(Plan, data)


def parse_tenant(data: Any) -> Tenant:
    """Tenant JSON ({tenant_id, name, plan_id, billing_anchor_day, webhook_url}) checked by the `Tenant` type."""
    return validate(Tenant, data)


def parse_webhook_url(field: str, value: Any) -> str | None:
    """An absolute http(s) URL, or None (for None or ""): a `WebhookUrl` on its own, e.g. the node's."""
    url: str | None = validate(WebhookUrl | None, value, field)
    return url
