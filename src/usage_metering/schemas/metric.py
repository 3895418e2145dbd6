"""Metric definitions: how a metric's events aggregate into one usage value.

`MetricDefinition` is the library's value, its JSON shape in the OpenAPI
document and the validation of input (`parse_metric_definition`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, ConfigDict, Field

from .validation import closed, reported_as, validate
from .wire import Identifier, JsonShape, any_case_schema, ascii_upper, at_most_characters

UNIT_MAX_LENGTH = 32
DESCRIPTION_MAX_LENGTH = 500


class Aggregation(str, Enum):
    SUM = "SUM"  # total quantity (the default for undefined metrics)
    COUNT = "COUNT"  # number of events
    MAX = "MAX"  # largest quantity seen
    UNIQUE_COUNT = "UNIQUE_COUNT"  # distinct user_id values
    LATEST = "LATEST"  # quantity of the event with the latest timestamp


AggregationName = Annotated[
    Aggregation,
    BeforeValidator(ascii_upper),
    any_case_schema(Aggregation),
    reported_as("invalid_aggregation", f"must be one of {', '.join(a.value for a in Aggregation)}"),
]


@dataclass(frozen=True)
class MetricDefinition(JsonShape):
    __pydantic_config__: ClassVar[ConfigDict] = closed()

    name: Identifier
    aggregation: AggregationName = Aggregation.SUM
    unit: Annotated[str, Field(max_length=UNIT_MAX_LENGTH), at_most_characters(UNIT_MAX_LENGTH)] = ""
    description: Annotated[
        str, Field(max_length=DESCRIPTION_MAX_LENGTH), at_most_characters(DESCRIPTION_MAX_LENGTH)
    ] = ""


def parse_metric_definition(data: Any) -> MetricDefinition:
    """Metric JSON ({name, aggregation, unit, description}) checked by the `MetricDefinition` type."""
    return validate(MetricDefinition, data)
