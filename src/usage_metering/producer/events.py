"""Building, validating and encoding events on the client side.

Validation uses the field parsers of the service's `parse_event`, so a bad event fails at
`record()` in the caller's code instead of landing in a dead-letter table. The
event id is fixed here, before the first send attempt: every retry carries the
same id and the service counts it once.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping

from usage_metering.schemas import (
    UsageEvent,
    ValidationError,
    check_id,
    format_decimal,
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
        timestamp=now if ctx is None or timestamp is None else parse_event_timestamp(
            "timestamp", _timestamp_value(timestamp), ctx),
        properties=None if ctx is None or properties is None else parse_properties(
            "properties", dict(properties) if isinstance(properties, Mapping) else properties, ctx),
    )


def encode_event(event: UsageEvent) -> bytes:
    """Compact UTF-8 JSON of the wire form, for a validated event.

    Identifiers are written without escaping: the ID rule admits none of the
    characters JSON escapes. Properties (already plain JSON) go through json.
    """
    text = (
        f'{{"tenant_id":"{event.tenant_id}","metric":"{event.metric}",'
        f'"quantity":"{format_decimal(event.quantity)}","event_id":"{event.event_id}",'
        f'"timestamp":"{format_timestamp(event.timestamp)}"'
    )
    if event.user_id is not None:
        text += f',"user_id":"{event.user_id}"'
    if event.properties is not None:
        text += ',"properties":' + json.dumps(event.properties, separators=(",", ":"), ensure_ascii=False)
    return (text + "}").encode("utf-8")


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
