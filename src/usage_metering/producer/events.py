"""Building, validating and encoding events on the client side.

Validation uses the field parsers of the service's `parse_event`, so a bad event fails at
`record()` in the caller's code instead of landing in a dead-letter table. The
event id is fixed here, before the first send attempt: every retry carries the
same id and the service counts it once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import msgspec

from usage_metering.schemas import (
    UsageEvent,
    ValidationError,
    check_id,
    format_timestamp,
    parse_quantity,
    uuid7,
)
from usage_metering.schemas.event import ValidationContext, parse_event_timestamp, parse_properties

Quantity = Decimal | int | str
Timestamp = datetime | str | int | Decimal


def build_event(
    tenant_id: str,
    metric: str,
    quantity: Quantity,
    *,
    user_id: str | None = None,
    event_id: str | None = None,
    timestamp: Timestamp | None = None,
    properties: Mapping[str, Any] | None = None,
) -> UsageEvent:
    """Validate the arguments into a `UsageEvent` (with a UUIDv7 id if none given).

    The field parsers of `parse_event`, in its order, called directly: `record()`
    is the producer's hot path, and building and walking a dict per event cost
    more than the checks themselves.
    """
    now = datetime.now(timezone.utc)
    ctx = ValidationContext(now=now) if timestamp is not None or properties is not None else None
    return UsageEvent(
        tenant_id=_required_id("tenant_id", tenant_id),
        metric=_required_id("metric", metric),
        quantity=parse_quantity("quantity", quantity),
        user_id=None if user_id is None else check_id("user_id", user_id),
        event_id=uuid7() if event_id is None else _required_id("event_id", event_id),
        timestamp=now
        if ctx is None or timestamp is None
        else parse_event_timestamp("timestamp", _timestamp_value(timestamp), ctx),
        properties=None
        if ctx is None or properties is None
        else parse_properties("properties", dict(properties) if isinstance(properties, Mapping) else properties, ctx),
    )


_WIRE_JSON = msgspec.json.Encoder()


def encode_event(event: UsageEvent) -> bytes:
    """Compact UTF-8 JSON of the wire form (`UsageEvent.to_json_dict`), for a validated event.

    msgspec writes the struct in C, in the wire form's field order, where that gives the
    same text: no properties, a UTC timestamp (written with `Z`), and a quantity whose
    str() is already `format_decimal`'s text (msgspec writes str(), which may say 1E+3 or 2.500).
    Anything else goes through `to_json_dict` and json.
    """
    if event.properties is None and event.timestamp.tzinfo is timezone.utc and _plain(str(event.quantity)):
        return _WIRE_JSON.encode(event)
    return json.dumps(event.to_json_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _plain(decimal_text: str) -> bool:
    """No exponent, and no trailing fractional zero."""
    return "E" not in decimal_text and not ("." in decimal_text and decimal_text[-1] == "0")


def _required_id(field: str, value: object) -> str:
    checked = check_id(field, value)
    assert checked is not None  # check_id raises for a missing required id
    return checked


def _timestamp_value(value: Timestamp) -> Any:
    """parse_event takes RFC 3339 text or epoch seconds; datetimes must be aware."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError("timestamp", "must be timezone-aware (UTC)", "invalid_timestamp")
        return format_timestamp(value)
    return value
