"""The usage event: its one definition, parsing and validation.

`EVENT_FIELDS` is the single definition of the event format. Validation walks
it, and the checked-in JSON Schema (`event.schema.json`) is generated from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from .errors import ValidationError
from .ids import ID_MAX_LENGTH, ID_PATTERN, check_id, uuid7
from .money import DECIMAL_TEXT_PATTERN, check_scale, exact_decimal

EVENT_SCHEMA_VERSION = 1
QUANTITY_MAX_SCALE = 9  # fractional digits stored exactly (DECIMAL(38, 9))
QUANTITY_MAX = Decimal(10) ** 18  # 27 significant digits: exact in Python's default context
PROPERTIES_MAX_BYTES = 8 * 1024
MAX_FUTURE_SKEW = timedelta(minutes=5)
DEFAULT_LATE_WINDOW = timedelta(days=35)


class UsageEvent(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A validated event. `timestamp` is timezone-aware UTC.

    A frozen msgspec Struct rather than a frozen dataclass: one is built per
    event on every ingest path, and a frozen dataclass sets each field through
    object.__setattr__ (bench/README.md has the measured cost).
    """

    tenant_id: str
    metric: str
    quantity: Decimal
    event_id: str
    timestamp: datetime
    user_id: str | None = None
    properties: dict[str, Any] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form: quantity as an exact decimal string, RFC 3339 UTC time."""
        data: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "metric": self.metric,
            "quantity": format_decimal(self.quantity),
            "event_id": self.event_id,
            "timestamp": format_timestamp(self.timestamp),
        }
        if self.user_id is not None:
            data["user_id"] = self.user_id
        if self.properties is not None:
            data["properties"] = self.properties
        return data


@dataclass(frozen=True)
class ValidationContext:
    now: datetime
    late_window: timedelta = DEFAULT_LATE_WINDOW
    latest: datetime = field(init=False)  # the newest timestamp accepted
    earliest: datetime = field(init=False)  # the oldest timestamp accepted

    def __post_init__(self) -> None:
        object.__setattr__(self, "latest", self.now + MAX_FUTURE_SKEW)
        object.__setattr__(self, "earliest", self.now - self.late_window)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    required: bool
    json_schema: dict[str, Any]
    parse: Callable[[str, Any, ValidationContext], Any] = field(repr=False)


def format_decimal(value: Decimal) -> str:
    """Plain (non-exponent) decimal text without trailing fractional zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


_JSON = msgspec.json.Encoder()


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with `Z`; microseconds only when there are some.

    msgspec writes exactly that for an aware UTC datetime, in C: it is on every
    event's wire form, where an aware `isoformat()` would cost more than the rest.
    """
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return _JSON.encode(value)[1:-1].decode("ascii")


_WHOLE_TEXT_MAX_DIGITS = 18  # below QUANTITY_MAX
_QUANTITY_MAX_INT = int(QUANTITY_MAX)
# Decimal text the general path would accept as it is: below QUANTITY_MAX, at most QUANTITY_MAX_SCALE
# fractional digits, no sign, and at most 27 digits, which Python's default context keeps exactly.
_PLAIN_DECIMAL_TEXT = re.compile(r"[0-9]{1,18}\.[0-9]{1,9}\Z")


def parse_quantity(name: str, value: Any, _ctx: ValidationContext | None = None) -> Decimal:
    """Exact decimal from a JSON number (ideally parsed as Decimal) or decimal string."""
    if value is None:
        raise ValidationError(name, "is required", "missing_field")
    # The common cases first, giving what the general path gives without all of its checks.
    kind = type(value)
    if kind is str:
        if len(value) <= _WHOLE_TEXT_MAX_DIGITS and value.isascii() and value.isdigit():
            return Decimal(int(value))
        if _PLAIN_DECIMAL_TEXT.match(value):
            return Decimal(value)
    elif kind is int:
        if 0 <= value < _QUANTITY_MAX_INT:
            return Decimal(value)
    elif kind is Decimal and (
        value.is_finite() and 0 <= value < QUANTITY_MAX and value.as_tuple().exponent >= -QUANTITY_MAX_SCALE
    ):
        exact: Decimal = value + 0  # -0 becomes 0 (`value` is Any; `kind` checked its type)
        return exact
    return _parse_quantity_generally(name, value)


def _parse_quantity_generally(name: str, value: Any) -> Decimal:
    whole = type(value) is int  # the common case (not bool): exact, no fractional digits to check
    quantity = Decimal(value) if whole else exact_decimal(name, value, "invalid_quantity")
    if not quantity.is_finite():
        raise ValidationError(name, "must be finite", "invalid_quantity")
    if quantity < 0:
        raise ValidationError(name, "must be >= 0", "invalid_quantity")
    if quantity >= QUANTITY_MAX:
        raise ValidationError(name, f"must be < {QUANTITY_MAX:f}", "invalid_quantity")
    if whole:
        return quantity
    return check_scale(name, quantity, QUANTITY_MAX_SCALE, "invalid_quantity") + 0  # -0 becomes 0


_UTC_TEXT_ENDS = ("Z", "0")  # "...Z" or "...+00:00"; another offset ending in 0 takes the general path after


def parse_timestamp_value(name: str, value: Any) -> datetime:
    """RFC 3339 text with an offset, or epoch seconds; returned in UTC."""
    if isinstance(value, bool):
        raise ValidationError(name, "must be RFC 3339 text or epoch seconds", "invalid_type")
    if isinstance(value, (int, float, Decimal)):
        try:
            seconds = Decimal(repr(value) if isinstance(value, float) else value)
            if seconds.adjusted() > 12:  # past year 9999 anyway; int() of 1e999999999 would take minutes
                raise OverflowError
            whole = int(seconds)
            micros = int((seconds - whole) * 1_000_000)
            return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=whole, microseconds=micros)
        except (InvalidOperation, ValueError, OverflowError):
            raise ValidationError(name, "epoch seconds out of range", "invalid_timestamp") from None
    if not isinstance(value, str):
        raise ValidationError(name, "must be RFC 3339 text or epoch seconds", "invalid_type")
    if value[:1].isdigit() and value[-1:] in _UTC_TEXT_ENDS:  # UTC text, the common case: no strip or shift
        try:
            parsed = datetime.fromisoformat(value)  # "...Z" and "...+00:00" parse as UTC (Python 3.11+)
        except ValueError:
            parsed = None  # the general path below gives the error
        if parsed is not None and parsed.tzinfo is timezone.utc:
            return parsed
    return _parse_timestamp_text_generally(name, value)


def _parse_timestamp_text_generally(name: str, value: str) -> datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(name, f"{value!r} is not an RFC 3339 timestamp", "invalid_timestamp") from None
    if parsed.tzinfo is None:
        raise ValidationError(name, "must include a UTC offset, e.g. 'Z'", "invalid_timestamp")
    return parsed.astimezone(timezone.utc)


def parse_event_timestamp(name: str, value: Any, ctx: ValidationContext) -> datetime:
    if value is None:
        return ctx.now
    timestamp = parse_timestamp_value(name, value)
    if timestamp > ctx.latest:
        raise ValidationError(name, "is more than 5 minutes in the future", "timestamp_in_future")
    if timestamp < ctx.earliest:
        days = ctx.late_window.total_seconds() / 86400
        raise ValidationError(name, f"is older than the late-arrival window ({days:g} days)", "timestamp_too_old")
    return timestamp


def _json_number(value: Any) -> float | int:
    """Numbers in properties parsed as Decimal (exact JSON parsing) are stored as JSON numbers."""
    if isinstance(value, Decimal):
        # int() of 1e999999999 would take minutes; past 4300 digits json.dumps refuses ints anyway (-> float, inf)
        return int(value) if value == value.to_integral_value() and value.adjusted() < 4300 else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def parse_properties(name: str, value: Any, _ctx: ValidationContext) -> dict[str, Any] | None:
    """A JSON-only copy of the properties object (so later changes by the caller don't leak in)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(name, "must be an object", "invalid_type")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_number)
        size = len(text.encode())  # a lone surrogate ("\ud800") is not UTF-8: refused here
    except (TypeError, ValueError) as exc:
        raise ValidationError(name, f"must hold only JSON values: {exc}", "invalid_properties") from None
    if size > PROPERTIES_MAX_BYTES:
        raise ValidationError(name, f"is {size} bytes; at most 8 KiB", "properties_too_large")
    copied: dict[str, Any] = json.loads(text)
    return copied


def _parse_required_id(name: str, value: Any, _ctx: ValidationContext) -> str | None:
    return check_id(name, value, required=True)


def _parse_optional_id(name: str, value: Any, _ctx: ValidationContext) -> str | None:
    return None if value is None else check_id(name, value, required=False)


def _id_field(name: str, required: bool, description: str) -> FieldSpec:
    return FieldSpec(
        name,
        required,
        {"type": "string", "pattern": ID_PATTERN, "maxLength": ID_MAX_LENGTH, "description": description},
        _parse_required_id if required else _parse_optional_id,
    )


EVENT_FIELDS: tuple[FieldSpec, ...] = (
    _id_field("tenant_id", True, "The customer (tenant) the usage is billed to."),
    _id_field("metric", True, "What was used, e.g. api_calls or storage_gb."),
    FieldSpec(
        "quantity",
        True,
        {
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DECIMAL_TEXT_PATTERN},
            ],
            "description": "How much was used: a finite number >= 0, parsed exactly "
            f"(at most {QUANTITY_MAX_SCALE} fractional digits).",
        },
        parse_quantity,
    ),
    _id_field("user_id", False, "The tenant's end user, for top-user lists and unique counts."),
    _id_field("event_id", False, "Idempotency key, unique per tenant; a UUIDv7 is generated when absent."),
    FieldSpec(
        "timestamp",
        False,
        {
            "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "When the usage happened: RFC 3339 or epoch seconds; default now (UTC). "
            "At most 5 minutes in the future, not older than the late-arrival window.",
        },
        parse_event_timestamp,
    ),
    FieldSpec(
        "properties",
        False,
        {"type": "object", "description": "Free-form attributes, at most 8 KiB as JSON."},
        parse_properties,
    ),
)
_FIELD_NAMES = frozenset(spec.name for spec in EVENT_FIELDS)
_PARSERS = tuple((spec.name, spec.parse) for spec in EVENT_FIELDS)  # looked up once, not per event


def parse_event(
    data: Mapping[str, Any],
    *,
    now: datetime | None = None,
    late_window: timedelta = DEFAULT_LATE_WINDOW,
) -> UsageEvent:
    """Validate raw event JSON (as a dict) into a `UsageEvent`, or raise ValidationError."""
    if type(data) is not dict and not isinstance(data, Mapping):  # the exact type first: the ABC check is slow
        raise ValidationError(None, "an event must be a JSON object", "invalid_type")
    if not _FIELD_NAMES.issuperset(data):
        unknown = next(key for key in data if key not in _FIELD_NAMES)
        raise ValidationError(str(unknown), "is not a known event field", "unknown_field")
    ctx = ValidationContext(now=now or datetime.now(timezone.utc), late_window=late_window)
    get = data.get
    values = {name: parse(name, get(name), ctx) for name, parse in _PARSERS}
    if values["event_id"] is None:
        values["event_id"] = uuid7()
    return UsageEvent(**values)


def event_json_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "usage-metering/event.schema.json",
        "title": "UsageEvent",
        "description": f"A usage event (schema version {EVENT_SCHEMA_VERSION}).",
        "type": "object",
        "additionalProperties": False,
        "required": [spec.name for spec in EVENT_FIELDS if spec.required],
        "properties": {spec.name: spec.json_schema for spec in EVENT_FIELDS},
    }
