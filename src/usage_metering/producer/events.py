"""Building, validating and encoding events on the client side.

Validation uses the same `parse_event` as the service, so a bad event fails at
`record()` in the caller's code instead of landing in a dead-letter table. The
event id is fixed here, before the first send attempt: every retry carries the
same id and the service counts it once.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from usage_metering.schemas import (
    UsageEvent,
    ValidationError,
    format_timestamp,
    parse_event,
)

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
    """Validate the arguments into a `UsageEvent` (with a UUIDv7 id if none given)."""
    data: dict[str, Any] = {"tenant_id": tenant_id, "metric": metric, "quantity": quantity}
    if user_id is not None:
        data["user_id"] = user_id
    if event_id is not None:
        data["event_id"] = event_id
    if timestamp is not None:
        data["timestamp"] = _timestamp_value(timestamp)
    if properties is not None:
        data["properties"] = dict(properties) if isinstance(properties, Mapping) else properties
    return parse_event(data)


def encode_event(event: UsageEvent) -> bytes:
    """Compact UTF-8 JSON of the wire form (parse_event already made properties plain JSON)."""
    return json.dumps(event.to_json_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _timestamp_value(value: Timestamp) -> Any:
    """parse_event takes RFC 3339 text or epoch seconds; datetimes must be aware."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError("timestamp", "must be timezone-aware (UTC)", "invalid_timestamp")
        return format_timestamp(value)
    return value
