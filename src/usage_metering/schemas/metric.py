"""Metric definitions: how a metric's events aggregate into one usage value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import ValidationError
from .ids import check_id
from .wire import Identifier, JsonShape


class Aggregation(str, Enum):
    SUM = "SUM"  # total quantity (the default for undefined metrics)
    COUNT = "COUNT"  # number of events
    MAX = "MAX"  # largest quantity seen
    UNIQUE_COUNT = "UNIQUE_COUNT"  # distinct user_id values
    LATEST = "LATEST"  # quantity of the event with the latest timestamp


@dataclass(frozen=True)
class MetricDefinition(JsonShape):
    name: Identifier
    aggregation: Aggregation = Aggregation.SUM
    unit: str = ""
    description: str = ""


def parse_aggregation(field: str, value: Any) -> Aggregation:
    if value is None:
        return Aggregation.SUM
    try:
        return Aggregation(str(value).upper())
    except ValueError:
        allowed = ", ".join(a.value for a in Aggregation)
        raise ValidationError(field, f"must be one of {allowed}", "invalid_aggregation") from None


def _text(field: str, value: Any, max_length: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise ValidationError(field, f"must be a string of at most {max_length} characters", "invalid_type")
    return value


def parse_metric_definition(data: Mapping[str, Any]) -> MetricDefinition:
    if not isinstance(data, Mapping):
        raise ValidationError(None, "a metric definition must be a JSON object", "invalid_type")
    unknown = set(data) - {"name", "aggregation", "unit", "description"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "is not a known metric field", "unknown_field")
    return MetricDefinition(
        name=check_id("name", data.get("name")) or "",
        aggregation=parse_aggregation("aggregation", data.get("aggregation")),
        unit=_text("unit", data.get("unit"), 32),
        description=_text("description", data.get("description"), 500),
    )
