"""The msgspec event decoder agrees with the reference (json + parse_event) on every input: same event, or
the same error word for word."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_metering.schemas import UsageEvent, ValidationError, check_id
from usage_metering.client import exact_json
from usage_metering.schemas.event_json import (
    RejectedEvent,
    _reference,
    decode_event_batch,
    decode_event_json,
    decode_valid_events_json,
    encode_event_batch,
    parse_events,
)
from usage_metering.schemas.event import parse_event

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

ids = st.one_of(
    st.sampled_from(["acme", "tenant_acme", "a.b:c@d-e_f", "x" * 128, "x" * 129, "", "a b", "acme\n", "é", "\u0000"]),
    st.text(min_size=0, max_size=6),
    st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=1),
)
quantities = st.one_of(
    st.integers(min_value=-5, max_value=10**19),
    st.sampled_from(["1", "1.5", "0.000000001", "0.0000000001", "1e3", " 1", "-1", "NaN", "1_000", "", "12.50",
                     "1000000000000000000", "999999999999999999.999999999"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(lambda d: Decimal(str(d))),
    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(), st.lists(st.integers(), max_size=1),
)
timestamps = st.one_of(
    st.none(),
    st.sampled_from([
        "2026-12-01T11:00:00Z", "2026-12-01T11:00:00z", "2026-12-01t11:00:00Z", "2026-12-01T11:00:00+02:00",
        "2026-12-01 11:00:00Z", "2026-12-01T11:00:00", "2026-12-01T11:00:00.123456789Z", "2026-12-01",
        "2026-12-01T12:10:00Z", "2026-10-01T11:00:00Z", "not a time", "2026-12-01T11:00:00.5+00:00",
        "20261201T110000Z", " 2026-12-01T11:00:00Z",
    ]),
    st.integers(min_value=1_760_000_000, max_value=1_770_000_000),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)
properties = st.one_of(
    st.none(), st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.text(max_size=5),
                                                               st.decimals(allow_nan=False, allow_infinity=False)),
                               max_size=3),
    st.lists(st.integers(), max_size=1), st.text(max_size=3),
)
FIELDS = {"tenant_id": ids, "metric": ids, "quantity": quantities, "user_id": ids, "event_id": ids,
          "timestamp": timestamps, "properties": properties, "colour": st.text(max_size=3)}


def outcome(decode: Any, raw: bytes) -> Any:
    try:
        event = decode(raw)
    except ValidationError as error:
        return ("error", error.field, error.code, error.message)
    return event


def same(fast: Any, reference: Any, given_id: bool) -> None:
    if isinstance(fast, UsageEvent) and isinstance(reference, UsageEvent) and not given_id:
        fast, reference = msgspec.structs.replace(fast, event_id="generated"), msgspec.structs.replace(reference, event_id="generated")
    assert fast == reference


@pytest.mark.integration
@settings(max_examples=3000, deadline=None)
@given(st.fixed_dictionaries({}, optional=FIELDS))
def test_the_fast_decoder_agrees_with_the_reference(event: dict[str, Any]) -> None:
    raw = exact_json(event).encode()
    fast = outcome(lambda r: decode_event_json(r, now=NOW), raw)
    reference = outcome(lambda r: _reference(r, NOW, timedelta(days=35)), raw)
    same(fast, reference, given_id=isinstance(event.get("event_id"), str))


@pytest.mark.unit
@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b"{", b'{"tenant_id": NaN}', b"\xff\xfe", b'"x"',
                                 b'{"tenant_id":"a","metric":"m","quantity":1,"tenant_id":"b"}',
                                 b'{"tenant_id":"a\\ud800","metric":"m","quantity":1}'])
def test_odd_bytes_get_the_reference_answer(raw: bytes) -> None:
    same(outcome(lambda r: decode_event_json(r, now=NOW), raw),
         outcome(lambda r: _reference(r, NOW, timedelta(days=35)), raw), given_id=False)


@pytest.mark.unit
def test_a_valid_event_decodes_exactly() -> None:
    raw = b'{"tenant_id":"acme","metric":"api_calls","quantity":0.1,"user_id":"u1","event_id":"e1",' \
          b'"timestamp":"2026-12-01T13:00:00+02:00","properties":{"region":"eu","n":1.50}}'
    event = decode_event_json(raw, now=NOW)
    assert event == UsageEvent("acme", "api_calls", Decimal("0.1"), "e1", datetime(2026, 12, 1, 11, tzinfo=timezone.utc),
                               "u1", {"region": "eu", "n": 1.5})


@pytest.mark.unit
def test_an_identifier_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError):
        check_id("tenant_id", "acme\n")
    with pytest.raises(ValidationError) as refused:
        decode_event_json(b'{"tenant_id":"acme\\n","metric":"m","quantity":1}', now=NOW)
    assert (refused.value.field, refused.value.code) == ("tenant_id", "invalid_id")


VALID_IDS = st.sampled_from(["acme", "t-1", "u.2:x@y", "x" * 128])


@pytest.mark.integration
@settings(max_examples=2000, deadline=None)
@given(st.fixed_dictionaries({"tenant_id": VALID_IDS, "metric": VALID_IDS, "quantity": quantities},
                             optional={"user_id": VALID_IDS, "event_id": ids, "timestamp": timestamps,
                                       "properties": properties}))
def test_the_fast_path_itself_agrees_with_the_reference(event: dict[str, Any]) -> None:
    """Mostly well-formed events, so most take the msgspec path rather than falling back."""
    raw = exact_json(event).encode()
    fast = outcome(lambda r: decode_event_json(r, now=NOW), raw)
    reference = outcome(lambda r: _reference(r, NOW, timedelta(days=35)), raw)
    same(fast, reference, given_id=isinstance(event.get("event_id"), str))


WELL_FORMED = st.fixed_dictionaries({"tenant_id": VALID_IDS, "metric": VALID_IDS, "quantity": quantities},
                                    optional={"user_id": VALID_IDS, "event_id": ids, "timestamp": timestamps,
                                              "properties": properties})


@pytest.mark.integration
@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(WELL_FORMED, WELL_FORMED, st.fixed_dictionaries({}, optional=FIELDS),
                          st.none(), st.integers(), st.text(max_size=2)), max_size=5))
def test_decoded_events_validate_together_as_each_would_alone(items: list[Any]) -> None:
    """parse_events (HTTP batch bodies, in-process dicts) against parse_event per item."""
    checked = parse_events(items, now=NOW)
    assert len(checked) == len(items)
    for item, result in zip(items, checked):
        alone = outcome(lambda data: parse_event(data, now=NOW), item)
        if isinstance(result, ValidationError):
            result = ("error", result.field, result.code, result.message)
        same(result, alone, given_id=isinstance(item, dict) and isinstance(item.get("event_id"), str))


@pytest.mark.integration
@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(WELL_FORMED, WELL_FORMED, WELL_FORMED, st.fixed_dictionaries({}, optional=FIELDS)),
                max_size=5), st.booleans())
def test_an_http_batch_body_decodes_in_one_pass_only_when_all_of_it_is_valid(items: list[Any], wrapped: bool) -> None:
    """decode_valid_events_json (HTTP batch bodies) gives parse_events' events, or None when any item is refused."""
    raw = exact_json({"events": items} if wrapped else items).encode()
    fast = decode_valid_events_json(raw, now=NOW)
    reference = parse_events(items, now=NOW)
    if any(isinstance(result, ValidationError) for result in reference):
        assert fast is None
        return
    if fast is None:  # allowed only where msgspec reads the JSON differently: a fractional epoch timestamp
        assert any(isinstance(item.get("timestamp"), (float, Decimal)) for item in items)
        return
    assert len(fast) == len(reference)
    for item, event, expected in zip(items, fast, reference):
        same(event, expected, given_id=isinstance(item.get("event_id"), str))


@pytest.mark.unit
@pytest.mark.parametrize("raw", [b'{"events":[],"extra":1}', b'{"events":{}}', b'{"tenant_id":"a"}', b"[1]", b"[",
                                 b'[{"tenant_id":"a\\ud800","metric":"m","quantity":1}]', b"\xff\xfe[]",
                                 b'[{"tenant_id":"a","metric":"m","quantity":"-1"}]'])
def test_an_http_batch_body_msgspec_cannot_take_is_left_to_the_reference(raw: bytes) -> None:
    assert decode_valid_events_json(raw, now=NOW) is None


@pytest.mark.unit
def test_an_http_batch_body_in_either_shape() -> None:
    events = [{"tenant_id": "acme", "metric": "api_calls", "quantity": 1.5, "event_id": "e1",
               "timestamp": "2026-12-01T11:00:00Z"}]
    expected = [UsageEvent("acme", "api_calls", Decimal("1.5"), "e1", datetime(2026, 12, 1, 11, tzinfo=timezone.utc))]
    assert decode_valid_events_json(exact_json({"events": events}).encode(), now=NOW) == expected
    assert decode_valid_events_json(exact_json(events).encode(), now=NOW) == expected


# -- the SDK's batch envelope ----------------------------------------------------------------------


@pytest.mark.integration
@settings(max_examples=500, deadline=None)
@given(st.lists(st.fixed_dictionaries({"tenant_id": VALID_IDS, "metric": VALID_IDS, "quantity": quantities},
                                      optional={"event_id": ids, "timestamp": timestamps}), max_size=6))
def test_each_event_of_a_batch_decodes_as_it_would_alone(events: list[dict[str, Any]]) -> None:
    encoded = [exact_json(event).encode() for event in events]
    decoded = decode_event_batch(encode_event_batch(encoded), now=NOW)
    assert len(decoded) == len(events)
    for index, (raw, item, event) in enumerate(zip(encoded, decoded, events)):
        alone = outcome(lambda r: decode_event_json(r, now=NOW), raw)
        if isinstance(item, RejectedEvent):
            assert (item.index, item.raw) == (index, raw)  # its own bytes, as sent
            item = ("error", item.error.field, item.error.code, item.error.message)
        same(item, alone, given_id=isinstance(event.get("event_id"), str))


@pytest.mark.unit
@pytest.mark.parametrize("raw, code", [
    (b'{"version":2,"events":[]}', "unsupported_version"),
    (b'{"events":[]}', "invalid_batch"),
    (b'[{"tenant_id":"a","metric":"m","quantity":1}]', "invalid_batch"),
    (b'{"version":1,"events":[{"tenant_id":"a","metric":"m","quantity":1}', "invalid_batch"),
    (b'{"version":1,"events":[],"extra":1}', "invalid_batch"),
    (b'{"version":1,"events":[' + b'{"tenant_id":"a","metric":"m","quantity":1},' * 30_000 + b"{}]}",
     "batch_too_large"),
])
def test_an_unreadable_envelope_is_refused_whole(raw: bytes, code: str) -> None:
    with pytest.raises(ValidationError) as refused:
        decode_event_batch(raw, now=NOW)
    assert refused.value.code == code


@pytest.mark.unit
def test_a_too_large_event_inside_a_batch_is_refused_alone() -> None:
    big = exact_json({"tenant_id": "a", "metric": "m", "quantity": 1, "user_id": "u" * 70_000}).encode()
    small = b'{"tenant_id":"a","metric":"m","quantity":2,"event_id":"e2"}'
    first, second = decode_event_batch(encode_event_batch([big, small]), now=NOW)
    assert isinstance(first, RejectedEvent) and first.error.code == "event_too_large"
    assert isinstance(second, UsageEvent) and second.quantity == 2
