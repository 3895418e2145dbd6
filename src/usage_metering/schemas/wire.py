"""JSON shapes from types: the library's result dataclasses are what the HTTP API sends.

Field types annotated here say how a value is written (exact decimals as
text, UTC timestamps with `Z`, money with its minor units) and read back.
pydantic serialises and validates the dataclasses through these annotations,
so one definition gives the HTTP response, the OpenAPI schema and what
`MeteringClient` decodes, and the three cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, PlainSerializer, TypeAdapter, WithJsonSchema

from .event import format_decimal, format_timestamp
from .ids import ID_PATTERN
from .money import DECIMAL_TEXT_PATTERN

T = TypeVar("T")

MONEY_TEXT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def format_money(amount: Decimal) -> str:
    """A billed amount as text with its minor units kept ("49.00"); amounts come from round_money."""
    return format(amount, "f")


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


DecimalText = Annotated[
    Decimal,
    PlainSerializer(format_decimal, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DECIMAL_TEXT_PATTERN, "description": "An exact decimal >= 0, as text"},
        mode="serialization",
    ),
    WithJsonSchema(
        {
            "description": "A finite decimal >= 0: a JSON number or decimal text",
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DECIMAL_TEXT_PATTERN}],
        },
        mode="validation",
    ),
]
"""An exact decimal >= 0; written as plain text without trailing zeros ("12.5")."""

Money = Annotated[
    Decimal,
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": MONEY_TEXT_PATTERN, "description": "An amount with its minor units"}),
]
"""A billed amount, already rounded to its currency: written with its minor units ("49.00")."""

Timestamp = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(format_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "RFC 3339, UTC (`Z`)"}),
]
"""An aware UTC datetime, written as RFC 3339 with `Z`."""

Identifier = Annotated[str, Field(pattern=ID_PATTERN, max_length=128)]

OMITTED_WHEN_NONE = Field(exclude_if=lambda value: value is None)
"""`Annotated[X | None, OMITTED_WHEN_NONE] = None`: left out of the JSON when None, not sent as null."""


@cache
def adapter(shape: Any) -> TypeAdapter[Any]:
    """The (cached) pydantic adapter of a type: building one takes milliseconds, using it microseconds."""
    return TypeAdapter(shape)


def to_json_data(value: Any, shape: Any = None) -> Any:
    """`value` as JSON-ready data (dicts, lists, strings), by its type (or `shape`, e.g. list[Plan])."""
    return adapter(shape if shape is not None else type(value)).dump_python(value, mode="json", by_alias=True)


def from_json_data(shape: type[T] | Any, data: Any) -> T:
    """Read a JSON shape (parsed data or raw bytes) back into its type."""
    if isinstance(data, (bytes, str)):
        return adapter(shape).validate_json(data, by_alias=True)
    return adapter(shape).validate_python(data, by_alias=True)


class JsonShape:
    """Base of the result dataclasses: their JSON shape is their type (see this module)."""

    def to_json_dict(self) -> dict[str, Any]:
        return to_json_data(self)
