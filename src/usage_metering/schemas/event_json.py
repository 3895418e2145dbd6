"""Event JSON (bytes, or already decoded to dicts) to `UsageEvent`s, checked by msgspec.

`EVENT_FIELDS` (event.py) stays the one definition and `parse_event` the
reference. `_WireEvent` states what msgspec can check of it while it decodes,
in C: the field names and their JSON types. The values go through event.py's
own field parsers (identifiers, quantity, timestamp, properties), in the
reference order. Anything msgspec refuses is decoded again by the
reference path (json + `parse_event`), so every error is the reference's,
word for word; tests check that both paths agree on valid and invalid input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

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
from .ids import check_id, uuid7

MAX_EVENT_JSON_BYTES = 64 * 1024  # one event's JSON: an HTTP body, a Kafka record value


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # Identifiers are checked by `check_id` in `_to_event`: a pattern here runs Python's re for every
    # id of every event, while check_id knows the tenants, metrics and users it has seen.
    tenant_id: str
    metric: str
    quantity: Any  # an int, an exact Decimal (float_hook) or text: parse_quantity decides
    user_id: str | None = None
    event_id: str | None = None
    timestamp: str | int | None = None  # text or whole epoch seconds; fractional epochs take the reference path
    properties: dict[str, Any] | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_FAST = msgspec.json.Decoder(_WireEvent, float_hook=Decimal)
# The reference: one decoder for every message (json.loads would build one and sniff the encoding per call).
_REFERENCE = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def decode_event_json(raw: bytes, *, now: datetime, late_window: timedelta = DEFAULT_LATE_WINDOW) -> UsageEvent:
    """One event's JSON (UTF-8 bytes) as a validated event, or raise ValidationError (code `invalid_json`
    when the bytes are not JSON at all, `event_too_large` over MAX_EVENT_JSON_BYTES)."""
    if len(raw) > MAX_EVENT_JSON_BYTES:
        raise ValidationError(None, f"is {len(raw)} bytes; at most {MAX_EVENT_JSON_BYTES}", "event_too_large")
    try:
        wire = _FAST.decode(raw)
    except msgspec.MsgspecError:
        return _reference(raw, now, late_window)
    return _to_event(wire, ValidationContext(now=now, late_window=late_window))


_WIRE_EVENTS = list[_WireEvent]


def parse_events(
    items: Sequence[Any], *, now: datetime, late_window: timedelta = DEFAULT_LATE_WINDOW
) -> list[UsageEvent | ValidationError]:
    """Events as decoded JSON (dicts), each validated or its error, exactly as `parse_event` gives them.

    msgspec checks the whole list in one call; if any item fails there, every item
    is parsed on its own, the refused ones by the reference path.
    """
    ctx = ValidationContext(now=now, late_window=late_window)
    try:
        return [_to_event(wire, ctx) for wire in msgspec.convert(items, _WIRE_EVENTS)]
    except (msgspec.ValidationError, ValidationError):
        return [_parse_one(item, ctx) for item in items]


class _WireEventList(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    events: list[_WireEvent]


_FAST_LIST = msgspec.json.Decoder(_WireEventList | list[_WireEvent], float_hook=Decimal)


def decode_valid_events_json(
    raw: bytes, *, now: datetime, late_window: timedelta = DEFAULT_LATE_WINDOW
) -> list[UsageEvent] | None:
    """`{"events": [...]}` or a bare list of events (UTF-8 JSON) when all of it is valid, else None.

    Decoding and checking in one msgspec pass skips building a dict per event.
    None (not JSON msgspec reads, another shape, an invalid event) means: read it
    the reference way, `json` then `parse_events`, for the exact per-event errors.
    """
    try:
        decoded = _FAST_LIST.decode(raw)
        wires = decoded if isinstance(decoded, list) else decoded.events
        ctx = ValidationContext(now=now, late_window=late_window)
        return [_to_event(wire, ctx) for wire in wires]
    except (msgspec.MsgspecError, ValidationError):
        return None


def _parse_one(item: Any, ctx: ValidationContext) -> UsageEvent | ValidationError:
    try:
        try:
            wire = msgspec.convert(item, _WireEvent)
        except msgspec.ValidationError:
            return parse_event(item, now=ctx.now, late_window=ctx.late_window)
        return _to_event(wire, ctx)
    except ValidationError as error:
        return error


def _to_event(wire: _WireEvent, ctx: ValidationContext) -> UsageEvent:
    """The reference's field parsers in its order (EVENT_FIELDS), so the first error is the reference's."""
    tenant_id = check_id("tenant_id", wire.tenant_id)
    metric = check_id("metric", wire.metric)
    quantity = parse_quantity("quantity", wire.quantity)
    user_id = None if wire.user_id is None else check_id("user_id", wire.user_id)
    event_id = uuid7() if wire.event_id is None else check_id("event_id", wire.event_id)
    assert tenant_id is not None and metric is not None and event_id is not None  # check_id raises instead
    return UsageEvent(
        tenant_id=tenant_id,
        metric=metric,
        quantity=quantity,
        event_id=event_id,
        timestamp=parse_event_timestamp("timestamp", wire.timestamp, ctx),
        user_id=user_id,
        properties=None if wire.properties is None else parse_properties("properties", wire.properties, ctx),
    )


# -- many events in one record ---------------------------------------------------------------

EVENT_BATCH_CONTENT_TYPE = "application/vnd.usage-metering.events+json; version=1"
EVENT_BATCH_VERSION = 1
MAX_EVENT_BATCH_JSON_BYTES = 1024 * 1024  # a whole batch record's value (Kafka's default message limit)


class _WireBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    version: int
    events: list[_WireEvent]


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    version: int
    events: list[msgspec.Raw]


_FAST_BATCH = msgspec.json.Decoder(_WireBatch, float_hook=Decimal)
_RAW_BATCH = msgspec.json.Decoder(_RawBatch)


@dataclass(frozen=True)
class RejectedEvent:
    """An event of a batch that is not valid; the rest of its batch still counts."""

    index: int  # its place in the batch's `events`
    raw: bytes  # its JSON, as sent
    error: ValidationError


def encode_event_batch(encoded_events: Sequence[bytes]) -> bytes:
    """The envelope around events already encoded as JSON: `{"version": 1, "events": [...]}`."""
    return b'{"version":1,"events":[' + b",".join(encoded_events) + b"]}"


def decode_event_batch(
    raw: bytes, *, now: datetime, late_window: timedelta = DEFAULT_LATE_WINDOW
) -> list[UsageEvent | RejectedEvent]:
    """A batch envelope as its events in order, each validated or rejected on its own.

    Raises ValidationError when the envelope itself cannot be read (then no
    event of it counts): `invalid_batch`, `unsupported_version`, `batch_too_large`.
    """
    if len(raw) > MAX_EVENT_BATCH_JSON_BYTES:
        raise ValidationError(None, f"is {len(raw)} bytes; at most {MAX_EVENT_BATCH_JSON_BYTES}", "batch_too_large")
    try:
        batch = _FAST_BATCH.decode(raw)
        if batch.version == EVENT_BATCH_VERSION:
            ctx = ValidationContext(now=now, late_window=late_window)
            return [_to_event(wire, ctx) for wire in batch.events]
    except (msgspec.MsgspecError, ValidationError):
        pass  # some event (or the envelope) is not valid: read them one by one for exact errors
    return _decode_one_by_one(raw, now, late_window)


def _decode_one_by_one(raw: bytes, now: datetime, late_window: timedelta) -> list[UsageEvent | RejectedEvent]:
    try:
        envelope = _RAW_BATCH.decode(raw)
    except msgspec.MsgspecError as exc:
        raise ValidationError(
            None, f'not a batch of events ({{"version": 1, "events": [...]}}): {exc}', "invalid_batch"
        ) from None
    if envelope.version != EVENT_BATCH_VERSION:
        raise ValidationError(
            "version", f"is {envelope.version}; only version {EVENT_BATCH_VERSION} is read", "unsupported_version"
        )
    decoded: list[UsageEvent | RejectedEvent] = []
    for index, item in enumerate(envelope.events):
        event_raw = bytes(item)
        try:
            decoded.append(decode_event_json(event_raw, now=now, late_window=late_window))
        except ValidationError as error:
            decoded.append(RejectedEvent(index, event_raw, error))
    return decoded


def _reference(raw: bytes, now: datetime, late_window: timedelta) -> UsageEvent:
    try:
        data = _REFERENCE.decode(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValidationError(None, f"not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise ValidationError(None, "an event must be a JSON object", "invalid_type")
    return parse_event(data, now=now, late_window=late_window)
