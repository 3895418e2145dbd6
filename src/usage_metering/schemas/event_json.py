"""Event JSON bytes to a `UsageEvent`, decoded by msgspec.

`EVENT_FIELDS` (event.py) stays the one definition and `parse_event` the
reference. `_WireEvent` states what msgspec can check of it while it decodes,
in C: the field names, their JSON types, the identifier rule. The rest runs
through event.py's own field parsers (quantity, timestamp, properties), in
the reference order. Anything msgspec refuses is decoded again by the
reference path (json + `parse_event`), so every error is the reference's,
word for word; tests check that both paths agree on valid and invalid input.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from .errors import ValidationError
from .event import (
    DEFAULT_LATE_WINDOW,
    UsageEvent,
    ValidationContext,
    parse_event,
    parse_event_timestamp,
    parse_properties,
    parse_quantity,
)
from .ids import ID_FULL_PATTERN, ID_MAX_LENGTH, uuid7

_Identifier = Annotated[str, msgspec.Meta(pattern=ID_FULL_PATTERN, max_length=ID_MAX_LENGTH)]


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    tenant_id: _Identifier
    metric: _Identifier
    quantity: Any  # an int, an exact Decimal (float_hook) or text: parse_quantity decides
    user_id: _Identifier | None = None
    event_id: _Identifier | None = None
    timestamp: str | int | None = None  # text or whole epoch seconds; fractional epochs take the reference path
    properties: dict[str, Any] | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_FAST = msgspec.json.Decoder(_WireEvent, float_hook=Decimal)
# The reference: one decoder for every message (json.loads would build one and sniff the encoding per call).
_REFERENCE = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def decode_event_json(raw: bytes, *, now: datetime, late_window: timedelta = DEFAULT_LATE_WINDOW) -> UsageEvent:
    """One event's JSON (UTF-8 bytes) as a validated event, or raise ValidationError (code `invalid_json`
    when the bytes are not JSON at all)."""
    try:
        wire = _FAST.decode(raw)
    except msgspec.MsgspecError:
        return _reference(raw, now, late_window)
    ctx = ValidationContext(now=now, late_window=late_window)
    return UsageEvent(
        tenant_id=wire.tenant_id,
        metric=wire.metric,
        quantity=parse_quantity("quantity", wire.quantity),
        event_id=wire.event_id or uuid7(),
        timestamp=parse_event_timestamp("timestamp", wire.timestamp, ctx),
        user_id=wire.user_id,
        properties=None if wire.properties is None else parse_properties("properties", wire.properties, ctx),
    )


def _reference(raw: bytes, now: datetime, late_window: timedelta) -> UsageEvent:
    try:
        data = _REFERENCE.decode(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValidationError(None, f"not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise ValidationError(None, "an event must be a JSON object", "invalid_type")
    return parse_event(data, now=now, late_window=late_window)
