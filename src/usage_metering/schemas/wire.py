"""JSON shapes from types: the library's result dataclasses are what the HTTP API sends.

Field types annotated here say how a value is written (exact decimals as
text, UTC timestamps with `Z`, money with its minor units) and read back.
pydantic serialises and validates the dataclasses through these annotations,
so one definition gives the HTTP response, the OpenAPI schema and what
`MeteringClient` decodes, and the three cannot drift apart. The configuration
types (plans, tenants, metrics, API key requests) are read the same way: what
their schema allows is what `validation.validate` accepts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, PlainSerializer, PlainValidator, WithJsonSchema

from .event import format_decimal, format_timestamp
from .ids import ID_MAX_LENGTH, ID_MESSAGE, ID_PATTERN
from .money import AMOUNT_MAX, AMOUNT_TEXT_PATTERN, DECIMAL_TEXT_PATTERN, MONEY_MAX_SCALE, check_amount
from .validation import adapter as adapter  # re-exported: the one cache of adapters
from .validation import reported_as

T = TypeVar("T")

MONEY_TEXT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def format_money(amount: Decimal) -> str:
    """A billed amount as text with its minor units kept ("49.00"); amounts come from round_money."""
    return format(amount, "f")


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


DECIMAL_TEXT_OUT = WithJsonSchema(
    {"type": "string", "pattern": DECIMAL_TEXT_PATTERN, "description": "An exact decimal >= 0, as text"},
    mode="serialization",
)

DecimalText = Annotated[
    Decimal,
    PlainSerializer(format_decimal, return_type=str),
    DECIMAL_TEXT_OUT,
    WithJsonSchema(
        {
            "description": "A finite decimal >= 0: a JSON number or decimal text",
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DECIMAL_TEXT_PATTERN}],
        },
        mode="validation",
    ),
]
"""An exact decimal >= 0; written as plain text without trailing zeros ("12.5")."""

Amount = Annotated[
    Decimal,
    PlainValidator(check_amount),
    PlainSerializer(format_decimal, return_type=str),
    DECIMAL_TEXT_OUT,
    WithJsonSchema(
        {
            "description": f"A decimal >= 0 and < 10^{AMOUNT_MAX.adjusted()} with at most {MONEY_MAX_SCALE} "
            "fractional digits (trailing zeros aside): a JSON number or decimal text",
            "anyOf": [
                {"type": "number", "minimum": 0, "exclusiveMaximum": int(AMOUNT_MAX)},
                {"type": "string", "pattern": AMOUNT_TEXT_PATTERN},
            ],
        },
        mode="validation",
    ),
]
"""Configured money and quantities (prices, fees, quotas, tier bounds): written as DecimalText, read by `check_amount`.

JSON Schema cannot bound a number's fractional digits (`multipleOf` 1e-9 fails on binary floats), so that
rule is in the description only for numbers; the text pattern is exact.
"""

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

Identifier = Annotated[
    str,
    Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH),
    reported_as("invalid_id", ID_MESSAGE, string_type=("invalid_type", "must be a string")),
]


def at_most_characters(max_length: int) -> Any:
    """`Annotated[str, Field(max_length=n), at_most_characters(n)]`: a name, a unit, a description."""
    return reported_as("invalid_type", f"must be a string of at most {max_length} characters")


def ascii_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) and value.isascii() else value


def ascii_upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) and value.isascii() else value


def any_case_schema(choices: type[Enum]) -> WithJsonSchema:
    """The validation JSON Schema of an enum read in any ASCII case (`ascii_lower`/`ascii_upper` first): a pattern."""
    values = [member.value for member in choices]
    spelled = ("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in value) for value in values)
    return WithJsonSchema(
        {"type": "string", "pattern": f"^(?:{'|'.join(spelled)})$", "description": f"{', '.join(values)}, any case"},
        mode="validation",
    )


OMITTED_WHEN_NONE = Field(exclude_if=lambda value: value is None)
"""`Annotated[X | None, OMITTED_WHEN_NONE] = None`: left out of the JSON when None, not sent as null."""


def to_json_data(value: Any, shape: Any = None) -> Any:
    """`value` as JSON-ready data (dicts, lists, strings), by its type (or `shape`, e.g. list[Plan])."""
    return adapter(shape if shape is not None else type(value)).dump_python(value, mode="json", by_alias=True)


def from_json_data(shape: type[T] | Any, data: Any) -> T:
    """Read a JSON shape (parsed data or raw bytes) back into its type."""
    if isinstance(data, (bytes, str)):
        value: T = adapter(shape).validate_json(data, by_alias=True)
    else:
        value = adapter(shape).validate_python(data, by_alias=True)
    return value


class JsonShape:
    """Base of the result dataclasses: their JSON shape is their type (see this module)."""

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json_data(self)
        return data
