"""Event, metric and plan formats: one definition each, with validation."""

from .aggregate import AggregateState, UsageTotals
from .errors import NotFoundError, ValidationError
from .event import (
    DEFAULT_LATE_WINDOW,
    EVENT_SCHEMA_VERSION,
    UsageEvent,
    event_json_schema,
    format_decimal,
    format_timestamp,
    parse_event,
    parse_quantity,
    parse_timestamp_value,
)
from .ids import check_id, uuid7
from .metric import Aggregation, MetricDefinition, parse_metric_definition
from .money import check_amount
from .periods import Period, parse_period_label, period_containing, period_starting_in, previous_period
from .plan import (
    OveragePolicy,
    Plan,
    PlanMetric,
    PriceTier,
    Tenant,
    parse_plan,
    parse_tenant,
)
from .status import ErrorDetail, EventResult, EventStatus, batch_summary
from .validation import validate

__all__ = [
    "DEFAULT_LATE_WINDOW",
    "EVENT_SCHEMA_VERSION",
    "AggregateState",
    "Aggregation",
    "ErrorDetail",
    "EventResult",
    "EventStatus",
    "MetricDefinition",
    "NotFoundError",
    "OveragePolicy",
    "Period",
    "Plan",
    "PlanMetric",
    "PriceTier",
    "Tenant",
    "UsageEvent",
    "UsageTotals",
    "ValidationError",
    "batch_summary",
    "check_amount",
    "check_id",
    "event_json_schema",
    "format_decimal",
    "format_timestamp",
    "parse_event",
    "parse_metric_definition",
    "parse_period_label",
    "parse_plan",
    "parse_quantity",
    "parse_tenant",
    "parse_timestamp_value",
    "period_containing",
    "period_starting_in",
    "previous_period",
    "uuid7",
    "validate",
]
